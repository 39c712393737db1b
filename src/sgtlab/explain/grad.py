"""Vanilla gradient (Simonyan et al. 2014): d f(x)[target] / dx, through captum's `Saliency`."""
from __future__ import annotations

import torch
from captum.attr import Saliency

from sgtlab.explain.base import register_saliency


@register_saliency("grad")
def grad(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # abs=False: the signed gradient; saliency_maps takes |s| itself after the channel-wise view.
    return Saliency(model).attribute(x, target=target, abs=False)
