from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from sgtlab.registry import Registry

# name -> constructor(in_channels, num_classes) -> nn.Module (without normalisation)
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(name: str, in_channels: int = 1, num_classes: int = 10,
                mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> nn.Sequential:
    """`Sequential(Normalize, body)`; the state-dict keys are `norm.*` and `body.*`."""
    body = MODELS.get(name)(in_channels=in_channels, num_classes=num_classes)
    model = nn.Sequential()
    model.add_module("norm", Normalize(mean, std))
    model.add_module("body", body)
    return model
