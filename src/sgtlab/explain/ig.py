"""Integrated Gradients (Sundararajan et al. 2017) from the all-zero (black) baseline (or captum's
`baselines=`), through
captum's `IntegratedGradients` (its default Gauss-Legendre rule; `method="riemann_trapezoid"` etc.
are accepted)."""
from __future__ import annotations

import torch
from captum.attr import IntegratedGradients

from sgtlab.errors import SgtlabError
from sgtlab.explain.base import register_saliency


@register_saliency("ig")
def integrated_gradients(model, x: torch.Tensor, target: torch.Tensor, *, steps: int = 32,
                         method: str = "gausslegendre", internal_batch_size: int | None = None,
                         baselines: float | torch.Tensor | None = None, n_steps: int | None = None) -> torch.Tensor:
    """`baselines` as captum's: None (black, all zeros), a number, or a tensor of the images' shape
    (or one image's, C x H x W, for all); `n_steps` is captum's name for `steps`."""
    steps = steps if n_steps is None else n_steps
    if not isinstance(steps, int) or steps < 1:
        raise SgtlabError(f"ig steps must be >= 1, got {steps}")
    if baselines is None:
        baselines = torch.zeros_like(x)
    elif isinstance(baselines, torch.Tensor):
        if baselines.shape == x.shape[1:]:
            baselines = baselines.unsqueeze(0).expand_as(x)
        if baselines.shape != x.shape:
            raise SgtlabError(f"ig baselines must have the images' shape {tuple(x.shape)} or one image's "
                              f"{tuple(x.shape[1:])}, got {tuple(baselines.shape)}")
        baselines = baselines.to(device=x.device, dtype=x.dtype)
    elif not isinstance(baselines, (int, float)):
        raise SgtlabError(f"ig baselines must be None, a number or a tensor, got {type(baselines).__name__}")
    return IntegratedGradients(model).attribute(x, baselines=baselines, target=target, n_steps=steps,
                                                method=method, internal_batch_size=internal_batch_size)
