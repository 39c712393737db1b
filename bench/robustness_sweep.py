"""Benchmark: our robustness sweep against the naive way, on one trained model and 1000 test images.

Naive: each torchattacks attack (FGSM, PGD-10, MI-FGSM-10) from scratch on all images at each of 8
eps values, in batches of the size ours uses, then a forward pass for the accuracy. Ours: `robustness_sweep` (only samples still robust
at the smaller eps are attacked at the larger one, per-sample early stopping, one clean gradient for
FGSM and the first MI-FGSM step). PGD's random start for the j-th eps is `torch.manual_seed(SEED + j)`
in both, so the per-sample starts coincide. Ours counts a sample robust at eps only if no attack at a
budget <= eps fooled it (an example inside a smaller ball lies inside every larger one); the naive
numbers are put the same way from its per-sample results before the comparison (FGSM is not monotone
in eps: from scratch it misses at 0.4 some images it fools at 0.3), and both are printed. Checks that
the robust accuracies agree within 1 percentage point, ours never higher; prints `sweep_speedup: X`
(naive time / ours, the median of `--rounds` rounds) last. In each round our time is the mean of
one run before and one after the naive run, so load drift on a shared machine biases neither side.
It also counts both sides' input-gradient evaluations: their ratio is what skipping work can give.

    python bench/robustness_sweep.py [--rounds 3]   # needs torchattacks==3.5.1
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
import torchattacks

import sgtlab.attacks.base as attack_base

from sgtlab.data import load_dataset
from sgtlab.device import eval_batch_size, keep_freed_memory
from sgtlab.evaluate.robustness import robustness_sweep
from sgtlab.train import TrainConfig, fit
from sgtlab.train.checkpoint import load_model

EPS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
N, STEPS, SEED = 1000, 10, 0


def data_dir() -> str | None:
    for cand in (os.environ.get("SGTLAB_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand and (Path(cand) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return str(cand)
    return None


def trained_model(tmp: Path):
    ddir = data_dir()
    if ddir:  # a short ST run on original MNIST
        cfg = TrainConfig(dataset="mnist", method="st", epochs=1, batch_size=64, lr=0.05, seed=0, device="cpu",
                          train_subset=20000, eval_subset=1000, data_dir=ddir)
    else:
        cfg = TrainConfig(dataset="mnist5k", method="st", epochs=3, batch_size=64, lr=0.05, seed=0, device="cpu")
    fit(cfg, tmp / "run", progress=False)
    model, _ = load_model(tmp / "run")
    return model, load_dataset(cfg.dataset, "test", ddir).subset(N)


def naive(model, x, y, batch: int) -> dict[str, dict[float, torch.Tensor]]:
    """Per attack and eps, which samples stay correctly classified (each attack from scratch). One
    seed per eps before the batches: CPU random numbers are drawn serially, so the batches' random
    starts are the rows of one draw for the whole set, as in the sweep."""
    out = {"fgsm": {}, "pgd": {}, "mifgsm": {}}
    for j, e in enumerate(EPS):
        attacks = {"fgsm": torchattacks.FGSM(model, eps=e),
                   "pgd": torchattacks.PGD(model, eps=e, alpha=2.5 * e / STEPS, steps=STEPS, random_start=True),
                   "mifgsm": torchattacks.MIFGSM(model, eps=e, alpha=e / STEPS, steps=STEPS, decay=1.0)}
        for name, atk in attacks.items():
            torch.manual_seed(SEED + j)
            ok = []
            for i in range(0, len(x), batch):
                adv = atk(x[i:i + batch], y[i:i + batch])
                with torch.no_grad():
                    ok.append(model(adv).argmax(1) == y[i:i + batch])
            out[name][e] = torch.cat(ok)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="naive runs, each timed against the ours runs beside it")
    rounds = ap.parse_args().rounds
    if rounds < 1:
        ap.error("--rounds must be >= 1")
    keep_freed_memory()  # as the sgtlab command does: both sides run with it
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        model, data = trained_model(Path(tmp))
    x, y = data.x, data.y
    print(f"model: ST sgt-cnn on {data.name}; {len(x)} test images; eps {EPS}", flush=True)

    batch = eval_batch_size(None, x.device)

    grads = []  # images per input-gradient evaluation of ours (a counter on the attacks' one gradient function)
    real_ce_grad = attack_base.ce_grad

    def counting_ce_grad(m, xb, *a, **k):
        grads.append(len(xb))
        return real_ce_grad(m, xb, *a, **k)

    def ours():
        attack_base.ce_grad = counting_ce_grad
        grads.clear()
        t = time.perf_counter()
        try:
            r = robustness_sweep(model, data, ["fgsm", "pgd", "mifgsm"], EPS, batch_size=batch, progress=False,
                                 seed=SEED)
        finally:
            attack_base.ce_grad = real_ce_grad
        return r, time.perf_counter() - t

    # rounds: ours, naive, ours, naive, ..., ours; round i is naive_i against the mean of the ours
    # runs on either side of it, so load drift biases neither side; the median round is printed
    res, t_prev = ours()
    speedups, ok = [], True
    for i in range(rounds):
        t = time.perf_counter()
        ref = naive(model, x, y, batch)
        t_naive = time.perf_counter() - t
        res2, t_next = ours()
        ok &= res.robust_accuracy == res2.robust_accuracy  # the sweep is deterministic
        speedups.append(t_naive / ((t_prev + t_next) / 2))
        print(f"round {i + 1}: naive {t_naive:.1f} s; ours {t_prev:.1f} s and {t_next:.1f} s; "
              f"speedup {speedups[-1]:.2f}", flush=True)
        t_prev = t_next
    print(f"{'attack':8} {'eps':>5} {'naive %':>8} {'nested %':>9} {'ours %':>8}   (nested: the naive run, "
          f"robust only if robust at every eps <= this one)")
    for a in ref:
        robust = torch.ones_like(y, dtype=torch.bool)
        for e in EPS:
            robust &= ref[a][e]
            raw, n_acc, o_acc = ref[a][e].float().mean().item(), robust.float().mean().item(), res.robust_accuracy[a][e]
            good = n_acc - 0.01 <= o_acc <= n_acc + 1e-9
            ok &= good
            print(f"{a:8} {e:5.2f} {100 * raw:8.1f} {100 * n_acc:9.1f} {100 * o_acc:8.1f}{'' if good else '  <- disagrees'}")
    print(f"clean accuracy {100 * res.clean_accuracy:.1f} %; batches of {batch}")
    # the work each side does, in input-gradient evaluations of one image: naive runs FGSM (1), PGD
    # and MI-FGSM (STEPS each) on every image at every eps; ours skips only work whose outcome is
    # known. Its time ratio can exceed this ratio only by a cheaper evaluation, not by skipping more
    n_naive, n_ours = len(EPS) * len(x) * (1 + 2 * STEPS), sum(grads) + len(x)  # + the shared clean gradient
    print(f"input-gradient evaluations (images): naive {n_naive}, ours {n_ours}; work ratio {n_naive / n_ours:.2f}")
    print(f"agreement within 1 pp, ours never higher: {'yes' if ok else 'NO'}")
    print(f"sweep_speedup: {statistics.median(speedups):.2f}  (median of {rounds} round(s): "
          f"{', '.join(f'{v:.2f}' for v in speedups)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
