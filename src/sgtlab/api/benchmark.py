"""`sgtlab.benchmark`: one call that evaluates a model the way RobustBench does: clean accuracy and
standard-AutoAttack robust accuracy at the data set's standard L-inf budget, on a seeded
class-stratified subset, with Wilson intervals and the gradient-masking checks' flags; the result
is a small JSON-ready dict a results table can collect."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgtlab.errors import SgtlabError


def benchmark(model: nn.Module | str | Path, dataset: Any = None, threat_model: str = "Linf",
              eps: float | None = None, n: int = 1000, *, seed: int = 0, checks: bool | dict = True,
              batch_size: int | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """Clean and AutoAttack-standard robust accuracy of `model` on `n` class-stratified test images.

    `model`: an `nn.Module` (inputs in [0, 1]) or a run folder. `dataset`: a data-set spec
    (`"cifar10"`, `"mnist"`, `"folder:PATH,size=32"`: its test split), or data `(x, y)`, a
    `TensorDataset`, a `DataLoader`; None: the run folder's data set. `threat_model`: "Linf" (the
    only one here). `eps`: None for the data set's standard budget (8/255 on colour images, 0.3 on
    grey digits; by its name, else its kind). `checks`: the gradient-masking checks on the same
    subset (True, False, or `{"n": images, "queries": Square's}`); their failed checks are the
    `flags`. `out`: also write OUT/benchmark.json. Returns `{model, dataset, threat_model, eps,
    eps_text, n, clean_accuracy, clean_ci, robust_accuracy, robust_ci, attack, flags, seconds}`."""
    from sgtlab.api.data import named_data
    from sgtlab.api.evaluate import _checks_options, _model
    from sgtlab.attacks.autoattack import AutoAttackStandard
    from sgtlab.data.budgets import budgets_for, check_unit_eps
    from sgtlab.data.inputs import model_data
    from sgtlab.data.subsets import stratified_subset
    from sgtlab.device import eval_batch_size, model_device
    from sgtlab.reporting.eps import eps_text
    from sgtlab.stats import wilson_interval

    if threat_model != "Linf":
        raise SgtlabError(f"threat_model must be 'Linf' (sgtlab's attacks are L-inf), got {threat_model!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SgtlabError(f"n must be a positive integer, got {n!r}")
    if eps is not None:
        check_unit_eps("eps", eps)
    checks_opts = _checks_options(checks)
    t0 = time.perf_counter()
    run_name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    if dataset is None:
        if not isinstance(model, (str, Path)):
            raise SgtlabError("benchmark needs a dataset for a model object: a name such as 'cifar10', or (x, y)")
        from sgtlab.train.checkpoint import read_checkpoint

        dataset = (read_checkpoint(model)[1].get("arch") or {}).get("dataset")
        if not dataset:
            raise SgtlabError(f"{model} does not name its data set (trained in Python): give dataset=")
    model = _model(model)
    data = model_data(model, named_data(dataset, "test"))
    sub, _ = stratified_subset(data, n, seed)
    shape = tuple(sub.shape)
    eps = float(budgets_for(sub.name, shape).headline_eps[-1] if eps is None else eps)
    dev = model_device(model)
    x, y = sub.x, sub.y
    bs = eval_batch_size(batch_size, dev)
    attack = AutoAttackStandard(seed=seed)
    clean_ok, robust_ok = [], []
    for i in range(0, len(x), bs):
        xb, yb = x[i:i + bs].to(dev), y[i:i + bs].to(dev)
        with torch.no_grad():
            clean_ok.append((model.eval()(xb).argmax(1) == yb).cpu())
        adv = attack(model, xb, yb, eps)
        with torch.no_grad():
            robust_ok.append(((model(adv).argmax(1) == yb) & clean_ok[-1].to(dev)).cpu())
    k_clean, k_rob, m = int(torch.cat(clean_ok).sum()), int(torch.cat(robust_ok).sum()), len(x)
    flags: list[str] = []
    check_results, timings = None, {}
    if checks_opts is not None:
        from sgtlab.evaluate.masking_checks import gradient_masking_checks

        check_results = gradient_masking_checks(model, sub, n=checks_opts["n"] or m, eps=eps, batch_size=batch_size,
                                                seed=seed, square_queries=checks_opts["queries"], timings=timings)
        flags = sorted(name for name, c in check_results.items() if c.get("passed") is False)
    result = {
        "model": run_name, "dataset": sub.name, "threat_model": threat_model, "eps": eps,
        "eps_text": eps_text(eps, shape), "n": m,
        "clean_accuracy": k_clean / m, "clean_ci": list(wilson_interval(k_clean, m)),
        "robust_accuracy": k_rob / m, "robust_ci": list(wilson_interval(k_rob, m)),
        "attack": "autoattack-standard", "flags": flags, "checks_run": check_results is not None,
        "checks_seconds": timings if check_results is not None else None,
        "seconds": round(time.perf_counter() - t0, 2)}
    if out is not None:
        from sgtlab.io import write_json_atomic

        Path(out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out) / "benchmark.json", result)
    return result
