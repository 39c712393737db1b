"""torchattacks' targeted modes and input normalisation, with its arithmetic and order of random
draws, so a seeded targeted or normalised attack gives torchattacks 3.5.1's images:

- target labels: `random_targets` (one `torch.rand([1])` per sample, in order), `least_likely_targets`
  (the k-th smallest logit among the other classes), or a user's function `(x, y) -> targets`;
- `Normalized(model, mean, std)`: the model that takes [0, 1] images when `model` expects normalised
  ones (`set_normalization_used`), `(x - mean) / std` in front.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from sgtlab.errors import SgtlabError


@torch.no_grad()
def random_targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A uniformly random class other than y, per sample (torchattacks' `get_random_target_label`)."""
    classes = logits.shape[-1]
    out = torch.zeros_like(y)
    for i in range(y.shape[0]):
        others = list(range(classes))
        others.remove(y[i])
        t = (len(others) * torch.rand([1])).long()
        out[i] = others[t]
    return out.long()


@torch.no_grad()
def least_likely_targets(logits: torch.Tensor, y: torch.Tensor, kth_min: int = 1) -> torch.Tensor:
    """The class of the `kth_min`-th smallest logit among those other than y (torchattacks'
    `get_least_likely_label`)."""
    classes = logits.shape[-1]
    out = torch.zeros_like(y)
    for i in range(y.shape[0]):
        others = list(range(classes))
        others.remove(y[i])
        _, t = torch.kthvalue(logits[i][others], kth_min)
        out[i] = others[t]
    return out.long()


def stats(values: Sequence[float] | torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """mean or std as a 1 x C x 1 x 1 tensor, as torchattacks' `set_normalization_used` keeps them."""
    t = torch.tensor(values) if not isinstance(values, torch.Tensor) else values.detach().cpu()
    n = len(t) if channels is None else channels
    return t.reshape(1, n, 1, 1)


class Normalized(nn.Module):
    """`model((x - mean) / std)`: what an attack on [0, 1] images calls when the model expects
    normalised inputs."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x, self.mean, self.std))


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.to(x.device)) / std.to(x.device)


def inverse_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return x * std.to(x.device) + mean.to(x.device)


def torchattacks_signature(cls, init, default_eps: float) -> inspect.Signature:
    """`(self, model=None, eps=8/255, <torchattacks' order>, *, <the rest>, targeted=False)`."""
    own = {n: p for n, p in inspect.signature(init).parameters.items() if n != "self"}
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("model", P.POSITIONAL_OR_KEYWORD, default=None)]
    for name in cls.torchattacks_order:
        mine = cls.torchattacks_names.get(name) or name
        if name in ("eps", "norm"):
            params.append(P(name, P.POSITIONAL_OR_KEYWORD, default=default_eps if name == "eps" else "Linf"))
        elif mine in own:
            params.append(P(name, P.POSITIONAL_OR_KEYWORD, default=own.pop(mine).default))
    kind = P.KEYWORD_ONLY if cls.torchattacks_order else P.POSITIONAL_OR_KEYWORD
    params += [P(n, kind, default=p.default) for n, p in own.items() if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
    if "eps" not in cls.torchattacks_order:
        params.append(P("eps", P.KEYWORD_ONLY, default=default_eps))
    if cls.supports_targeted:
        params.append(P("targeted", P.KEYWORD_ONLY, default=False))
    return inspect.Signature(params)


class TorchattacksModes:
    """torchattacks' targeted modes and `set_normalization_used` on an attack (`Attack` inherits
    them); `Attack._attack` applies them around `perturb`."""

    _target_mode: str = "default"   # default | label | random | least-likely | function
    _target_fn: Callable | None = None
    _kth_min: int = 1
    _normalization: tuple[torch.Tensor, torch.Tensor] | None = None
    #: whether `perturb` takes `targeted=True` (a step towards target labels)
    supports_targeted = False

    @property
    def targeted(self) -> bool:
        return self._target_mode != "default"

    def _set_target_mode(self, mode: str) -> None:
        if not self.supports_targeted:
            raise SgtlabError(f"{type(self).__name__} has no targeted mode; targeted attacks: FGSM, PGD, MIFGSM")
        self._target_mode = mode

    def set_mode_default(self) -> "Attack":
        """Untargeted: move away from the true labels."""
        self._target_mode, self._target_fn = "default", None
        return self

    def set_mode_targeted_by_label(self, quiet: bool = True) -> "Attack":
        """Targeted: the labels given to the call are the target labels."""
        self._set_target_mode("label")
        return self

    def set_mode_targeted_random(self, quiet: bool = True) -> "Attack":
        """Targeted: a uniformly random other class per image (drawn on torch's global RNG, as torchattacks)."""
        self._set_target_mode("random")
        return self

    def set_mode_targeted_least_likely(self, kth_min: int = 1, quiet: bool = True) -> "Attack":
        """Targeted: the class of the `kth_min`-th smallest logit among the other classes."""
        if not isinstance(kth_min, int) or kth_min < 1:
            raise SgtlabError(f"kth_min must be an integer >= 1, got {kth_min!r}")
        self._set_target_mode("least-likely")
        self._kth_min = kth_min
        return self

    def set_mode_targeted_by_function(self, target_map_function: Callable, quiet: bool = True) -> "Attack":
        """Targeted: `target_map_function(images, labels) -> target labels`."""
        if not callable(target_map_function):
            raise SgtlabError(f"target_map_function must be callable (images, labels) -> targets, "
                              f"got {type(target_map_function).__name__}")
        self._set_target_mode("function")
        self._target_fn = target_map_function
        return self

    def set_normalization_used(self, mean, std) -> "Attack":
        """The model expects inputs normalised by (mean, std) per channel: the attack takes and returns
        normalised images and attacks within eps of the [0, 1] image (torchattacks' semantics)."""
        mean, std = stats(mean), stats(std)
        if mean.shape != std.shape:
            raise SgtlabError(f"mean and std need one value per channel each, got {mean.shape[1]} and {std.shape[1]}")
        if bool((std <= 0).any()):
            raise SgtlabError("std must be > 0 in every channel")
        self._normalization = (mean, std)
        return self

    def _targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._target_mode == "label":
            return y
        if self._target_mode == "function":
            t = self._target_fn(x, y)
            if not isinstance(t, torch.Tensor) or t.shape != y.shape or t.dtype.is_floating_point:
                raise SgtlabError(f"the target function must return integer labels of shape {tuple(y.shape)}, "
                                  f"got {getattr(t, 'shape', type(t).__name__)}")
            return t.to(y.device).long()
        with torch.no_grad():
            logits = model(x)
        if self._target_mode == "random":
            return random_targets(logits, y).to(y.device)
        return least_likely_targets(logits, y, self._kth_min).to(y.device)
