"""The batched perturbation engine the perturbation metrics share: rank the units of each map,
build every perturbed copy of every image at once (`ranks < k` and `torch.where`), and send the
stack through the model in large batches. No loop over images or steps."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.device import model_device  # the one device helper (re-exported for the metrics)

from sgtlab.errors import SgtlabError
from sgtlab.evaluate.saliency_metrics.map_stats import check_maps

TARGETS = ("true", "pred")


def check_pair(x: torch.Tensor, maps: torch.Tensor) -> None:
    check_maps(maps)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise SgtlabError(f"images must be a tensor N x C x H x W, got {getattr(x, 'shape', type(x).__name__)}")
    if (x.shape[0], *x.shape[2:]) != tuple(maps.shape):
        raise SgtlabError(f"maps of shape {tuple(maps.shape)} do not fit images of shape {tuple(x.shape)} "
                          f"(expected {(x.shape[0], *x.shape[2:])})")


def check_fractions(values: Sequence[float], name: str, hi: float = 1.0) -> list[float]:
    values = [float(v) for v in values]
    if not values or any(not (0 <= v <= hi) for v in values):
        raise SgtlabError(f"{name} must be a non-empty list of values in [0, {hi:g}], got {values}")
    return values


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise SgtlabError(f"the explained class must be 'true' (the label) or 'pred' (the prediction), got {target!r}")


def check_classes(classes, n: int) -> torch.Tensor:
    if not isinstance(classes, torch.Tensor) or tuple(classes.shape) != (n,) or classes.is_floating_point():
        raise SgtlabError(f"the scored classes must be an integer tensor of shape ({n},), got "
                          f"{getattr(classes, 'shape', type(classes).__name__)}")
    return classes.long()


def ranks_of(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Position of each unit (last dim) in the per-row order; units with rank < k are the first k
    (ties keep index order: stable sort, so a reference loop gets the same order)."""
    order = torch.argsort(scores, dim=-1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def perturbed(x: torch.Tensor, fill: torch.Tensor, ranks_pix: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """`x` with the units ranked below each `k` replaced by `fill`: N x K x C x H x W.
    `ranks_pix`: N x (H*W), the rank of each pixel's unit."""
    n, c, h, w = x.shape
    mask = (ranks_pix[:, None, :] < ks.to(ranks_pix.device)[None, :, None]).view(n, len(ks), 1, h, w)
    return torch.where(mask, fill[:, None], x[:, None])


def probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities for a (large) stack of images, in chunks, on the model's device."""
    dev = model_device(model)
    with torch.no_grad():  # not a decorator: mutmut 3 skips decorated functions
        return torch.cat([F.softmax(model(x[i:i + batch_size].to(dev)), 1) for i in range(0, len(x), batch_size)])




def chunk(n_levels: int, batch_size: int) -> int:
    """Images per chunk so that one chunk's perturbed stack is about `batch_size` images."""
    return max(1, batch_size // max(1, n_levels))


def evaluating(model: nn.Module):
    """Eval mode and frozen parameters, restored afterwards (shared with `saliency_maps`)."""
    from sgtlab.explain.base import prepared

    return prepared(model)


def default_patch(h: int) -> int:
    """SPEC: 2 px patches for 28 px images, 4 for 32 px (about 14 and 8 patches per side)."""
    return 4 if h >= 32 else 2


def patch_scores(maps: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed `|s|` per non-overlapping `patch x patch` patch (N x P; edge patches are smaller when
    the size is not a multiple) and the patch index of each pixel (H*W)."""
    n, h, w = maps.shape
    scores = F.avg_pool2d(maps.abs()[:, None], patch, ceil_mode=True, divisor_override=1).flatten(1)
    gw = math.ceil(w / patch)
    rows = torch.arange(h, device=maps.device) // patch
    cols = torch.arange(w, device=maps.device) // patch
    return scores, (rows[:, None] * gw + cols[None, :]).flatten()


def explained_class(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: str, batch_size: int) -> torch.Tensor:
    """The class each image's map explains and its metrics score: the label `y` (`target="true"`)
    or the model's prediction on the clean image (`"pred"`)."""
    check_target(target)
    if target == "true":
        return y
    with evaluating(model):
        return probs(model, x, batch_size).argmax(1).to(y.device)
