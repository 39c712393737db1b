"""Training methods, one function each, registered by name.

A method is `fn(model, x, y, cfg, ctx) -> (loss, parts)`: `loss` is the scalar to backpropagate,
`parts` a dict of detached scalar tensors logged per epoch (e.g. {"ce": ..., "kl": ...}); they are
averaged on the device and read once per epoch, so a method never forces a host sync.
A method with state kept across epochs (SCAAT's per-sample ratio) also gives `init_state`, and the
state lives in `ctx.state`, saved in every checkpoint. A new method is one function + one decorator.
"""
from sgtlab.train.methods.base import (METHODS, Loss, Method, MethodConfig, MethodFn, StepContext,  # noqa: F401
                                      register_method)
# importing each method's module registers it (st first: the order of `METHODS`)
from sgtlab.train.methods import st, sgt, adversarial, sga, asgt, scaat  # noqa: F401,I001
