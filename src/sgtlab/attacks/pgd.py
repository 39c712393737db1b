"""PGD L-inf (Madry et al. 2018): random start in the eps-ball, `steps` signed-gradient steps of
`alpha` (default 2.5 * eps / steps), projection onto the eps-ball and [0, 1]; `restarts` keep, per
sample, the worst case (a misclassifying image, else the highest loss). An optional 0/1 `mask`
(N x 1 x H x W or broadcastable) limits the perturbation to the marked pixels, all channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.attacks.base import (Attack, Eps, as_eps, check_positive, iterate, project, register_attack, rows,
                                 uniform_delta)
from sgtlab.errors import SgtlabError


@register_attack("pgd")
class PGD(Attack):
    """PGD L-inf (Madry et al. 2018), as torchattacks' PGD:

        PGD(model, eps=8/255, alpha=None, steps=10, random_start=True, *, restarts=1, targeted=False)
        x_adv = atk(x, y)                       # or PGD(steps=10)(model, x, y, eps)

    model: the `nn.Module` to attack (inputs in [0, 1]; `set_normalization_used(mean, std)` when it
    expects normalised ones). eps: the L-inf budget in pixel units (default 8/255). alpha: the step
    size; default 2.5 * eps / steps (Madry et al.; torchattacks' default is 2/255 whatever eps: pass
    alpha=2/255 for its images). steps: the number of signed-gradient steps. random_start: start at a
    uniform point of the eps-ball. restarts: random starts, keeping per image the worst case.
    targeted: the labels given are targets (see also `set_mode_targeted_random`, `..._least_likely`,
    `..._by_function`). Positional arguments after the model follow torchattacks' order.
    """

    name = "pgd"
    supports_early_stop = True
    supports_targeted = True
    torchattacks_order = ("eps", "alpha", "steps", "random_start")

    def __init__(self, steps: int = 10, alpha: float | None = None, random_start: bool = True, restarts: int = 1):
        check_positive("steps", steps)
        check_positive("restarts", restarts)
        if alpha is not None and not alpha > 0:
            raise SgtlabError(f"alpha must be > 0, got {alpha!r}")
        self.steps, self.alpha, self.random_start, self.restarts = steps, alpha, random_start, restarts
        self.takes_init_delta = random_start
        self.uses_clean_grad = not random_start and restarts == 1

    @property
    def thread_safe(self) -> bool:  # later restarts draw their starts from the global generator
        return self.restarts == 1

    @property
    def reports_fooled(self) -> bool:
        return self.restarts == 1

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *, mask=None,
                early_stop: bool = False, init_delta: torch.Tensor | None = None,
                clean_grad: torch.Tensor | None = None, targeted: bool = False,
                fooled: torch.Tensor | None = None, **_) -> torch.Tensor:
        """`init_delta`: the first restart's random start (the sweep passes noise drawn for the whole
        data set, so its samples start where a from-scratch run with the same seed starts).
        `fooled`: see `iterate` (one restart; with more, left as it is)."""
        eps = as_eps(eps, x)
        alpha = 2.5 * eps / self.steps if self.alpha is None else self.alpha
        if mask is not None:
            mask = mask.to(device=x.device, dtype=x.dtype).expand_as(x)
        if self.restarts == 1:
            return self._once(model, x, y, eps, alpha, mask, init_delta, early_stop, clean_grad, targeted, fooled)
        best, best_loss = x.clone(), torch.full((len(x),), -float("inf"), device=x.device)
        todo = torch.arange(len(x), device=x.device)
        for r in range(self.restarts):
            xs, ys, es, al, ms = x[todo], y[todo], rows(eps, todo), rows(alpha, todo), rows(mask, todo)
            start = init_delta[todo] if (r == 0 and init_delta is not None) else None
            adv = self._once(model, xs, ys, es, al, ms, start, early_stop, None, targeted)
            with torch.no_grad():
                logits = model(adv)
            loss = F.cross_entropy(logits, ys, reduction="none")
            fooled = logits.argmax(1) != ys
            if targeted:  # success: classified as the target; worse: closer to it
                loss, fooled = -loss, ~fooled
            better = fooled | (loss > best_loss[todo])
            best[todo[better]] = adv[better]
            best_loss[todo[better]] = torch.where(fooled, float("inf"), loss)[better]
            todo = todo[~fooled]  # fooled samples are done: nothing can be worse
            if len(todo) == 0:
                break
        return best

    def _once(self, model, x, y, eps, alpha, mask, init_delta, early_stop, clean_grad=None, targeted=False,
              fooled=None):
        if self.random_start:
            delta = uniform_delta(x, eps) if init_delta is None else init_delta
            if mask is not None:
                delta = delta * mask
            x_adv = torch.clamp(x + delta, min=0, max=1).detach()
        else:
            x_adv = x.clone()
        state = {"eps": eps, "alpha": alpha, "mask": mask}

        def step(x_adv, grad, x, s):
            if s["mask"] is not None:
                grad = grad * s["mask"]
            return project(x_adv.detach() + s["alpha"] * grad.sign(), x, s["eps"])

        first = clean_grad if not (self.random_start or targeted) else None
        return iterate(model, x, y, x_adv, self.steps, step, state, early_stop, first_grad=first, targeted=targeted,
                       fooled=fooled)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, *, steps: int = 10,
        alpha: float | None = None, random_start: bool = True, restarts: int = 1,
        mask: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
    """PGD L-inf adversarial images (detached, in [0, 1]). `check=False` skips the input checks."""
    return PGD(steps, alpha, random_start, restarts)(model, x, y, eps, check=check, mask=mask)
