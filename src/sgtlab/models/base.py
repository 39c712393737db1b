from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.registry import Registry

# name -> constructor(in_channels, num_classes[, input_size]) -> nn.Module (without normalisation).
# A constructor that takes `input_size` (H, W) adapts to it, or raises SgtlabError naming the sizes it
# takes; a body built for one size only sets `body.input_size` and `body.sizes` (words).
MODELS: Registry[Callable[..., nn.Module]] = Registry("model", group="sgtlab.models")
register_model = MODELS.register


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class InputSizeCheck:
    """A forward pre-hook: images of another size than the model was built for are a one-line
    error naming the model and the sizes it takes (instead of torch's shape mismatch deep inside)."""

    def __init__(self, name: str, size: tuple[int, int], sizes: str):
        self.name, self.size, self.sizes = name, tuple(size), sizes

    def __call__(self, module, args):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.ndim == 4 and tuple(x.shape[-2:]) != self.size:
            h, w = x.shape[-2:]
            raise SgtlabError(f"{self.name} was built for {self.size[0]}x{self.size[1]} images, got {h}x{w}: give it "
                              f"{self.size[0]}x{self.size[1]} images or build it for {h}x{w} "
                              f"(input_size=({h}, {w}); sgtlab train builds it for its data set); "
                              f"{self.name} takes {self.sizes}")


def check_size(name: str, input_size, ok: bool, sizes: str) -> tuple[int, int]:
    """`input_size` as (H, W), or a one-line error when the model cannot take it."""
    try:
        h, w = (int(input_size), int(input_size)) if isinstance(input_size, int) else map(int, input_size)
    except (TypeError, ValueError):
        raise SgtlabError(f"{name}: input_size must be (H, W), got {input_size!r}") from None
    if not ok(h, w):
        raise SgtlabError(f"{name} cannot take {h}x{w} images; it takes {sizes}")
    return h, w


def build_model(name: str, in_channels: int = 1, num_classes: int = 10,
                mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
                input_size: Sequence[int] | int | None = None) -> nn.Sequential:
    """`Sequential(Normalize, body)`; the state-dict keys are `norm.*` and `body.*`.

    `input_size` (H, W): the image size, for models whose layers depend on it (the small CNNs, the
    vision transformer); None builds them for their original size (28 x 28 for the MNIST CNNs)."""
    ctor = MODELS.get(name)
    kw = {}
    if input_size is not None and "input_size" in inspect.signature(ctor).parameters:
        kw["input_size"] = input_size
    body = ctor(in_channels=in_channels, num_classes=num_classes, **kw)
    model = nn.Sequential()
    model.add_module("norm", Normalize(mean, std))
    model.add_module("body", body)
    if getattr(body, "input_size", None) is not None:
        model.register_forward_pre_hook(InputSizeCheck(name, body.input_size, getattr(body, "sizes", "one size")))
    return model
