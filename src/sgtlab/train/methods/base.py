"""What a training method is (`Method`, its options `MethodConfig`, the per-step `StepContext`) and
the registry of methods by name (`METHODS`, `register_method`); the methods themselves are the
package's other modules, and plug-ins register theirs the same way."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.registry import Registry


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class MethodConfig:
    """Hyper-parameters of all methods (each method reads the ones it needs); see SPEC.md."""

    k: float | None = _opt(None, "fraction of pixels masked (default: 0.5 for sgt/sga, 0.1 for asgt)")
    lam: float = _opt(1.0, "weight lambda of the KL term")
    saliency: str = _opt("abs", "rank pixels by absolute or signed gradient", choices=("abs", "signed"))
    saliency_target: str = _opt("true", "saliency of the true or the predicted class", choices=("true", "pred"))
    mask_fill: str = _opt("image", "masked pixels drawn uniformly in each image's per-channel [min, max] "
                          "('image') or in [mask_low, mask_high] ('fixed')", choices=("image", "fixed"))
    mask_low: float = _opt(0.0, "lower end of the fixed mask range")
    mask_high: float = _opt(1.0, "upper end of the fixed mask range")
    train_eps: float = _opt(0.3, "L-inf budget of training attacks (pixel units)")
    train_steps: int = _opt(10, "PGD steps of training attacks")
    train_alpha: float | None = _opt(None, "PGD step size of training attacks (default 2.5 * eps / steps)")
    fgsm_alpha: float | None = _opt(None, "AT-FGSM step size (default 1.25 * eps with random start, else eps)")
    eps_warmup: float = _opt(0.3, "fraction of the training steps over which the training attacks' budget "
                             "(train-eps; SCAAT's eps-irr) and step size ramp linearly from 0 to their values; "
                             "0: the full budget from the first step")
    random_start: bool = _opt(True, "random start for AT-FGSM (Wong et al. 2020); --no-random-start for plain FGSM")
    clean_loss: bool = _opt(False, "AT-FGSM / AT-PGD: add CE on the clean input to the adversarial CE")
    q0: float = _opt(0.1, "SCAAT: initial per-sample fraction of low-saliency pixels attacked")
    gamma: float = _opt(0.01, "SCAAT: step of the per-sample ratio update")
    q_min: float = _opt(0.05, "SCAAT: lower bound of the ratio")
    q_max: float = _opt(0.9, "SCAAT: upper bound of the ratio")
    warmup_epochs: int = _opt(1, "SCAAT: epochs before the ratio starts adapting")
    eps_irr: float = _opt(1.0, "SCAAT: L-inf budget on the low-saliency support (1.0: any value in [0, 1])")

    def validate(self) -> "MethodConfig":
        from sgtlab.validate import check_fields

        check_fields(self, {"train_steps": (None, 100_000)})  # types and finite values (NaN fails every `<`)
        if self.k is not None and not 0 < self.k < 1:
            raise SgtlabError(f"k must be in (0, 1), got {self.k}")
        if self.lam < 0:
            raise SgtlabError(f"lambda must be >= 0, got {self.lam}")
        if self.train_eps < 0 or self.eps_irr < 0:
            raise SgtlabError("eps must be >= 0")
        from sgtlab.data.budgets import check_unit_eps

        check_unit_eps("train-eps", self.train_eps)  # pixel units: 8 for 8/255 is refused
        check_unit_eps("eps-irr", self.eps_irr)
        if not 0 <= self.eps_warmup <= 1:
            raise SgtlabError(f"eps-warmup must be in [0, 1] (a fraction of the training steps), got {self.eps_warmup}")
        if self.train_steps < 1:
            raise SgtlabError(f"train-steps must be >= 1, got {self.train_steps}")
        for name in ("train_alpha", "fgsm_alpha"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise SgtlabError(f"{name.replace('_', '-')} must be > 0, got {v}")
        if not self.mask_low < self.mask_high:
            raise SgtlabError("mask-low must be below mask-high")
        if not 0 <= self.q_min <= self.q0 <= self.q_max <= 1:
            raise SgtlabError("SCAAT needs 0 <= q-min <= q0 <= q-max <= 1")
        if self.gamma < 0 or self.warmup_epochs < 0:
            raise SgtlabError("gamma and warmup-epochs must be >= 0")
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MethodConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            from sgtlab.validate import list_names

            raise SgtlabError(f"unknown method options: {list_names(unknown)}")
        return cls(**d)


@dataclass
class StepContext:
    """What a method may need beyond the batch."""

    idx: torch.Tensor            # dataset indices of the batch (on the device)
    epoch: int                   # 0-based
    step: int                    # global iteration counter
    state: dict[str, torch.Tensor]  # per-method persistent state, saved in checkpoints
    module: nn.Module            # the underlying model (not the DDP wrapper): use it for attack and
                                 # saliency passes, whose gradients must not be synchronised
    total_steps: int = 0         # the run's steps (epochs x global batches, as `step` counts), for schedules
                                 # such as the eps warm-up (`_shared.warmup_factor`); 0: unknown, no warm-up


Loss = tuple[torch.Tensor, dict[str, torch.Tensor]]
MethodFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, MethodConfig, StepContext], Loss]


@dataclass(frozen=True)
class Method:
    name: str
    fn: MethodFn
    init_state: Callable[[int, MethodConfig, torch.device], dict[str, torch.Tensor]] | None = None
    description: str = ""


class _MethodRegistry(Registry[Method]):
    def add_entry_point(self, name: str, obj) -> None:
        """A plug-in's method function (entry-point group `sgtlab.methods`), with its `init_state`."""
        if name not in self._items:
            register_method(name, getattr(obj, "init_state", None))(obj)


METHODS: Registry[Method] = _MethodRegistry("training method", group="sgtlab.methods")


def register_method(name: str, init_state=None):
    def deco(fn: MethodFn) -> MethodFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        METHODS.register(name)(Method(name, fn, init_state, doc[0] if doc else ""))
        return fn

    return deco
