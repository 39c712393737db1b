"""Gradient-masking sanity checks (Carlini et al. 2019; Athalye et al. 2018), each reported as
`{"passed": bool, ...the numbers behind it}`:

- `iterative_not_weaker_than_fgsm`: PGD and MI-FGSM accuracy <= FGSM accuracy (+ tol) at each eps;
- `fgsm_curve_not_rising`: FGSM run from scratch at each eps of the grid: accuracy does not rise
  with eps (+ tol); a rising single-step curve is a classic sign of gradient masking (the nested
  sweep, monotone by construction, cannot show it);
- `chance_at_large_eps`: PGD accuracy at a large eps (0.5: any image can reach mid-grey) <= chance (+ tol);
- `more_steps_not_weaker`: PGD-50 and PGD-10 with 5 restarts <= PGD-10 (+ tol), with independent
  random starts (shared ones would make the restarts check unable to fail);
- `gradient_free_not_stronger`: Square (gradient-free) accuracy >= the best white-box accuracy (- tol).
  Needs pyautoattack (a core dependency); without it the check reports `"passed": null` and why.

Tolerances come from `n`: two accuracies measured on n images differ by chance up to about the
95 % binomial half-width `1.96 sqrt(p (1 - p) / n)` (p: the larger of the two, at least 1/n), so a
check flags only a difference larger than that; each check records the `tol` it used. A fixed
`tol` can still be given.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from sgtlab.attacks import PGD, build_attack
from sgtlab.data.base import TensorData
from sgtlab.device import model_device
from sgtlab.data.budgets import budgets_for_shape
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.robustness import robustness_sweep
from sgtlab.stats import binomial_halfwidth


def default_eps(x: torch.Tensor) -> float:
    """The data's headline budget by image kind (sgtlab.data.budgets): 0.3 for small grey images, 8/255 else."""
    return budgets_for_shape(tuple(x.shape[1:])).headline_eps[-1]


def tolerance(n: int, *accuracies: float, conf: float = 0.95) -> float:
    """What n images can show: the binomial half-width at the larger accuracy (at least 1/n)."""
    p = min(max(max(accuracies, default=0.5), 1 / n), 1 - 1 / n) if n > 1 else 0.5
    return binomial_halfwidth(n, p, conf)


def gradient_masking_checks(model: nn.Module, data: TensorData | tuple[torch.Tensor, torch.Tensor], *,
                            eps: float | None = None, eps_large: float = 0.5, n: int | None = 500,
                            tol: float | None = None, square_queries: int = 1000, batch_size: int | None = None,
                            grid: list[float] | None = None, progress: bool = False,
                            seed: int = 0, outcomes: dict[str, torch.Tensor] | None = None,
                            timings: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """The checks on the first `n` images of `data` (give a seeded class-stratified subset, e.g.
    `sgtlab.data.subsets.stratified_subset`); `tol=None`: tolerances from n (see the module doc);
    `grid`: the eps grid of the FGSM-curve check (default: the data's standard grid). `outcomes`: a
    dict to fill with each attack's robust outcome per image at `eps` (`{"pgd-50": bool tensor, ...}`);
    `timings`: a dict to fill with each check's seconds (the attacks it ran; `chance_at_large_eps`
    reads the first check's sweep, 0 s).
    The checks judge the evaluation; they are not part of a headline (that is the same suite on
    every image: `sgtlab.evaluate.headline_suite`)."""
    from sgtlab.data.inputs import as_data

    data = as_data(data)  # (x, y), TensorDataset, DataLoader or TensorData; checked
    x, y = data.x, data.y
    x, y = (x, y) if n is None else (x[:n], y[:n])
    eps = default_eps(x) if eps is None else float(eps)
    if not 0 < eps < eps_large:
        raise SgtlabError(f"the checks need 0 < eps < eps_large, got eps={eps}, eps_large={eps_large}")
    m = len(x)

    def tl(*acc: float) -> float:
        return float(tol) if tol is not None else tolerance(m, *acc)

    kw = dict(batch_size=batch_size, progress=progress)
    clock = {"iterative_not_weaker_than_fgsm": time.perf_counter()}
    base = robustness_sweep(model, (x, y), ["fgsm", "pgd", "mifgsm"], [eps, eps_large], seed=seed, **kw)
    clock["fgsm_curve_not_rising"] = time.perf_counter()
    acc = base.robust_accuracy
    grid = sorted(set([float(e) for e in (grid or budgets_for_shape(tuple(x.shape[1:])).eps_grid)]))
    fgsm_curve = robustness_sweep(model, (x, y), ["fgsm"], grid, seed=seed, from_scratch=True,
                                  **kw).robust_accuracy["fgsm"]
    clock["more_steps_not_weaker"] = time.perf_counter()
    strong_run = robustness_sweep(model, (x, y), {"pgd-50": PGD(steps=50), "pgd-10x5": PGD(restarts=5)}, [eps],
                                  seed=seed + 1000, **kw)
    clock["gradient_free_not_stronger"] = time.perf_counter()
    strong = strong_run.robust_accuracy
    per_image = {a: base.robust(a, eps) for a in ("fgsm", "pgd", "mifgsm")}
    per_image.update({a: strong_run.robust(a, eps) for a in ("pgd-50", "pgd-10x5")})
    with torch.no_grad():
        classes = model(x[:1].to(model_device(model))).shape[1]
    chance = 1.0 / classes
    checks: dict[str, dict[str, Any]] = {}

    t_it = max(tl(acc[a][e], acc["fgsm"][e]) for a in ("pgd", "mifgsm") for e in (eps, eps_large))
    checks["iterative_not_weaker_than_fgsm"] = {
        "passed": all(acc[a][e] <= acc["fgsm"][e] + tl(acc[a][e], acc["fgsm"][e])
                      for a in ("pgd", "mifgsm") for e in (eps, eps_large)),
        **{f"{a}@{e:g}": acc[a][e] for a in ("fgsm", "pgd", "mifgsm") for e in (eps, eps_large)}, "tol": t_it}
    es = list(fgsm_curve)
    rises = [(es[i], es[j], fgsm_curve[es[j]] - fgsm_curve[es[i]]) for i in range(len(es)) for j in range(i + 1, len(es))
             if fgsm_curve[es[j]] > fgsm_curve[es[i]] + tl(fgsm_curve[es[i]], fgsm_curve[es[j]])]
    worst = max(rises, key=lambda r: r[2], default=None)
    checks["fgsm_curve_not_rising"] = {
        "passed": worst is None, **{f"fgsm@{e:g}": v for e, v in fgsm_curve.items()},
        "tol": max(tl(fgsm_curve[a], fgsm_curve[b]) for a in es for b in es) if len(es) > 1 else tl(),
        **({"rise": f"+{100 * worst[2]:.1f} pp from eps {worst[0]:g} to {worst[1]:g}"} if worst else {})}
    t_ch = tl(acc["pgd"][eps_large], chance)
    checks["chance_at_large_eps"] = {"passed": acc["pgd"][eps_large] <= chance + t_ch, "eps": eps_large,
                                     "pgd_accuracy": acc["pgd"][eps_large], "chance": chance, "tol": t_ch}
    pgd10 = acc["pgd"][eps]
    more = max(strong["pgd-50"][eps], strong["pgd-10x5"][eps])
    checks["more_steps_not_weaker"] = {
        "passed": more <= pgd10 + tl(more, pgd10), "eps": eps,
        "pgd-10": pgd10, "pgd-50": strong["pgd-50"][eps], "pgd-10x5": strong["pgd-10x5"][eps], "tol": tl(more, pgd10)}
    white = min(pgd10, acc["mifgsm"][eps], acc["fgsm"][eps], strong["pgd-50"][eps], strong["pgd-10x5"][eps])
    try:
        square = build_attack("square", queries=square_queries, seed=seed)
        square_run = robustness_sweep(model, (x, y), {"square": square}, [eps], seed=seed, **kw)
        square_acc = square_run.robust_accuracy["square"][eps]
        per_image["square"] = square_run.robust("square", eps)
        t_sq = tl(square_acc, white)
        checks["gradient_free_not_stronger"] = {"passed": square_acc >= white - t_sq, "eps": eps,
                                                "square": square_acc, "best_white_box": white,
                                                "queries": square_queries, "tol": t_sq}
    except SgtlabError as e:
        if "pyautoattack" not in str(e):
            raise
        checks["gradient_free_not_stronger"] = {"passed": None, "skipped": str(e), "eps": eps,
                                                "best_white_box": white}
    if outcomes is not None:
        outcomes.update(per_image)
    if timings is not None:
        names, ends = list(clock), list(clock.values())[1:] + [time.perf_counter()]
        timings.update({n: round(e - clock[n], 3) for n, e in zip(names, ends)}, chance_at_large_eps=0.0)
    for c in checks.values():
        c["n"] = m
        if "tol" in c:
            c["tol_from"] = "fixed" if tol is not None else f"95 % binomial half-width, n = {m}"
    return checks
