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
SALIENCY: Registry[SaliencyFn] = Registry("saliency method")
register_saliency = SALIENCY.register


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
            a = fn(model, xb.detach().requires_grad_(True), tb, **options).detach()
            out.append(a.abs().sum(1) if reduce else a)
    if not out:
        shape = (0, *x.shape[2:]) if reduce else tuple(x.shape)
        return torch.empty(shape, device=x.device)
    return torch.cat(out).to(x.device)
