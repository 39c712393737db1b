"""Whether PyTorch hooks are registered: the tests the fast paths share (`sgtlab.fast.eligibility`)
and that the models' own fast layers (`sgtlab.models.layers`) apply to themselves. Here, beside the
models, so that a layer need not import `sgtlab.fast` (which imports the models)."""
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
