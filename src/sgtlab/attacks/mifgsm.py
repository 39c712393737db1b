"""MI-FGSM (Dong et al. 2018): signed steps of `alpha` (default eps / steps) along a momentum of
L1-normalised gradients (`mu` = `decay` = 1.0), projected onto the eps-ball and [0, 1]; no random start."""
from __future__ import annotations

import torch
from torch import nn

from sgtlab.attacks.base import Attack, Eps, as_eps, check_positive, iterate, project, register_attack
from sgtlab.errors import SgtlabError


@register_attack("mifgsm")
class MIFGSM(Attack):
    """MI-FGSM (Dong et al. 2018), as torchattacks' MIFGSM:

        MIFGSM(model, eps=8/255, alpha=None, steps=10, decay=1.0, *, targeted=False)
        x_adv = atk(x, y)                       # or MIFGSM(steps=10)(model, x, y, eps)

    model: the `nn.Module` to attack (inputs in [0, 1]). eps: the L-inf budget in pixel units.
    alpha: the step size; default eps / steps (torchattacks: 2/255; pass it for its images).
    steps: iterations. decay: the momentum factor mu. targeted: the labels given are targets.
    """

    name = "mifgsm"
    supports_early_stop = True
    supports_targeted = True
    uses_clean_grad = True
    thread_safe = True
    reports_fooled = True
    torchattacks_order = ("eps", "alpha", "steps", "decay")

    def __init__(self, steps: int = 10, alpha: float | None = None, decay: float = 1.0):
        check_positive("steps", steps)
        if alpha is not None and not alpha > 0:
            raise SgtlabError(f"alpha must be > 0, got {alpha!r}")
        self.steps, self.alpha, self.decay = steps, alpha, decay

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *, early_stop: bool = False,
                clean_grad: torch.Tensor | None = None, targeted: bool = False,
                fooled: torch.Tensor | None = None, **_) -> torch.Tensor:
        """`fooled`: see `iterate`."""
        eps = as_eps(eps, x)
        alpha = eps / self.steps if self.alpha is None else self.alpha
        state = {"eps": eps, "alpha": alpha, "momentum": torch.zeros_like(x)}
        tiny = torch.finfo(x.dtype).tiny  # guards an all-zero gradient (NaN in torchattacks), changes nothing else

        def step(x_adv, grad, x, s):
            grad = grad / torch.mean(torch.abs(grad), dim=(1, 2, 3), keepdim=True).clamp_min(tiny)
            grad = grad + s["momentum"] * self.decay
            s["momentum"] = grad
            return project(x_adv.detach() + s["alpha"] * grad.sign(), x, s["eps"])

        return iterate(model, x, y, x.clone(), self.steps, step, state, early_stop,
                       first_grad=None if targeted else clean_grad, targeted=targeted, fooled=fooled)


def mifgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *, steps: int = 10,
           alpha: float | None = None, decay: float = 1.0, check: bool = True) -> torch.Tensor:
    """MI-FGSM adversarial images (detached, in [0, 1])."""
    return MIFGSM(steps, alpha, decay)(model, x, y, eps, check=check)
