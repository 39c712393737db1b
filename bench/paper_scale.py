"""The papers' setups on the device at hand: images per second of every method of `paper-mnist`
and `paper-cifar10` (training steps, and the evaluation stages per test image), and the projected
end-to-end minutes of each preset, from the same measured estimate as `sgtlab reproduce --estimate`
(real training steps of every method; the real robustness sweep, gradient-masking checks and
saliency metrics on two small test slices, extrapolated). Data files that are absent (CIFAR-10
here) are replaced by random images of the right shape and number: the timing does not depend on
the pixels, but the evaluation's early stopping does, so treat those figures as rough.

    python bench/paper_scale.py [--device auto] [--presets paper-mnist,paper-cifar10] [--workers auto]
Last line: `paper_mnist_minutes: X`.
"""
from __future__ import annotations

import argparse
import time

import torch

from sgtlab.device import keep_freed_memory, resolve_device
from sgtlab.experiments.estimate import estimate_experiment, format_estimate
from sgtlab.experiments.executors import default_workers, gpu_slots
from sgtlab.experiments.presets import expand, load_preset


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--presets", default="paper-mnist,paper-cifar10")
    ap.add_argument("--workers", default="auto", help="runs at once, as `sgtlab reproduce --workers` (default: auto)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    minutes = {}
    for preset in [p for p in args.presets.split(",") if p]:
        cfg = load_preset(preset)
        cfg.setdefault("train", {})["device"] = device.type
        specs = expand(cfg)
        gpus = gpu_slots(args.workers, [s.train for s in specs]) if device.type == "cuda" else None
        workers = len(gpus) if gpus else (default_workers("cpu") if args.workers == "auto" else int(args.workers))
        t0 = time.perf_counter()
        est = estimate_experiment(cfg, workers=workers, device=device.type, slots=workers)
        print(f"\n== {preset} ({len(specs)} runs; measured in {time.perf_counter() - t0:.0f} s)")
        bs = cfg["train"].get("batch_size", 128)
        seen = set()
        for s, r in zip(specs, est.runs):
            if s.label in seen:
                continue
            seen.add(s.label)
            n_eval = (s.attack.get("n") or 10000)
            print(f"{s.label:14s} train {bs / (r.step_ms / 1e3):8.0f} img/s   evaluation "
                  f"{n_eval / max(r.eval_s, 1e-9):7.1f} test img/s (all stages)   run {r.total_s / 60:7.1f} min")
        print(format_estimate(est).splitlines()[-1 - len(est.notes) - bool(est.data_note)])
        for n in ([est.data_note] if est.data_note else []) + est.notes:
            print(f"note: {n}")
        minutes[preset] = est.makespan_s / 60
        print(f"{preset.replace('-', '_')}_minutes: {minutes[preset]:.0f}", flush=True)
    if "paper-mnist" in minutes:
        print(f"paper_mnist_minutes: {minutes['paper-mnist']:.0f}")


if __name__ == "__main__":
    main()
