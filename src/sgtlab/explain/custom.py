"""Saliency methods beyond the registered names, as captum users have them: any captum attribution
class (`captum.attr.DeepLift`), a captum attribution object (`LayerGradCam(model, model.conv)`), a
dotted name of either (`captum.attr.DeepLift`, `mypackage.mymodule.my_method`, for `sgtlab explain
--methods` and presets), or a callable `(model, x, target) -> maps` (N x H x W or N x C x H x W).
Each becomes a saliency method registered under a label (its dotted name, class name or function
name), so every metric, sanity check and figure takes it. Attributions at a layer's resolution
(Grad-CAM) are upsampled bilinearly to the image's.

An object bound to one model is rebound for another (the sanity checks' randomised copies): a
captum layer attribution finds its layer there by the layer's name in the first model.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.errors import SgtlabError


def _attribution_base():
    from captum.attr import Attribution

    return Attribution


def fit_to_input(a: Any, x: torch.Tensor, label: str) -> torch.Tensor:
    """An attribution as N x C x H x W at the images' size (a map N x H x W gets its channel axis;
    a coarser one, Grad-CAM's, is upsampled bilinearly)."""
    if isinstance(a, tuple) and len(a) == 1:
        a = a[0]
    if not isinstance(a, torch.Tensor) or a.ndim not in (3, 4) or a.shape[0] != x.shape[0]:
        raise SgtlabError(f"saliency method {label!r} must return maps N x H x W or N x C x H x W for {len(x)} "
                          f"images, got {getattr(a, 'shape', type(a).__name__)}")
    a = a.unsqueeze(1) if a.ndim == 3 else a
    if tuple(a.shape[-2:]) != tuple(x.shape[-2:]):
        a = F.interpolate(a.float(), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return a


def rebind(attribution, model: nn.Module):
    """The captum attribution object for `model`: itself when it is bound to it, else a new one of
    its class on `model` (a layer attribution on the layer of the same name)."""
    if getattr(attribution, "forward_func", None) is model:
        return attribution
    layer = getattr(attribution, "layer", None)
    if layer is None:
        return type(attribution)(model)
    source = getattr(attribution, "forward_func", None)
    name = next((n for n, m in source.named_modules() if m is layer), None) if isinstance(source, nn.Module) else None
    modules = dict(model.named_modules())
    if name is None or name not in modules:
        raise SgtlabError(f"{type(attribution).__name__}: its layer is not found by name in the model to explain; "
                          f"build it on that model")
    return type(attribution)(model, modules[name])


def method_fn(obj: Any, label: str) -> Callable[..., torch.Tensor]:
    """A saliency function `(model, x, target, **options) -> N x C x H x W` for a captum attribution
    class or object, or a callable `(model, x, target)`."""
    Attribution = _attribution_base()
    if isinstance(obj, type) and issubclass(obj, Attribution):
        def fn(model, x, target, **options):
            try:
                attr = obj(model)
            except TypeError as e:
                raise SgtlabError(f"{obj.__name__} needs more than the model to be built ({e}); pass an instance, "
                                  f"e.g. {obj.__name__}(model, layer)") from None
            return fit_to_input(attr.attribute(x, target=target, **options), x, label)
    elif isinstance(obj, Attribution):
        def fn(model, x, target, **options):
            return fit_to_input(rebind(obj, model).attribute(x, target=target, **options), x, label)
    elif callable(obj):
        def fn(model, x, target, **options):
            return fit_to_input(obj(model, x, target, **options), x, label)
    else:
        raise SgtlabError(f"a saliency method is a name, a captum attribution (class or object) or a callable "
                          f"(model, x, target) -> maps; got {type(obj).__name__}")
    fn.__doc__ = f"{label}: {getattr(obj, '__doc__', '') or ''}".strip().splitlines()[0]
    return fn


def label_of(obj: Any) -> str:
    if isinstance(obj, type):
        return obj.__name__
    name = getattr(obj, "__name__", None) or type(obj).__name__
    return "lambda" if name == "<lambda>" else name


def import_dotted(name: str) -> Any:
    """`package.module.attr` or `package.module:attr` -> the object, or None when `name` is not
    one (no dot/colon, or nothing importable by that name)."""
    module, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not sep or not module or not attr:
        return None
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None
