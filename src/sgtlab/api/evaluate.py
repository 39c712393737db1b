"""`sgtlab.robustness`, `sgtlab.saliency_maps`, `sgtlab.saliency_metrics`: the evaluations of the
`attack` and `explain` commands on a model object (or a run folder) and any data argument."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from sgtlab.errors import SgtlabError


def _model(model: nn.Module | str | Path) -> nn.Module:
    if isinstance(model, (str, Path)):
        from sgtlab.api.models import load_model

        return load_model(model, device="auto")
    if not isinstance(model, nn.Module):
        raise SgtlabError(f"model must be a torch.nn.Module or a run folder, got {type(model).__name__}")
    return model


def _tracker(out, tensorboard: bool):
    if not tensorboard:
        return None
    if out is None:
        raise SgtlabError("tensorboard logging writes into a run folder: give out=FOLDER too")
    from sgtlab.tracking import Tracker

    return Tracker(out)


def robustness(model: nn.Module | str | Path, data, eps: float | Sequence[float] | None = None,
               attacks: str | Sequence[str] | dict = ("fgsm", "pgd", "mifgsm"), *, n: int | None = None,
               batch_size: int | None = None, seed: int = 0, checks: bool = False, out: str | Path | None = None,
               progress: bool = False, tensorboard: bool = False, from_scratch: bool = False,
               autocast: str | None = None, cuda_graphs: bool = False, suite: bool | dict = False):
    """Clean and robust accuracy under each attack at each eps (L-inf, pixel units): a
    `RobustnessResult` (`.robust_accuracy[attack][eps]`, `.clean_accuracy`, `.per_sample()`, `.table()`).

    `model`: an `nn.Module` (inputs in [0, 1]) or a run folder. `data`: `(x, y)`, a `TensorDataset`, a
    `DataLoader`, or a data-set spec (`"cifar10"`, `"folder:PATH,size=32"`: its test split). `eps`:
    None for the data's standard grid (by its name, else its kind). `attacks`: names (`sgtlab.list_attacks()`) or a dict label -> attack object.
    `checks=True` (or `{"n": images, "queries": Square's}`): also the gradient-masking checks on a
    class-stratified subset (in `result.info["checks"]`, each check's seconds in `["checks_seconds"]`; they
    judge the evaluation and do not change the robust accuracies). `suite=True` (or `{restarts: 5,
    square_queries: 300}`): also the headline suite `reproduce` runs, at the data's headline eps on
    the grid, on every image no cheaper attack fooled, folded into the ensemble
    (`sgtlab.evaluate.headline_suite`). `from_scratch`: each eps on its own (default: the nested
    sweep); `autocast="bf16"`: attacks under bfloat16 autocast, verdicts in float32; `cuda_graphs`: on
    CUDA, the attacks' passes replayed as CUDA graphs (same numbers). `out`: write
    OUT/robustness.json and robustness_per_sample.csv (a run folder: as `sgtlab attack RUN`)."""
    from sgtlab.data.inputs import model_data
    from sgtlab.evaluate.headline_suite import check_suite
    from sgtlab.evaluate.robustness import check_eps_grid, resolve_attacks, robustness_sweep

    from sgtlab.api.data import named_data
    from sgtlab.data.budgets import budgets_for, check_unit_eps

    model = _model(model)
    grid = check_eps_grid([eps] if isinstance(eps, (int, float)) else list(eps)) if eps is not None else None
    if grid is not None:
        check_unit_eps("eps", grid)  # pixel units: 8 for 8/255 is refused
    plan = resolve_attacks([attacks] if isinstance(attacks, str) else attacks)
    suite_opts = check_suite(suite, "suite")  # None: no suite; checked before any work
    checks_opts = _checks_options(checks)
    data = model_data(model, named_data(data, "test"))
    if grid is None:  # the data's standard grid: its name's, else its kind's (0.05..0.4 grey, 1/255..16/255 colour)
        grid = check_eps_grid(list(budgets_for(data.name, tuple(data.shape)).eps_grid))
    tracker = _tracker(out, tensorboard)
    result = robustness_sweep(model, data, plan, grid, n=n, batch_size=batch_size, progress=progress, seed=seed,
                              from_scratch=from_scratch, autocast=autocast,
                              cuda_graphs=cuda_graphs)
    if suite_opts:
        from sgtlab.data.budgets import budgets_for_shape
        from sgtlab.data.inputs import as_data
        from sgtlab.evaluate.headline_suite import headline_suite, suite_eps

        d = as_data(data)
        x, y = d.x[:result.n], d.y[:result.n]  # the images the sweep attacked (its `n`)
        headline = budgets_for_shape(tuple(x.shape[1:])).headline_eps
        headline_suite(model, (x, y), result, suite_eps(result.eps, headline), batch_size=batch_size, seed=seed,
                       progress=progress, **suite_opts)
    if checks_opts is not None:
        import time

        from sgtlab.data.subsets import stratified_subset
        from sgtlab.evaluate.masking_checks import gradient_masking_checks

        sub, _ = stratified_subset(data, checks_opts["n"] or n, seed)  # class-stratified, as reproduce's
        t0, timings = time.perf_counter(), {}
        result.info["checks"] = gradient_masking_checks(model, sub, n=None, batch_size=batch_size, seed=seed,
                                                        square_queries=checks_opts["queries"], timings=timings)
        result.info["checks_seconds"] = {**timings, "total": round(time.perf_counter() - t0, 3)}
    if out is not None:
        result.save(out)
        if checks:
            from sgtlab.io import write_json_atomic

            write_json_atomic(Path(out) / "checks.json", result.info["checks"])
    if tracker is not None:
        tracker.robustness(result.robust_accuracy, result.clean_accuracy)
        tracker.close()
    return result


def _checks_options(checks: bool | dict) -> dict | None:
    """`checks`: False, True (every image of the sweep's `n`, Square with 1000 queries) or
    `{"n": images, "queries": Square's queries}`; checked before any work."""
    if checks is False or checks is None:
        return None
    opts = {"n": None, "queries": 1000}
    if isinstance(checks, dict):
        unknown = sorted(set(checks) - set(opts))
        if unknown:
            raise SgtlabError(f"checks takes n and queries, got {', '.join(map(str, unknown))}")
        opts.update(checks)
    elif checks is not True:
        raise SgtlabError(f"checks must be True, False or {{'n': images, 'queries': Square's queries}}, got {checks!r}")
    for k in ("n", "queries"):
        v = opts[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SgtlabError(f"checks {k} must be a positive integer, got {v!r}")
    return opts


def saliency_maps(model: nn.Module | str | Path, x, y: torch.Tensor | None = None, method: Any = "grad",
                  *, target: torch.Tensor | None = None, **options) -> torch.Tensor:
    """Saliency maps N x H x W of `method` (`grad`, `input-x-grad`, `smoothgrad`, `ig`; captum's
    `attribute(x, target=y)` summed |.| over channels; or any captum attribution class or object,
    e.g. `LayerGradCam(model, model.conv)`, a dotted name of one, or a callable `(model, x, target)
    -> maps`). `x`: images N x C x H x W in [0, 1], with target labels `y` (captum's name `target=`
    too; None: the predicted classes); or data `(x, y)`, a `TensorDataset`, a `DataLoader`.
    `options`: the method's (`samples`, `noise` for smoothgrad, `steps`/`n_steps` and `baselines`
    for ig, a captum attribution's own `attribute` options, `batch_size`, `reduce=False` for the N x
    C x H x W attribution). The model's modes are restored."""
    from sgtlab.data.inputs import as_data, check_images, check_labels, output_classes
    from sgtlab.explain import saliency_maps as maps

    if target is not None:
        if y is not None:
            raise SgtlabError("give the labels once: y or target (captum's name), not both")
        y = target
    model = _model(model)
    if isinstance(x, torch.Tensor) and y is None:
        check_images(x)
        if len(x):
            lo, hi = torch.aminmax(x.detach())
            if not (0 <= lo.item() and hi.item() <= 1):
                raise SgtlabError(f"images must lie in [0, 1] (normalise inside the model), got values in "
                                  f"[{lo.item():.4g}, {hi.item():.4g}]")
        output_classes(model, x)
        return maps(model, x, None, method, **options)
    from sgtlab.api.data import named_data

    data = as_data((x, y) if isinstance(x, torch.Tensor) else named_data(x, "test"))
    check_labels(data.y, output_classes(model, data.x))
    return maps(model, data.x, data.y, method, **options)


def saliency_metrics(model: nn.Module | str | Path, data, methods: Any = ("grad",),
                     metrics: str | Sequence[str] = "all", n: int | None = 256, *, out: str | Path | None = None,
                     tensorboard: bool = False, **options) -> dict[str, Any]:
    """Saliency-map quality (entropy, size, Gini, AOPC, masked accuracy, low-saliency robustness,
    localisation on Decoy-MNIST) of each saliency method on the first `n` images, as `sgtlab explain`.
    `methods`: names, captum attribution classes or objects (`LayerGradCam(model, model.conv)`),
    callables `(model, x, target) -> maps`, or a dict label -> any of these; results are keyed by
    the name or label (a class's or function's name by default). Result:
    a dict with `summary[method][metric]`, `curves`, `per_image`, `examples`. `options`: those of
    `sgtlab.evaluate.interpretability.interpretability_metrics` (`method_options`, `eps`, `qs`, `seed`,
    `batch_size`, ...). `out`: write OUT/interpretability.json (a run folder: as `sgtlab explain RUN`)."""
    from sgtlab.data.inputs import model_data
    from sgtlab.evaluate.interpretability import interpretability_metrics
    from sgtlab.explain import saliency_method

    from sgtlab.api.data import named_data
    from sgtlab.data.budgets import budgets_for

    model = _model(model)
    data = model_data(model, named_data(data, "test"))
    # the low-saliency curve's budget: the data's (by name, else kind), as `sgtlab explain` picks it
    options.setdefault("eps", budgets_for(data.name, tuple(data.shape)).low_saliency_eps)
    if isinstance(methods, dict):  # {label: method}
        methods = [saliency_method(m, label) for label, m in methods.items()]
    else:
        methods = [saliency_method(m) for m in ([methods] if isinstance(methods, str) or not
                                                 isinstance(methods, (list, tuple)) else methods)]
    tracker = _tracker(out, tensorboard)
    result = interpretability_metrics(model, data, methods, metrics, n, **options)
    if out is not None:
        from sgtlab.io import write_json_atomic

        write_json_atomic(Path(out) / "interpretability.json", result)
    if tracker is not None:
        tracker.saliency("examples", result["examples"]["images"], result["examples"]["maps"])
        tracker.close()
    return result
