"""Integrated Gradients (Sundararajan et al. 2017) from the all-zero (black) baseline, through
captum's `IntegratedGradients` (its default Gauss-Legendre rule; `method="riemann_trapezoid"` etc.
are accepted)."""
from __future__ import annotations

import torch
from captum.attr import IntegratedGradients

from sgtlab.errors import SgtlabError
from sgtlab.explain.base import register_saliency


@register_saliency("ig")
def integrated_gradients(model, x: torch.Tensor, target: torch.Tensor, *, steps: int = 32,
                         method: str = "gausslegendre", internal_batch_size: int | None = None) -> torch.Tensor:
    if steps < 1:
        raise SgtlabError(f"ig steps must be >= 1, got {steps}")
    return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                                                method=method, internal_batch_size=internal_batch_size)
