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

from sgtlab.models.base import InputSizeCheck
from sgtlab.models.hooks import global_forward_hooks


def input_checks(model: nn.Module) -> list:
    """The root's `InputSizeCheck` pre-hooks: sgtlab's own, stateless checks that change no value.
    A fast path that runs the layers by hand runs them itself (`run_input_checks`), so they do not
    make a model ineligible."""
    return [h for h in model._forward_pre_hooks.values() if isinstance(h, InputSizeCheck)]


def run_input_checks(model: nn.Module, x) -> None:
    """What `model(x)` would check first (a one-line error for a wrong image size)."""
    for check in input_checks(model):
        check(model, (x,))


def has_forward_hooks(model: nn.Module) -> bool:
    """True when the global registry or any submodule of `model` (itself included) has a forward
    hook or pre-hook, or a backward hook, other than the root's input-size checks: then only
    `model(x)` computes what the user registered, and the fast paths step aside."""
    if global_forward_hooks():
        return True
    checks = input_checks(model)
    for m in model.modules():
        pre = [h for h in m._forward_pre_hooks.values() if not (m is model and h in checks)]
        if m._forward_hooks or pre or m._backward_hooks or m._backward_pre_hooks:
            return True
    return False


has_hooks = has_forward_hooks  # the name the training-time saliency pass uses
