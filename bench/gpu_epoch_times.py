"""Epoch time of `sgtlab train` with ResNet-18 on CIFAR-10-sized synthetic data (50000 images
3x32x32, batch 256, the paper-cifar10 settings) for ST, SGT and ASGT, in float32 and with
`--amp bf16`, and the SGT-step over ST-step ratio, all measured in one run. Meant for a GPU;
`--tiny` runs a few steps on the CPU to check that the script works.

Each (method, precision) trains 2 epochs through the real training loop (`sgtlab.train.fit`,
data loader, optimizer, per-epoch evaluation on `--eval-n` images and checkpoint); the first
epoch warms up (CUDA context, cuDNN kernel choice, allocator), the second is reported. Every
method runs the same number of steps, so the ratio of epoch times is the ratio of step times
(plus the small, equal evaluation time).

    python bench/gpu_epoch_times.py                       # on the GPU: none and bf16
    python bench/gpu_epoch_times.py --tiny --device cpu   # a check on the CPU (seconds)
    python bench/gpu_epoch_times.py --methods st,sgt --amp bf16 --json times.json
    python bench/gpu_epoch_times.py --graphs off,on       # also with --cuda-graphs: `st_graphs_speedup`
Last lines: `sgt_over_st[none]: X` and, on CUDA, `sgt_over_st[bf16]: Y`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from sgtlab.data import DATASETS, DatasetInfo, TensorData
from sgtlab.device import resolve_device
from sgtlab.train import MethodConfig, TrainConfig, fit

DATA = "bench-synthetic-cifar10"
SIZE = {"n": 50_000, "n_test": 1000, "side": 32}  # set from the command line before the loader is called


def _synthetic(split: str, data_dir=None, download=True) -> TensorData:
    """Uniform random 3x32x32 images and labels: the timing does not depend on the pixels."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n, side = (SIZE["n"] if split == "train" else SIZE["n_test"]), SIZE["side"]
    return TensorData(torch.rand(n, 3, side, side, generator=g), torch.randint(0, 10, (n,), generator=g), DATA)


if DATA not in DATASETS:
    DATASETS.register(DATA)(DatasetInfo(DATA, _synthetic, (3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                                        "resnet18-cifar", "synthetic CIFAR-10-sized data (benchmark only)"))


def time_epoch(method: str, amp: str, args, device: torch.device, graphs: bool = False) -> dict:
    # the paper-cifar10 preset's method settings: k 0.1, eps 0.0314 (8/255), 10 PGD steps
    mcfg = MethodConfig(k=args.k, train_eps=args.train_eps, train_steps=args.train_steps)
    cfg = TrainConfig(dataset=DATA, model="resnet18-cifar", method=method, epochs=2, batch_size=args.batch_size,
                      lr=0.01, optimizer="sgd", seed=0, eval_subset=args.eval_n, device=device.type, amp=amp,
                      channels_last=args.channels_last, cuda_graphs=graphs, method_cfg=mcfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        fit(cfg, out, progress=False)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steps = -(-args.n // args.batch_size)
    sec = rows[-1]["seconds"]
    res = {"method": method, "amp": amp, "graphs": graphs, "epoch_seconds": sec, "ms_per_step": 1e3 * sec / steps,
           "first_epoch_seconds": rows[0]["seconds"]}
    if device.type == "cuda":
        res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--n", type=int, default=50_000, help="training images per epoch (CIFAR-10: 50000)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-n", type=int, default=1000, help="test images evaluated after each epoch")
    ap.add_argument("--methods", default="st,sgt,asgt")
    ap.add_argument("--amp", default=None, help="precisions, e.g. none,bf16 (default: both on CUDA, none on CPU)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="channels_last memory format (default: on for CUDA)")
    ap.add_argument("--graphs", default="off", help="off, on or off,on: training with --cuda-graphs (CUDA only)")
    ap.add_argument("--k", type=float, default=0.1)
    ap.add_argument("--train-eps", type=float, default=0.0314)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--side", type=int, default=32, help="image side in pixels (CIFAR-10: 32)")
    ap.add_argument("--tiny", action="store_true",
                    help="8 images of 16x16, batch 8, 1 PGD step: checks the script on a CPU in about a minute")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.tiny:
        args.n, args.batch_size, args.eval_n, args.train_steps, args.side = 8, 8, 8, 1, 16
    device = resolve_device(args.device)
    amps = (args.amp or ("none,bf16" if device.type == "cuda" else "none")).split(",")
    if args.channels_last is None:
        args.channels_last = device.type == "cuda"
    SIZE.update(n=args.n, n_test=args.eval_n, side=args.side)
    methods = [m for m in args.methods.split(",") if m]
    if "st" not in methods:
        methods.insert(0, "st")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"ResNet-18, {args.n} synthetic 3x{args.side}x{args.side} images, batch {args.batch_size}, {name}, "
          f"channels_last {args.channels_last}, k {args.k}, PGD {args.train_steps} steps; torch {torch.__version__}")
    graph_modes = [{"off": False, "on": True}[g] for g in args.graphs.split(",")]
    results = []
    for graphs in graph_modes:
        for amp in amps:
            for m in methods:
                r = time_epoch(m, amp, args, device, graphs)
                results.append(r)
                mem = f"  peak {r['peak_gib']:.1f} GiB" if "peak_gib" in r else ""
                print(f"{m:6s} amp {amp:4s} graphs {'on ' if graphs else 'off'} epoch {r['epoch_seconds']:8.2f} s  "
                      f"{r['ms_per_step']:8.1f} ms/step  (first epoch {r['first_epoch_seconds']:.2f} s){mem}", flush=True)
    if len(graph_modes) == 2:
        on = {(r["method"], r["amp"]): r["epoch_seconds"] for r in results if r["graphs"]}
        for (m, amp), sec in on.items():
            off = next(r["epoch_seconds"] for r in results if not r["graphs"] and (r["method"], r["amp"]) == (m, amp))
            print(f"{m}_graphs_speedup[{amp}]: {off / sec:.3f}")
    by = {(r["method"], r["amp"]): r["epoch_seconds"] for r in results if r["graphs"] == graph_modes[0]}
    if "none" in amps and "bf16" in amps:
        for m in methods:
            print(f"{m}_bf16_speedup: {by[(m, 'none')] / by[(m, 'bf16')]:.3f}")
    for amp in amps:
        for m in methods:
            if m != "st":
                print(f"{m}_over_st[{amp}]: {by[(m, amp)] / by[('st', amp)]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
