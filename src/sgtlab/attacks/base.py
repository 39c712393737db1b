"""The common attack interface, the attack registry and the small helpers every attack shares.

An attack is an object with `perturb(model, x, y, eps, ...)` (the work, no checks, model already in
eval mode) and `__call__(model, x, y, eps)` (checks the input once, puts the model in eval mode,
restores every module's mode afterwards). Gradients are taken with `torch.autograd.grad` with
respect to the input only, so parameter `.grad` fields are never touched.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.device import eval_mode  # noqa: F401  (re-exported: the one eval-mode context)
from sgtlab.errors import SgtlabError
from sgtlab.attacks.targets import TorchattacksModes, torchattacks_signature
from sgtlab.registry import Registry

Eps = float | torch.Tensor

ATTACKS: Registry[Callable[..., "Attack"]] = Registry("attack", group="sgtlab.attacks")
register_attack = ATTACKS.register


def build_attack(name: str, **params) -> "Attack":
    """An attack by registry name (`fgsm`, `pgd`, `mifgsm`, `apgd-ce`, `apgd-dlr`, `square`, `ensemble`)."""
    return ATTACKS.get(name)(**params)


def attack_names() -> list[str]:
    return ATTACKS.names()


def check_eps(eps: Eps, n: int) -> None:
    if isinstance(eps, torch.Tensor):
        if eps.ndim > 1 or (eps.ndim == 1 and len(eps) not in (1, n)):
            raise SgtlabError(f"eps must be a number or a tensor of shape ({n},), got shape {tuple(eps.shape)}")
        if bool((eps < 0).any()):
            raise SgtlabError("eps must be >= 0")
    elif not isinstance(eps, (int, float)) or eps != eps or eps < 0:
        raise SgtlabError(f"eps must be a number >= 0, got {eps!r}")


def check_inputs(x: torch.Tensor, y: torch.Tensor, eps: Eps) -> None:
    """Shape, label and range checks: one min/max reduction, one host sync."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise SgtlabError(f"images must be a float tensor N x C x H x W, got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
        raise SgtlabError(f"labels must be a tensor of shape ({len(x)},), got {getattr(y, 'shape', type(y))}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise SgtlabError(f"labels must be integer class indices, got {y.dtype} (use y.long())")
    check_eps(eps, len(x))
    if isinstance(eps, (int, float)) and eps > 1:
        raise SgtlabError(f"eps must be in [0, 1] (pixel units: {eps:g}/255 is {eps / 255:.6g}), got {eps:g}")
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = torch.stack([lo, hi]).tolist()
        if not (0.0 <= lo and hi <= 1.0):  # also rejects NaN
            raise SgtlabError(f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise SgtlabError(f"{name} must be an integer >= 1, got {value!r}")


def as_eps(eps: Eps, x: torch.Tensor) -> Eps:
    """A float stays a float (exactly as torchattacks computes); a per-sample tensor becomes N x 1 x 1 x 1."""
    if isinstance(eps, torch.Tensor):
        return eps.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return float(eps)


def rows(v: Eps | None, idx: torch.Tensor) -> Eps | None:
    """Select samples of a per-sample value (a float or None passes through)."""
    if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] > 1:
        return v[idx]
    return v


def ce_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            targeted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, d mean-CE / d x). Mean reduction as torchattacks (sign steps do not see the scale);
    `targeted`: y are target labels and the loss is -CE (a step towards them), as torchattacks."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    grad, = torch.autograd.grad(-loss if targeted else loss, x)
    return logits.detach(), grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Eps) -> torch.Tensor:
    """Onto the L-inf eps-ball around x, then [0, 1] (torchattacks' order and arithmetic)."""
    if isinstance(eps, torch.Tensor):
        delta = torch.max(torch.min(x_adv - x, eps), -eps)
    else:
        delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1).detach()


def uniform_delta(x: torch.Tensor, eps: Eps, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in [-eps, eps]; a float eps draws exactly as torchattacks
    (`torch.empty_like(x).uniform_(-eps, eps)` on the global RNG), so seeded runs agree."""
    if isinstance(eps, torch.Tensor):
        return torch.empty_like(x).uniform_(-1, 1, generator=generator) * eps
    return torch.empty_like(x).uniform_(-eps, eps, generator=generator)


#: eps of an attack bound to a model without an `eps` (torchattacks' default)
DEFAULT_EPS = 8 / 255


def _bind_model_and_eps(init):
    """Let every attack's constructor also take torchattacks' form: a model as the first argument,
    then eps and the attack's other arguments in torchattacks' positional order and names (the
    class's `torchattacks_order` and `torchattacks_names`: `PGD(model, 8/255, 2/255, 10)`,
    `Square(model, n_queries=300)`) and `targeted=True` (the labels given are target labels),
    binding them so the attack is called as `atk(x, y)`."""
    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        model, cls = None, type(self)
        targeted = kwargs.pop("targeted", False)
        if args and isinstance(args[0], nn.Module):
            model, args = args[0], args[1:]
            order = cls.torchattacks_order  # empty (a plug-in that names none): its own order
            if order and len(args) > len(order):
                raise SgtlabError(f"{cls.__name__}(model, {', '.join(order)}) takes at most {len(order)} values "
                                  f"after the model, got {len(args)}")
            for name, value in zip(order, args):
                if name in kwargs:
                    raise SgtlabError(f"{cls.__name__}: {name} given twice (by position and by name)")
                kwargs[name] = value
            args = args if not order else ()
            for theirs, ours in getattr(cls, "torchattacks_names", {}).items():
                if theirs in kwargs:
                    value = kwargs.pop(theirs)
                    if ours is not None:  # None: an argument without effect here (verbose)
                        kwargs[ours] = value
            norm = kwargs.pop("norm", "Linf")
            if norm != "Linf":
                raise SgtlabError(f"{cls.__name__}: sgtlab's attacks are L-inf (norm='Linf'), got norm={norm!r}")
        eps = kwargs.pop("eps", None)
        init(self, *args, **kwargs)
        if targeted:
            self.set_mode_targeted_by_label()
        if model is not None or eps is not None:
            if model is None:
                raise SgtlabError(f"{type(self).__name__}(eps=...) binds an eps to a model: pass the model first, "
                                  f"{type(self).__name__}(model, eps=...)")
            check_eps(DEFAULT_EPS if eps is None else eps, 1 if not isinstance(eps, torch.Tensor) else len(eps))
            self._model, self._eps = model, DEFAULT_EPS if eps is None else eps

    wrapped._binds = True
    return wrapped


class Attack(TorchattacksModes):
    """Base class: subclasses set `name` and implement `perturb`.

    Two ways to call any attack: `Attack(**params)(model, x, y, eps)`, or torchattacks' way,
    `Attack(model, eps=..., **params)(x, y)` (eps defaults to 8/255 as in torchattacks), with
    torchattacks' modes: `targeted=True` or `set_mode_targeted_by_label()` (the labels given are the
    targets), `set_mode_targeted_random()`, `set_mode_targeted_least_likely(kth_min=1)`,
    `set_mode_targeted_by_function(f)` (`f(x, y) -> targets`), `set_mode_default()`; and
    `set_normalization_used(mean, std)` for a model that expects normalised inputs (the attack then
    takes and returns normalised images, as torchattacks' does)."""

    _model: nn.Module | None = None
    _eps: Eps | None = None
    #: torchattacks' positional order after the model, and its names for our arguments (None: no effect)
    torchattacks_order: tuple[str, ...] = ()
    torchattacks_names: dict[str, str | None] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_binds", False):
            cls.__init__ = _bind_model_and_eps(init)
            cls.__init__.__signature__ = torchattacks_signature(cls, init, DEFAULT_EPS)  # help(PGD)

    name = "attack"
    #: True when the attack can stop early per sample (the sweep asks for it: fewer gradient steps)
    supports_early_stop = False
    #: True when `perturb` takes `init_delta`, its random start (the sweep draws it for the whole set)
    takes_init_delta = False
    #: True when `perturb` takes `clean_grad`, the input gradient at the clean images: its first step
    #: does not depend on eps, so the sweep computes it once for the whole eps grid
    uses_clean_grad = False
    #: True when `perturb` draws no global random numbers (given the sweep's `init_delta`) and keeps no
    #: state between calls: the sweep may then run its batches side by side (`sgtlab.fast.batch_threads`)
    thread_safe = False
    #: True when `perturb` takes `fooled` (see `iterate`): the samples its own forward passes showed
    #: misclassified, which need no verdict pass when it attacked the model that judges
    reports_fooled = False

    def __init__(self):
        """No parameters; wrapped below, so a plug-in without its own `__init__` binds too."""

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, **kw) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, *args, check: bool = True, **kw) -> torch.Tensor:
        """`(model, x, y, eps)`, or `(x, y)` for an attack bound to a model (`PGD(model, eps=...)`)."""
        if args and isinstance(args[0], nn.Module):
            if len(args) == 3 and "eps" in kw:
                args = (*args, kw.pop("eps"))
            if len(args) != 4:
                raise SgtlabError(f"call an attack as attack(model, x, y, eps), got {len(args)} arguments")
            return self._attack(*args, check=check, **kw)
        if self._model is None:
            raise SgtlabError(f"this {type(self).__name__} is not bound to a model: call it as attack(model, x, y, eps) "
                              f"or build it as {type(self).__name__}(model, eps=...) and call attack(x, y)")
        if len(args) != 2:
            raise SgtlabError(f"call a bound attack as attack(x, y), got {len(args)} arguments")
        return self._attack(self._model, *args, kw.pop("eps", self._eps), check=check, **kw)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *, check: bool = True,
             **kw) -> torch.Tensor:
        norm = self._normalization
        if norm is not None:  # torchattacks: normalised images in, the [0, 1] image attacked, normalised out
            from sgtlab.attacks.targets import Normalized, inverse_normalize, normalize

            if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] != norm[0].shape[1]:
                raise SgtlabError(f"set_normalization_used has {norm[0].shape[1]} channels, the images {x.shape[1]}")
            adv = self._attack_plain(Normalized(model, *norm), model, inverse_normalize(x.detach(), *norm), y, eps,
                                     check, **kw)
            return normalize(adv, *norm)
        return self._attack_plain(model, model, x, y, eps, check, **kw)

    def _attack_plain(self, model: nn.Module, inner: nn.Module, x, y, eps, check: bool, **kw) -> torch.Tensor:
        if check:
            check_inputs(x, y, eps)
        if len(x) == 0:
            return x.detach().clone()
        with eval_mode(inner):
            if check:
                with torch.no_grad():
                    classes = model(x[:1]).shape[1]
                low, top = (int(v) for v in torch.aminmax(y))
                if low < 0 or top >= classes:
                    raise SgtlabError(f"labels must be class indices in [0, {classes - 1}] (the model has {classes} "
                                      f"outputs), got values in [{low}, {top}]")
            if self.targeted:
                y = self._targets(model, x.detach(), y.detach())
                kw["targeted"] = True
            return self.perturb(model, x.detach(), y.detach(), eps, **kw).detach()

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


Attack.__init__ = _bind_model_and_eps(Attack.__init__)  # `__init_subclass__` wraps the subclasses' own


def iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, steps: int, step,
            state: dict, early_stop: bool = False, first_grad: torch.Tensor | None = None,
            targeted: bool = False, fooled: torch.Tensor | None = None) -> torch.Tensor:
    """The loop shared by the iterative gradient attacks.

    `step(x_adv, grad, x, state) -> x_adv` may update `state` (per-sample tensors with N rows, or
    scalars). With `early_stop`, a sample leaves the batch as soon as the logits of the forward pass
    the step needs anyway show it misclassified: its current (adversarial) image is kept, and the
    remaining samples run on a smaller batch. The images of samples never fooled are exactly those
    of the full loop (per-sample computation in eval mode), so early stopping is never weaker.
    `first_grad`: the gradient at `x_adv` for the first step, when the caller has it already (the
    sweep passes it only for clean-correct samples, so the first step needs no early-stop check).
    `targeted`: y are target labels, each step descends their CE, and a sample is done once it is
    classified as its target.
    `fooled` (early stop only): a bool tensor of N rows, set True for each sample whose returned image
    the forward of `model` showed misclassified (done); the caller needs no verdict pass for those
    when `model` is the model it judges by.
    """
    if not early_stop:
        for i in range(steps):
            grad = first_grad if (i == 0 and first_grad is not None) else ce_grad(model, x_adv, y, targeted)[1]
            x_adv = step(x_adv, grad, x, state)
        return x_adv
    out = torch.empty_like(x)
    idx = torch.arange(len(x), device=x.device)
    for i in range(steps):
        if i == 0 and first_grad is not None:
            x_adv = step(x_adv, first_grad, x, state)
            continue
        logits, grad = ce_grad(model, x_adv, y, targeted)
        still = (logits.argmax(1) != y) if targeted else (logits.argmax(1) == y)
        if not bool(still.all()):  # one host sync per step buys skipping every fooled sample
            done = ~still
            out[idx[done]] = x_adv[done]
            if fooled is not None:
                fooled[idx[done]] = True
            keep = still.nonzero().squeeze(1)
            idx, x, y, x_adv, grad = idx[keep], x[keep], y[keep], x_adv[keep], grad[keep]
            for k, v in state.items():
                state[k] = rows(v, keep)
            if len(idx) == 0:
                return out
        x_adv = step(x_adv, grad, x, state)
    out[idx] = x_adv
    return out
