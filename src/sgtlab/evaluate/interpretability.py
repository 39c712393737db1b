"""Saliency-map quality for one model: runs the chosen metrics of SPEC.md "Saliency maps and their
quality" for each saliency method and returns one JSON-ready dict.

Where things live: metric formulas in `sgtlab.evaluate.saliency_metrics` (functions of maps and
model outputs), the batched perturbation engine in `sgtlab.evaluate.perturb`, the perturbation
metrics in `perturbation_metrics` and `road`, the sanity checks in `sanity_checks`, captum's
metrics in `captum_metrics`, fast paths in `sgtlab.fast`. This module only orchestrates.

One class throughout: every map explains, and every perturbation metric scores, the same class per
image: the true label (`target="true"`, the default) or the model's clean prediction ("pred").
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from sgtlab.device import eval_batch_size
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.captum_metrics import infidelity, sensitivity_max
from sgtlab.evaluate.perturb import (check_fractions, check_target, default_patch, explained_class,
                                     model_device)
from sgtlab.evaluate.perturbation_metrics import (LOW_SALIENCY_QS, MASKED_PS, aopc, low_saliency_curve,
                                                  low_saliency_masks, masked_accuracy, uniform_fill_like)
from sgtlab.evaluate.road import ROAD_FRACTIONS, noisy_linear_imputation, road
from sgtlab.evaluate.saliency_metrics import (abpc, clearly_positive, localisation, ratio_where_defined,
                                              saliency_entropy, saliency_gini, saliency_size)
from sgtlab.evaluate.sanity_checks import cascading_randomisation

__all__ = ["METRICS", "QUICK_OPTIONS", "aopc", "interpretability_metrics", "localisation", "low_saliency_curve",
           "low_saliency_masks", "masked_accuracy", "noisy_linear_imputation", "road", "saliency_entropy",
           "saliency_gini", "saliency_quality", "saliency_size", "summary_rows", "uniform_fill_like"]

METRICS = ("entropy", "size", "gini", "aopc", "road", "masked_accuracy", "low_saliency", "localisation", "sanity",
           "infidelity", "sensitivity")
# Options for a quick look (the `quick` preset): few SmoothGrad samples and IG steps, short AOPC
# curves, coarse masking / noise grids, PGD with 3 steps on 5 supports of the first 50 images, ROAD
# at 3 fractions on 32 images, the sanity checks on 8 and captum's metrics on 16 images.
QUICK_OPTIONS = dict(method_options={"smoothgrad": {"samples": 4}, "ig": {"steps": 8}}, aopc_steps=10,
                     masked_ps=(0, 20, 40, 60, 80), qs=(0.0, 0.25, 0.5, 0.75, 1.0),
                     pgd_qs=(0.0, 0.25, 0.5, 0.75, 1.0), pgd_steps=3, pgd_n=50, road_fractions=(0.2, 0.5, 0.8),
                     road_n=32, sanity_n=8, captum_n=16, captum_perturb=4)


def resolve_metrics(metrics: str | Sequence[str], has_regions: bool) -> list[str]:
    """The metric names `metrics` ("all" or names) stands for on data with (or without) region masks;
    an unknown name, or localisation without regions, is refused."""
    if metrics == "all":
        return [m for m in METRICS if m != "localisation" or has_regions]
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise SgtlabError(f"unknown interpretability metric {', '.join(unknown)}; choose from: all, {', '.join(METRICS)}")
    if "localisation" in names and not has_regions:
        raise SgtlabError("the localisation metric needs a data set with known regions (extras 'patch_mask' and "
                          "'digit_mask', e.g. decoy-mnist)")
    return names


def _stats(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    v = v[~torch.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return v.mean().item(), (v.std().item() if len(v) > 1 else 0.0)


def _progress(progress: bool | Callable, total: int):
    if callable(progress):
        return progress, None
    if not progress:
        return (lambda label: None), None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="interpretability", unit="step", leave=False)

    def tick(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(1)
    return tick, bar


def saliency_quality(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: Sequence[str] | str = ("grad",),
                     metrics: str | Sequence[str] = "all", *, target: str = "true",
                     regions: dict[str, torch.Tensor] | None = None, method_options: dict[str, dict] | None = None,
                     aopc_patch: int | None = None, aopc_steps: int | None = None,
                     masked_ps: Sequence[float] = MASKED_PS, qs: Sequence[float] = LOW_SALIENCY_QS,
                     eps: float | None = None, pgd: bool = True, pgd_qs: Sequence[float] | None = None,
                     pgd_steps: int = 10, pgd_n: int | None = None,
                     road_fractions: Sequence[float] = ROAD_FRACTIONS, road_noise: float = 0.01,
                     road_n: int | None = None,
                     sanity_n: int = 64, sanity_threshold: float = 0.5, captum_n: int = 64, captum_perturb: int = 10,
                     seed: int = 0, batch_size: int | None = None, n_examples: int = 8,
                     progress: bool | Callable = False) -> dict[str, Any]:
    """Every chosen metric for every saliency method on images `x` (N x C x H x W in [0, 1]) with
    labels `y` (N).

    `target`: the class every map explains and every perturbation metric scores, "true" (the
    label) or "pred" (the clean prediction). `regions`: {"patch_mask", "digit_mask"} N x H x W bool
    masks for `localisation`. `eps`: the low-saliency curve's budget (None: 0.3 for one-channel
    images, 8/255 for colour ones; PGD on the first `pgd_n` images, default all). ROAD at
    `road_fractions` with imputation noise `road_noise`
    on the first `road_n` images (None: all);
    sanity checks on the first `sanity_n` images, captum's metrics on the first `captum_n` with
    `captum_perturb` perturbations each. All random values (fills, noise, randomised weights,
    SmoothGrad's noise) come from `seed`, the same for every method and model.

    Returns a JSON-ready dict: `summary[method]` (`<metric>_mean`, `<metric>_std` over images,
    `abpc_lo`/`abpc_hi` (95 % t interval), `aopc_rel` (NaN where LeRF is not clearly > 0), curve
    means, `sanity_passed`: 1 pass, 0 fail, NaN unclear), `curves[method]` (AOPC, ROAD, masked accuracy, low-saliency),
    `per_image[method]` (one value per image of each per-image metric, same image order for every
    method and model, plus `class` and `correct`), `sanity` (per method: similarity per randomised
    layer), `examples` (the first `n_examples` images and maps), `options`."""
    from sgtlab.evaluate.masking_checks import default_eps
    from sgtlab.explain import SALIENCY

    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise SgtlabError("no saliency method given")
    for m in methods:
        SALIENCY.get(m)
    check_target(target)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not isinstance(y, torch.Tensor) or y.shape != (len(x),):
        raise SgtlabError(f"images N x C x H x W and labels (N,) are needed, got {getattr(x, 'shape', x)} and "
                          f"{getattr(y, 'shape', y)}")
    names = resolve_metrics(metrics, regions is not None)
    if sanity_n < 2 or captum_n < 1 or captum_perturb < 1:
        raise SgtlabError(f"sanity_n must be >= 2, captum_n and captum_perturb >= 1; got {sanity_n}, {captum_n}, "
                          f"{captum_perturb}")
    check_fractions(qs, "low-saliency fractions q")
    method_options = dict(method_options or {})
    eps = default_eps(x) if eps is None else float(eps)
    dev = model_device(model)
    batch_size = eval_batch_size(batch_size, dev)
    x, y = x.to(dev), y.to(dev)
    cls = explained_class(model, x, y, target, batch_size)
    correct = (explained_class(model, x, y, "pred", batch_size) == y).cpu()
    per_method = 1 + sum(m in names for m in ("aopc", "road", "masked_accuracy", "low_saliency", "infidelity",
                                              "sensitivity"))
    tick, bar = _progress(progress, len(methods) * per_method + ("sanity" in names))
    result: dict[str, Any] = {
        "n": len(x), "methods": methods, "metrics": names,
        "options": {"target": target, "method_options": method_options,
                    "aopc_patch": aopc_patch or default_patch(x.shape[2]), "aopc_steps": aopc_steps,
                    "masked_ps": list(masked_ps), "qs": list(qs), "eps": eps, "pgd": pgd,
                    "pgd_qs": None if pgd_qs is None else list(pgd_qs), "pgd_steps": pgd_steps,
                    "pgd_n": pgd_n, "road_fractions": list(road_fractions), "road_noise": road_noise,
                    "road_n": road_n, "sanity_n": sanity_n,
                    "sanity_threshold": sanity_threshold, "captum_n": captum_n, "captum_perturb": captum_perturb,
                    "seed": seed},
        "summary": {}, "curves": {}, "per_image": {},
        "examples": {"images": x[:n_examples].cpu().tolist(), "labels": y[:n_examples].cpu().tolist(), "maps": {}},
    }

    def explain(name: str, reduce: bool = True):
        return seeded_explainer(name, method_options.get(name, {}), seed, reduce)

    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731  the same fills for every method
    all_maps = {}
    for method in methods:
        raw = explain(method, reduce=False)(model, x, cls)
        maps = raw.abs().sum(1)  # SPEC: |s| summed over channels (what saliency_maps(reduce=True) gives)
        all_maps[method] = maps
        tick(f"{method}: maps")
        summ: dict[str, Any] = {}
        per: dict[str, torch.Tensor] = {"class": cls.cpu(), "correct": correct}
        curves: dict[str, Any] = {}
        for name, fn, key in (("entropy", saliency_entropy, "entropy"), ("size", saliency_size, "size_kib"),
                              ("gini", saliency_gini, "gini")):
            if name in names:
                per[key] = fn(maps).cpu()
        if "aopc" in names:
            fill = torch.rand(x.shape, generator=gen()).to(dev)
            res = {o: aopc(model, x, maps, classes=cls, order=o, patch=aopc_patch, steps=aopc_steps, fill=fill,
                           batch_size=batch_size) for o in ("morf", "lerf")}
            per["aopc_morf"], per["aopc_lerf"] = res["morf"]["aopc"], res["lerf"]["aopc"]
            per["abpc"] = abpc(per["aopc_morf"], per["aopc_lerf"])
            curves["aopc"] = {o: (r["prob"][:, :1] - r["prob"]).mean(0).tolist() for o, r in res.items()}
            curves["aopc"]["k"] = list(range(res["morf"]["prob"].shape[1]))
            tick(f"{method}: aopc")
        if "road" in names:
            k = len(x) if road_n is None else min(road_n, len(x))
            res = {o: road(model, x[:k], maps[:k], cls[:k], order=o, fractions=road_fractions, noise=road_noise,
                           generator=gen(), batch_size=batch_size) for o in ("morf", "lerf")}
            per["road_morf"], per["road_lerf"] = (_pad(res[o]["drop"], len(x)) for o in ("morf", "lerf"))
            per["road_gap"] = abpc(per["road_morf"], per["road_lerf"])
            curves["road"] = {"fraction": list(road_fractions), **{o: r["accuracy"] for o, r in res.items()},
                              **{f"{o}_prob": r["prob"].mean(0).tolist() for o, r in res.items()}}
            tick(f"{method}: road")
        if "infidelity" in names:
            k = min(captum_n, len(x))
            per["infidelity"] = _pad(infidelity(model, x[:k], raw[:k], cls[:k], n_perturb=captum_perturb, seed=seed),
                                     len(x))
            tick(f"{method}: infidelity")
        if "sensitivity" in names:
            k = min(captum_n, len(x))
            fn = explain(method, reduce=False)
            per["sensitivity"] = _pad(sensitivity_max(lambda xx, cc: fn(model, xx, cc), x[:k], cls[:k],
                                                      n_perturb=captum_perturb, seed=seed), len(x))
            tick(f"{method}: sensitivity")
        if "localisation" in names:
            per["decoy_share"] = localisation(maps, regions["patch_mask"])
            per["digit_share"] = localisation(maps, regions["digit_mask"])
        for key, values in per.items():
            if key not in ("class", "correct"):
                summ[f"{key}_mean"], summ[f"{key}_std"] = _stats(values)
        if "aopc" in names:
            _, summ["abpc_lo"], summ["abpc_hi"] = clearly_positive(per["abpc"].numpy())
            summ["aopc_rel"] = ratio_where_defined(per["aopc_morf"].numpy(), per["aopc_lerf"].numpy())
        if "masked_accuracy" in names:
            ma = masked_accuracy(model, x, y, maps, ps=masked_ps, generator=gen(), batch_size=batch_size)
            curves["masked_accuracy"] = {k: ma[k] for k in ("p", "top", "random")}
            summ["masked_acc_top_mean"] = float(np.mean(ma["top"]))
            summ["masked_acc_random_mean"] = float(np.mean(ma["random"]))
            tick(f"{method}: masked accuracy")
        if "low_saliency" in names:
            ls = low_saliency_curve(model, x, y, maps, qs=qs, eps=eps, pgd=pgd, pgd_qs=pgd_qs, pgd_steps=pgd_steps,
                                    pgd_n=pgd_n, generator=gen(), batch_size=batch_size)
            curves["low_saliency"] = ls
            summ["low_sal_noise_mean"] = float(np.mean(ls["noise"]))
            if pgd:
                summ["low_sal_pgd_mean"] = float(np.mean(ls["pgd"]))
            tick(f"{method}: low-saliency curve")
        result["summary"][method] = summ
        result["curves"][method] = curves
        result["per_image"][method] = {k: v.tolist() for k, v in per.items()}
        result["examples"]["maps"][method] = maps[:n_examples].cpu().tolist()
    if "sanity" in names:
        k = min(sanity_n, len(x))
        san = cascading_randomisation(model, x[:k], cls[:k], {m: explain(m) for m in methods}, seed=seed,
                                      threshold=sanity_threshold, maps={m: v[:k] for m, v in all_maps.items()})
        result["sanity"] = san
        for m, s in san["methods"].items():
            result["summary"][m]["sanity_spearman_last"] = s["last_spearman"]["mean"]
            result["summary"][m]["sanity_ssim_last"] = s["ssim_mean"][-1]
            # numeric, so the flat results table can average it: 1 pass, 0 fail, NaN unclear
            result["summary"][m]["sanity_passed"] = {"pass": 1.0, "fail": 0.0}.get(s["verdict"], math.nan)
        tick("sanity checks")
    if bar is not None:
        bar.close()
    return result


def _pad(values: torch.Tensor, n: int) -> torch.Tensor:
    """Per-image values on the first k images, NaN for the rest (so every per-image list has n)."""
    out = torch.full((n,), math.nan)
    out[:len(values)] = values.float()
    return out


def seeded_explainer(name: str, options: dict[str, Any] | None = None, seed: int = 0,
                     reduce: bool = True) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """`fn(model, x, classes)`: saliency method `name` with `options`, its random draws (SmoothGrad's
    noise) from `seed` on every call, so two models are explained with the same noise."""
    from sgtlab.explain import saliency_maps

    def fn(mdl, xx, cc):
        dev = xx.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)  # captum draws from the global RNG
            return saliency_maps(mdl, xx, cc, name, reduce=reduce, **(options or {}))
    return fn


def interpretability_metrics(model: nn.Module, data, methods: Sequence[str] | str = ("grad",),
                             metrics: str | Sequence[str] = "all", n: int | None = 256, **options) -> dict[str, Any]:
    """`saliency_quality` on the first `n` images of `data` ((x, y), a TensorDataset, a DataLoader or a `TensorData`), with its region masks
    for localisation where it has them (Decoy-MNIST). Same options and result, plus `dataset`."""
    if n is not None and n < 1:
        raise SgtlabError(f"n must be >= 1, got {n}")
    from sgtlab.data.inputs import as_data

    data = as_data(data).subset(n)  # (x, y), TensorDataset, DataLoader or TensorData; checked
    extras = getattr(data, "extras", {}) or {}
    regions = {k: extras[k] for k in ("patch_mask", "digit_mask")} if {"patch_mask", "digit_mask"} <= set(extras) else None
    res = saliency_quality(model, data.x, data.y, methods, metrics, regions=regions, **options)
    names = getattr(data, "classes", ())
    if names and "examples" in res:  # the figures title each example with its class name
        res["examples"]["class_names"] = [names[i] if 0 <= i < len(names) else str(i) for i in res["examples"]["labels"]]
    return {"dataset": getattr(data, "name", ""), **res}


def summary_rows(result: dict[str, Any], **ids: Any) -> list[dict[str, Any]]:
    """One flat row per saliency method (`ids` first, e.g. run=..., model=...), for a CSV table; the
    explained class is said in the `target` column."""
    target = result.get("options", {}).get("target", "true")
    return [{**ids, "method": m, "n": result["n"], "target": target, **s} for m, s in result["summary"].items()]
