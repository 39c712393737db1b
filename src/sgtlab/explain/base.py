"""The saliency-map registry and `saliency_maps`, the one entry point every caller uses.

A method is a function `(model, x, target, **options) -> attribution N x C x H x W` registered by
name; `saliency_maps` checks the input, runs it in eval mode on batches, and reduces the result to
one value per pixel (`|s|` summed over channels, SPEC "Saliency maps and their quality").
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from sgtlab.device import eval_batch_size
from sgtlab.errors import SgtlabError
from sgtlab.registry import Registry

SaliencyFn = Callable[..., torch.Tensor]


class _SaliencyRegistry(Registry[SaliencyFn]):
    """Registered names, and methods given as objects or dotted names (`captum.attr.DeepLift`,
    `mypackage.methods.my_map`): those are kept apart (`custom`), found by `get` under their label
    but not listed among the registered names."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.custom: dict[str, SaliencyFn] = {}

    def get(self, name: str) -> SaliencyFn:
        if isinstance(name, str) and name in self.custom:
            return self.custom[name]
        if isinstance(name, str) and name not in self._items and ("." in name or ":" in name):
            from sgtlab.explain.custom import import_dotted, method_fn

            obj = import_dotted(name)
            if obj is not None:
                self.custom[name] = method_fn(obj, name)
                return self.custom[name]
        return super().get(name)


SALIENCY: Registry[SaliencyFn] = _SaliencyRegistry("saliency method")
register_saliency = SALIENCY.register


def saliency_method(method, label: str | None = None) -> str:
    """The registry name of `method`: a name (registered or dotted) as it is; a captum attribution
    (class or object) or a callable `(model, x, target) -> maps` registered under its label (class
    or function name; a later object of the same label replaces an earlier one of this kind)."""
    if isinstance(method, str):
        SALIENCY.get(method)
        return method
    from sgtlab.explain.custom import label_of, method_fn

    label = label or label_of(method)
    if label in SALIENCY:
        raise SgtlabError(f"saliency method label {label!r} is a registered method's name; give the object another "
                          f"name (methods={{'my-label': obj}})")
    SALIENCY.custom[label] = method_fn(method, label)  # a later object of the same label replaces it
    return label


def saliency_names() -> list[str]:
    return SALIENCY.names()


@contextmanager
def prepared(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the attribution (gradients w.r.t. the input only: no
    weight-gradient work, parameter `.grad`s untouched); every submodule's mode and every
    parameter's `requires_grad` are given back afterwards, and grad mode is on even when the
    caller is inside `torch.no_grad()`."""
    from sgtlab.device import eval_mode

    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with eval_mode(model), torch.enable_grad():
            yield model
    finally:
        for p, was in flags:
            p.requires_grad_(was)


from sgtlab.device import model_device as _device  # noqa: E402  (the one device helper)


def check_images(x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise SgtlabError(f"images must be a float tensor N x C x H x W, got {getattr(x, 'shape', type(x).__name__)}")


def _check_options(method: str, fn: SaliencyFn, options: dict) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return  # a captum attribution or a callable: its own `attribute` checks its options
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SgtlabError(f"saliency method {method!r} takes no option {', '.join(unknown)}; "
                          f"its options: {', '.join(allowed) or 'none'}")


def saliency_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, method: str = "grad",
                  *, batch_size: int | None = None, reduce: bool = True, **options) -> torch.Tensor:
    """Saliency maps of `method` (`grad`, `input-x-grad`, `smoothgrad`, `ig`) for images `x`
    (N x C x H x W in [0, 1]) and target labels `y` (None: the predicted class).

    Returns N x H x W (`|s|` summed over channels; `reduce=False`: the raw N x C x H x W
    attribution), detached, on `x`'s device. The model's mode and parameter flags are restored.
    `options` go to the method (e.g. `samples`, `noise` for smoothgrad; `steps` for ig)."""
    method = saliency_method(method)
    fn = SALIENCY.get(method)
    _check_options(method, fn, options)
    check_images(x)
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (len(x),)):
        raise SgtlabError(f"labels must be a tensor of shape ({len(x)},), got {getattr(y, 'shape', y)}")
    dev = _device(model)
    batch_size = eval_batch_size(batch_size, dev)
    out = []
    with prepared(model):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(dev)
            if y is None:
                with torch.no_grad():
                    tb = model(xb).argmax(1)
            else:
                tb = y[i:i + batch_size].to(dev)
            # requires_grad set here (on a detached copy) rather than by captum, which warns each time
            # per-image tensor options (captum's `baselines` of the images' shape) go by batch too
            opts = {k: (v[i:i + batch_size] if isinstance(v, torch.Tensor) and v.shape == x.shape else v)
                    for k, v in options.items()}
            a = fn(model, xb.detach().requires_grad_(True), tb, **opts).detach()
            out.append(a.abs().sum(1) if reduce else a)
    if not out:
        shape = (0, *x.shape[2:]) if reduce else tuple(x.shape)
        return torch.empty(shape, device=x.device)
    return torch.cat(out).to(x.device)
