"""Input x gradient (Shrikumar et al. 2016), through captum's `InputXGradient`."""
from __future__ import annotations

import torch
from captum.attr import InputXGradient

from sgtlab.explain.base import register_saliency


@register_saliency("input-x-grad")
def input_x_grad(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return InputXGradient(model).attribute(x, target=target)
