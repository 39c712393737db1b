"""The training loop's overhead: `sgtlab.train.fit` (ST, sgt-cnn, batch 128, SGD) against a bare
hand-written PyTorch loop on the same model, data, batch size and optimizer, measured in one run.

Both sides do the same work: read the data set (the same reader), build the model from the same
seed, train `--epochs` epochs over shuffled batches (forward, cross-entropy, zero_grad, backward,
step) and, after every epoch, compute the test accuracy (no gradient, eval mode, batches of 1000),
as the PyTorch MNIST example does. What `fit` adds on top (the batch loader with dataset indices,
progress bar, per-epoch loss means, finiteness checks, the metrics file and a checkpoint each
epoch) is the overhead. The two sides alternate, round by round, so a load change on the machine
hits both alike; the ratio is the median of the per-round ratios.
Original MNIST when its files are found ($SGTLAB_DATA or ../shared/data), else MNIST-5k.
Last line: `st_overhead: X` (target X <= 1.05).

    python bench/train_throughput.py [--n 20000] [--epochs 1] [--rounds 3] [--eval-n 10000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sgtlab.data import dataset_info, load_dataset
from sgtlab.device import keep_freed_memory
from sgtlab.models import build_model
from sgtlab.train import TrainConfig, fit


def data_source() -> tuple[str, str | None]:
    for cand in (os.environ.get("SGTLAB_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand and (Path(cand) / "mnist" / "train-images-idx3-ubyte.gz").exists():
            return "mnist", str(cand)
    return "mnist5k", None


def bare_loop(name: str, data_dir: str | None, args) -> float:
    """The hand-written loop; returns its last test accuracy."""
    train = load_dataset(name, "train", data_dir).subset(args.n)
    test = load_dataset(name, "test", data_dir).subset(args.eval_n)
    info = dataset_info(name)
    torch.manual_seed(0)
    model = build_model("sgt-cnn", info.shape[0], info.num_classes, info.mean, info.std)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    acc = 0.0
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(train.x), generator=g)
        for b in range(0, len(order), args.batch_size):
            idx = order[b:b + args.batch_size]
            loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(test.x[i:i + 1000]).argmax(1) for i in range(0, len(test.x), 1000)])
        acc = (pred == test.y).float().mean().item()
    return acc


def sgtlab_loop(name: str, data_dir: str | None, args) -> float:
    cfg = TrainConfig(dataset=name, model="sgt-cnn", method="st", epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, optimizer="sgd", momentum=0.9, seed=0, train_subset=args.n,
                      eval_subset=args.eval_n, device="cpu" if args.device == "cpu" else args.device,
                      data_dir=data_dir)
    with tempfile.TemporaryDirectory() as out:
        return fit(cfg, out, progress=args.progress)["test_accuracy"]


def main() -> None:
    keep_freed_memory()  # as the sgtlab command does: both sides run with it
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="training images per epoch (all: 60000)")
    ap.add_argument("--eval-n", type=int, default=None, help="test images evaluated per epoch (default: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="alternating (sgtlab, bare) pairs")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--device", default="cpu", choices=("cpu",), help="the bare loop is written for the CPU")
    ap.add_argument("--no-progress", dest="progress", action="store_false",
                    help="fit without its progress bar (default: with, as the command line runs it)")
    args = ap.parse_args()
    name, data_dir = data_source()
    print(f"data {name} ({args.n} train images, {args.eval_n or 'all'} test), sgt-cnn, ST, batch {args.batch_size}, "
          f"{args.epochs} epoch(s), {torch.get_num_threads()} threads, {args.rounds} rounds", flush=True)
    ratios = []
    for r in range(args.rounds):
        times = {}
        for side in (("sgtlab", "bare") if r % 2 == 0 else ("bare", "sgtlab")):
            t0 = time.perf_counter()
            acc = (sgtlab_loop if side == "sgtlab" else bare_loop)(name, data_dir, args)
            times[side] = time.perf_counter() - t0
            print(f"round {r + 1} {side:6s} {times[side]:7.2f} s  test accuracy {acc:.4f}", flush=True)
        ratios.append(times["sgtlab"] / times["bare"])
    print(f"per-round ratios: {', '.join(f'{x:.3f}' for x in ratios)}", file=sys.stdout)
    print(f"st_overhead: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
