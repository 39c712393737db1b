"""Gradient-masking sanity checks (Carlini et al. 2019; Athalye et al. 2018), each reported as
`{"passed": bool, ...the numbers behind it}`:

- `iterative_not_weaker_than_fgsm`: PGD and MI-FGSM accuracy <= FGSM accuracy (+ tol) at each eps;
- `chance_at_large_eps`: PGD accuracy at a large eps (0.5: any image can reach mid-grey) <= chance;
- `more_steps_not_weaker`: PGD-50 and PGD-10 with 5 restarts <= PGD-10 (+ tol), with independent
  random starts (shared ones would make the restarts check unable to fail);
- `gradient_free_not_stronger`: Square (gradient-free) accuracy >= the best white-box accuracy (- tol).
  Needs pyautoattack; without it the check reports `"passed": null` and why it was skipped.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sgtlab.attacks import PGD, build_attack
from sgtlab.data.base import TensorData
from sgtlab.device import model_device
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.robustness import robustness_sweep


def default_eps(x: torch.Tensor) -> float:
    """Open detail: the usual budgets, 0.3 for 1-channel (MNIST-like) images, 8/255 for colour."""
    return 0.3 if x.shape[1] == 1 else 8 / 255


def gradient_masking_checks(model: nn.Module, data: TensorData | tuple[torch.Tensor, torch.Tensor], *,
                            eps: float | None = None, eps_large: float = 0.5, n: int | None = 500,
                            tol: float = 0.01, square_queries: int = 1000, batch_size: int | None = None,
                            progress: bool = False, seed: int = 0) -> dict[str, dict[str, Any]]:
    from sgtlab.data.inputs import as_data

    data = as_data(data)
    x, y = data.x, data.y
    x, y = (x, y) if n is None else (x[:n], y[:n])
    eps = default_eps(x) if eps is None else float(eps)
    if not 0 < eps < eps_large:
        raise SgtlabError(f"the checks need 0 < eps < eps_large, got eps={eps}, eps_large={eps_large}")
    kw = dict(batch_size=batch_size, progress=progress)
    base = robustness_sweep(model, (x, y), ["fgsm", "pgd", "mifgsm"], [eps, eps_large], seed=seed, **kw)
    acc = base.robust_accuracy
    strong = robustness_sweep(model, (x, y), {"pgd-50": PGD(steps=50), "pgd-10x5": PGD(restarts=5)}, [eps],
                              seed=seed + 1000, **kw).robust_accuracy
    with torch.no_grad():
        classes = model(x[:1].to(model_device(model))).shape[1]
    chance = 1.0 / classes
    checks: dict[str, dict[str, Any]] = {}

    checks["iterative_not_weaker_than_fgsm"] = {
        "passed": all(acc[a][e] <= acc["fgsm"][e] + tol for a in ("pgd", "mifgsm") for e in (eps, eps_large)),
        **{f"{a}@{e:g}": acc[a][e] for a in ("fgsm", "pgd", "mifgsm") for e in (eps, eps_large)}, "tol": tol}
    checks["chance_at_large_eps"] = {"passed": acc["pgd"][eps_large] <= chance, "eps": eps_large,
                                     "pgd_accuracy": acc["pgd"][eps_large], "chance": chance}
    pgd10 = acc["pgd"][eps]
    checks["more_steps_not_weaker"] = {
        "passed": max(strong["pgd-50"][eps], strong["pgd-10x5"][eps]) <= pgd10 + tol, "eps": eps,
        "pgd-10": pgd10, "pgd-50": strong["pgd-50"][eps], "pgd-10x5": strong["pgd-10x5"][eps], "tol": tol}
    white = min(pgd10, acc["mifgsm"][eps], acc["fgsm"][eps], strong["pgd-50"][eps], strong["pgd-10x5"][eps])
    try:
        square = build_attack("square", queries=square_queries, seed=seed)
        square_acc = robustness_sweep(model, (x, y), {"square": square}, [eps], seed=seed, **kw
                                      ).robust_accuracy["square"][eps]
        checks["gradient_free_not_stronger"] = {"passed": square_acc >= white - tol, "eps": eps,
                                                "square": square_acc, "best_white_box": white,
                                                "queries": square_queries, "tol": tol}
    except SgtlabError as e:
        if "pyautoattack" not in str(e):
            raise
        checks["gradient_free_not_stronger"] = {"passed": None, "skipped": str(e), "eps": eps,
                                                "best_white_box": white}
    for c in checks.values():
        c["n"] = len(x)
    return checks
