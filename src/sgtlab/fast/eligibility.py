"""When a fast path may replace `model(x)`.

Fast paths that run a model's layers themselves (local AOPC recomputation, the shared-prefix
saliency pass) skip the `__call__` of the root and of nested containers, and so any forward hook or
pre-hook registered there: a model with a pre-hook that normalises its input would be scored as a
different function. They refuse such models. Hooks registered globally
(`torch.nn.modules.module.register_module_forward_hook` / `..._pre_hook`) run on every module, so
they make every model ineligible.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _module

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")
_GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks")


def global_forward_hooks() -> bool:
    """True when a forward hook or pre-hook is registered for every module."""
    return any(getattr(_module, name, None) for name in _GLOBAL_HOOK_DICTS)


def module_has_forward_hooks(m: nn.Module) -> bool:
    """True when `m` itself (not its children) has a forward hook or pre-hook."""
    return any(getattr(m, name, None) for name in _HOOK_DICTS)


def has_forward_hooks(model: nn.Module) -> bool:
    """True when any submodule of `model` (itself included) or the global registry has a forward
    hook or pre-hook: then only `model(x)` computes what the user registered."""
    return global_forward_hooks() or any(module_has_forward_hooks(m) for m in model.modules())
