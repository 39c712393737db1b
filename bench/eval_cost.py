"""What a user pays for evaluation: one training epoch of ST on full MNIST against the robustness
evaluation the first-answer preset `dispute-mnist` runs on the same model.

Training: the preset's ST run (seed 0, its batch size, lr, schedule and `eval_subset`) for one
epoch on the full MNIST training set, timed end to end (`fit`: the epoch and its test pass).
Evaluation: the preset's robustness stage (`sgtlab.experiments.stages.robustness_stage`) with its
`attack` section as the runner resolves it: the sweep (its attacks, eps grid, `n` images, steps),
the headline suite at its headline budgets and the gradient-masking checks. Each phase is timed,
and inside it every attack's `perturb` (outermost calls only; `other` is the clean pass, the
verdict forwards and the bookkeeping; batches run side by side in threads count once, as wall
time), so the split says where the time goes; the suite's image
counts (how many images each member ran on) come from its `robustness.json`.

One thread pair (2 threads), as the other benches. Needs the MNIST files ($SGTLAB_DATA or
../shared/data). Last line: `eval_over_epoch: X` (evaluation seconds / training-epoch seconds).

    python bench/eval_cost.py [--preset dispute-mnist] [--n N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

from sgtlab.attacks import ATTACKS
from sgtlab.attacks.base import Attack
from sgtlab.device import keep_freed_memory
from sgtlab.experiments.presets import expand, load_preset
from sgtlab.experiments.stages import robustness_stage
from sgtlab.train import TrainConfig, fit
from sgtlab.train.checkpoint import load_model


def data_dir() -> str:
    for cand in (os.environ.get("SGTLAB_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand and (Path(cand) / "mnist" / "train-images-idx3-ubyte.gz").exists():
            return str(cand)
    sys.exit("eval_cost needs the MNIST files: set SGTLAB_DATA")


def attack_classes() -> list[type]:
    """Every attack class with its own `perturb` (registered ones and their bases)."""
    seen, todo = [], [ATTACKS.get(n) for n in ATTACKS.names()]
    while todo:
        c = todo.pop()
        if isinstance(c, type) and issubclass(c, Attack) and c is not Attack and c not in seen:
            seen.append(c)
            todo.extend(c.__mro__[1:])
    return [c for c in seen if "perturb" in c.__dict__]


def covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) intervals."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


@contextlib.contextmanager
def timed_perturb(split: dict[tuple[str, str], float]):
    """Add the seconds during which some thread was in an outermost `perturb` call of an attack to
    `split[(phase, attack.name)]` (the union of the calls' intervals: batches that run side by side
    in worker threads, `sgtlab.fast.batch_threads`, count once, as wall time); the phase is `sweep`
    until the stage calls the headline suite (`suite`) or the checks (`checks`), which it imports
    from their modules at call time (bench-only patching, undone on exit)."""
    import sgtlab.evaluate.headline_suite as hs
    import sgtlab.evaluate.masking_checks as mc

    local, phase = threading.local(), ["sweep"]  # nesting depth per thread
    intervals: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    originals = {c: c.__dict__["perturb"] for c in attack_classes()}

    def wrap(fn):
        def perturb(self, *a, **kw):
            if getattr(local, "depth", 0):
                return fn(self, *a, **kw)
            local.depth = 1
            t = time.perf_counter()
            try:
                return fn(self, *a, **kw)
            finally:
                local.depth = 0
                intervals[(phase[0], self.name)].append((t, time.perf_counter()))  # append: atomic
        return perturb

    def in_phase(name, fn):
        def run(*a, **kw):
            phase[0] = name
            return fn(*a, **kw)
        return run

    stage_fns = {(hs, "headline_suite"): hs.headline_suite, (mc, "gradient_masking_checks"): mc.gradient_masking_checks}
    for c, fn in originals.items():
        c.perturb = wrap(fn)
    hs.headline_suite = in_phase("suite", stage_fns[(hs, "headline_suite")])
    mc.gradient_masking_checks = in_phase("checks", stage_fns[(mc, "gradient_masking_checks")])
    try:
        yield
    finally:
        for key, spans in intervals.items():
            split[key] += covered(spans)
        for c, fn in originals.items():
            c.perturb = fn
        for (mod, name), fn in stage_fns.items():
            setattr(mod, name, fn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dispute-mnist")
    ap.add_argument("--n", type=int, default=None, help="images of the evaluation (default: the preset's)")
    args = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ddir = data_dir()
    spec = next(r for r in expand(load_preset(args.preset)) if r.train["method"] == "st" and r.seed == 0)
    cfg = TrainConfig.from_dict({**spec.train, "epochs": 1, "device": "cpu", "data_dir": ddir})
    attack = dict(spec.attack)
    if args.n:
        attack["n"] = args.n
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        metrics = fit(cfg, Path(tmp) / "run", progress=False)
        t_epoch = time.perf_counter() - t
        model, _ = load_model(Path(tmp) / "run")
        model.eval()
        print(f"preset {args.preset}: ST, {cfg.model}, 1 epoch on full MNIST in {t_epoch:.1f} s "
              f"(test accuracy {100 * (metrics.get('test_accuracy') or float('nan')):.2f} %)", flush=True)
        print(f"evaluation: attacks {attack.get('attacks')}, eps {attack.get('eps')}, n {attack.get('n')}, "
              f"steps {attack.get('steps', 10)}, suite {attack.get('suite')} at {attack.get('headline_eps')}, "
              f"checks {attack.get('checks')}", flush=True)
        times: dict[str, float] = {}
        split: dict[tuple[str, str], float] = defaultdict(float)
        folder = Path(tmp) / "eval"
        folder.mkdir()
        with timed_perturb(split):
            robustness_stage(model, cfg, attack, folder, progress=False, times=times)
        stored = json.loads((folder / "robustness.json").read_text())
    t_eval = sum(times[k] for k in ("attack", "suite", "checks"))
    for phase, key in (("sweep", "attack"), ("suite", "suite"), ("checks", "checks")):
        parts = {a: v for (p, a), v in split.items() if p == phase}
        rest = times[key] - sum(parts.values())  # clean pass, verdict forwards, bookkeeping
        print(f"{phase:7} {times[key]:7.1f} s: " + ", ".join(f"{a} {v:.1f}" for a, v in
                                                            sorted(parts.items(), key=lambda kv: -kv[1]))
              + f", other {rest:.1f}")
    ran = stored.get("suite", {}).get("images", {})
    if ran:
        print("suite images per budget: " + "; ".join(f"eps {e}: " + ", ".join(f"{k} {v}" for k, v in d.items())
                                                        for e, d in ran.items()))
    if "images_attacked" in stored:  # per attack and eps (recorded by the sweep since issue 29)
        print("sweep images attacked: " + json.dumps(stored["images_attacked"]))
    acc = stored.get("robust_accuracy", {}).get("ensemble", {})
    print(f"clean {100 * stored['clean_accuracy']:.1f} %; ensemble " + ", ".join(f"{e}: {100 * v:.1f} %"
                                                                            for e, v in acc.items()))
    print(f"train_epoch_s: {t_epoch:.1f}")
    print(f"eval_s: {t_eval:.1f}")
    print(f"eval_over_epoch: {t_eval / t_epoch:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
