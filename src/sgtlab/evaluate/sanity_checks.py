"""Sanity checks for saliency maps (Adebayo et al. 2018): cascading randomisation of the model's
weights from the output layer down (`cascading_randomisation`), and the data randomisation test
against a model trained on randomly permuted labels (`label_randomization_check`). A map method
that explains the model should give maps that change once the weights they depend on are random,
or once the model learnt nothing; maps that stay similar to the original ones explain the input,
not the model, and the method fails.

Similarity per image (and randomisation step): the Spearman rank correlation of `|maps|` and the
SSIM of the maps scaled to [0, 1] (`sgtlab.evaluate.saliency_metrics.similarity`). Verdict, at the
last cascading step (every layer random) or against the random-label model: "fail" when the lower
end of the 95 % t interval of the mean Spearman correlation over images is above `threshold`
(default 0.5, half-way between maps unrelated to the original ones, 0, and the same maps, 1),
"pass" when its upper end is below it, "unclear" otherwise.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import torch
from scipy import stats as _st
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.evaluate.saliency_metrics.similarity import spearman_abs, ssim

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def randomisable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that own parameters and can re-initialise them (`reset_parameters`), output
    side first (reverse registration order, which is the forward order of sgtlab's models)."""
    layers = [(name, m) for name, m in model.named_modules()
              if any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")]
    return layers[::-1]


def _interval(v: torch.Tensor, conf: float = 0.95) -> tuple[float, float, float]:
    a = v.double().numpy()
    a = a[~np.isnan(a)]
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    if len(a) == 1:
        return float(a[0]), math.nan, math.nan
    h = a.std(ddof=1) / math.sqrt(len(a)) * _st.t.ppf(0.5 + conf / 2, len(a) - 1)
    return float(a.mean()), float(a.mean() - h), float(a.mean() + h)


def verdict(spearman_last: torch.Tensor, threshold: float = 0.5) -> tuple[str, float, float, float]:
    """("pass" | "fail" | "unclear", mean, lo, hi) from the per-image Spearman correlations after
    every layer was randomised."""
    m, lo, hi = _interval(spearman_last)
    if math.isnan(lo):
        return "unclear", m, lo, hi
    return ("fail" if lo > threshold else "pass" if hi < threshold else "unclear"), m, lo, hi


def _reset(m: nn.Module) -> None:
    with torch.no_grad():  # not a decorator: mutmut 3 skips decorated functions
        m.reset_parameters()


def cascading_randomisation(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
                            explainers: dict[str, Explainer], *, seed: int = 0, threshold: float = 0.5,
                            maps: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Cascading randomisation for each explainer (`name -> fn(model, x, classes) -> N x H x W`
    maps): the layers of `randomisable_layers`, from the output down, are re-initialised one more
    at each step (a copy of the model; the caller's is untouched; the new weights come from `seed`)
    and the maps of the randomised model are compared with the original ones (`maps[name]` when
    given, else computed).

    Returns `layers` (the randomised layer names, step order) and per explainer `spearman` and
    `ssim` (steps x N, lists), their means per step `spearman_mean`, `ssim_mean`, and the
    `verdict` with the interval behind it."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise SgtlabError(f"images must be a tensor N x C x H x W, got {getattr(x, 'shape', type(x).__name__)}")
    if not explainers:
        raise SgtlabError("no saliency method to check")
    layers = randomisable_layers(model)
    if not layers:
        raise SgtlabError("the model has no layer with parameters and `reset_parameters` to randomise")
    original = {name: (maps or {}).get(name) for name in explainers}
    original = {name: (m if m is not None else fn(model, x, classes)) for (name, fn), m
                in zip(explainers.items(), original.values())}
    work = copy.deepcopy(model)
    by_name = dict(work.named_modules())
    sims: dict[str, dict[str, list]] = {n: {"spearman": [], "ssim": []} for n in explainers}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer_name, _ in layers:
            _reset(by_name[layer_name])
            for name, fn in explainers.items():
                rand_maps = fn(work, x, classes)
                sims[name]["spearman"].append(spearman_abs(original[name].cpu(), rand_maps.cpu()))
                sims[name]["ssim"].append(ssim(original[name].cpu(), rand_maps.cpu()))
    out: dict[str, Any] = {"layers": [n for n, _ in layers], "threshold": threshold, "n": len(x), "methods": {}}
    for name, s in sims.items():
        status, m, lo, hi = verdict(s["spearman"][-1], threshold)
        out["methods"][name] = {
            "spearman": [v.tolist() for v in s["spearman"]], "ssim": [v.tolist() for v in s["ssim"]],
            "spearman_mean": [float(np.nanmean(v.numpy())) for v in s["spearman"]],
            "ssim_mean": [float(np.nanmean(v.numpy())) for v in s["ssim"]],
            "verdict": status, "last_spearman": {"mean": m, "lo": lo, "hi": hi}}
    return out


def label_randomization_check(model: nn.Module, random_model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
                              explainers: dict[str, Explainer], *, threshold: float = 0.5,
                              maps: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The data randomisation test (Adebayo et al. 2018): `random_model` has `model`'s architecture
    and was trained with the same settings on the training set with its labels randomly permuted
    (`TrainConfig.random_labels`), so it learnt no relation between images and labels. Each
    explainer (`name -> fn(model, x, classes) -> N x H x W`) explains both models on the same
    images and classes; a method whose maps stay similar explains the input, not what the model
    learnt, and fails (the verdict of the cascading check, same `threshold`).

    `maps[name]`: the real model's maps when already computed. Returns `threshold`, `n` and per
    explainer `spearman` and `ssim` (N, lists), their means `spearman_mean`, `ssim_mean`, and the
    `verdict` with the interval behind it (`spearman_ci`)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise SgtlabError(f"images must be a tensor N x C x H x W, got {getattr(x, 'shape', type(x).__name__)}")
    if not explainers:
        raise SgtlabError("no saliency method to check")
    out: dict[str, Any] = {"threshold": threshold, "n": len(x), "methods": {}}
    for name, fn in explainers.items():
        real = (maps or {}).get(name)
        real = (real if real is not None else fn(model, x, classes)).cpu()
        rand = fn(random_model, x, classes).cpu()
        sp, ss = spearman_abs(real, rand), ssim(real, rand)
        status, m, lo, hi = verdict(sp, threshold)
        out["methods"][name] = {"spearman": sp.tolist(), "ssim": ss.tolist(),
                                "spearman_mean": float(np.nanmean(sp.numpy())),
                                "ssim_mean": float(np.nanmean(ss.numpy())),
                                "verdict": status, "spearman_ci": {"mean": m, "lo": lo, "hi": hi}}
    return out
