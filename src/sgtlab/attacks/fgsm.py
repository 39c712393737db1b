"""FGSM (Goodfellow et al. 2015): `x + eps * sign(grad)`; with `random_start`, the fast-AT variant of
Wong et al. (2020): uniform start in the eps-ball, one step of `alpha`, projection."""
from __future__ import annotations

import torch
from torch import nn

from sgtlab.attacks.base import Attack, Eps, as_eps, ce_grad, project, register_attack, uniform_delta


@register_attack("fgsm")
class FGSM(Attack):
    """FGSM, as torchattacks' FGSM:

        FGSM(model, eps=8/255, *, random_start=False, alpha=None, targeted=False)
        x_adv = atk(x, y)                       # or FGSM()(model, x, y, eps)

    model: the `nn.Module` to attack (inputs in [0, 1]). eps: the L-inf budget in pixel units.
    random_start: Wong et al.'s fast-AT variant (uniform start, one step of `alpha`, default eps).
    targeted: the labels given are targets (a step down their cross-entropy).
    """

    name = "fgsm"
    supports_targeted = True
    torchattacks_order = ("eps",)

    def __init__(self, random_start: bool = False, alpha: float | None = None):
        self.random_start, self.alpha = random_start, alpha

    @property
    def uses_clean_grad(self) -> bool:
        return not self.random_start

    @property
    def thread_safe(self) -> bool:  # the random start draws from the global generator
        return not self.random_start

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *,
                clean_grad: torch.Tensor | None = None, targeted: bool = False, **_) -> torch.Tensor:
        eps = as_eps(eps, x)
        if not self.random_start:
            grad = ce_grad(model, x, y, targeted)[1] if (clean_grad is None or targeted) else clean_grad
            return torch.clamp(x + eps * grad.sign(), min=0, max=1)
        # open detail: default step alpha = eps (Wong et al. use 1.25 * eps; pass alpha to get it)
        alpha = eps if self.alpha is None else self.alpha
        x0 = torch.clamp(x + uniform_delta(x, eps), min=0, max=1)
        _, grad = ce_grad(model, x0, y, targeted)
        return project(x0 + alpha * grad.sign(), x, eps)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *, random_start: bool = False,
         alpha: float | None = None, check: bool = True) -> torch.Tensor:
    """FGSM adversarial images (detached, in [0, 1]). `check=False` skips the input checks (hot loops)."""
    return FGSM(random_start, alpha)(model, x, y, eps, check=check)
