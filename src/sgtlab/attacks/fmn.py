"""FMN, the fast minimum-norm attack (Pintor et al., NeurIPS 2021), L-inf: per image the smallest
L-inf perturbation it finds that changes the prediction, so one run gives every image's robustness
radius and with it the robust accuracy at every budget of a grid.

Each step: the margin `max_{j != y} z_j - z_y` and its input gradient at `x + delta`; `delta`
moves by `alpha` along the L2-normalised gradient, then is projected onto the L-inf ball of radius
`epsilon` (per image) and onto `[0, 1]`. `epsilon` adapts: before an adversarial image is found it
jumps to the linear estimate of the boundary (`|margin| / ||grad||_1`, the dual norm); after, it
shrinks by `(1 - gamma)` while the image is adversarial (never above the best radius found) and
grows by `(1 + gamma)` while it is not. `alpha` and `gamma` follow a cosine decay (to alpha / 100
and `gamma_final`). The best adversarial image is kept per image: the result is that image and its
L-inf distance (inf where none was found), verified by the forward pass that found it.

`max_eps` caps the radius (the `[0, 1]` box caps it at `max(x, 1 - x)` anyway): with it the attack
searches only the budgets that matter (`perturb(..., eps)` caps at `eps`; the sweep at its grid's
largest value). `perturb` returns the best adversarial image where one was found within `eps`, else
the last iterate (within `eps`, not adversarial).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sgtlab.attacks.base import Attack, Eps, check_positive, register_attack
from sgtlab.errors import SgtlabError


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, the largest other logit minus the true one: > 0 exactly when misclassified
    (argmax ties aside)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    return other - true


@register_attack("fmn")
class FMN(Attack):
    name = "fmn"
    #: the sweep asks `radii` once for the whole grid instead of one `perturb` per eps
    minimum_norm = True

    def __init__(self, steps: int = 100, alpha_init: float = 1.0, alpha_final: float | None = None,
                 gamma_init: float = 0.05, gamma_final: float = 0.001):
        check_positive("steps", steps)
        for key, v in (("alpha_init", alpha_init), ("gamma_init", gamma_init), ("gamma_final", gamma_final)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise SgtlabError(f"{key} must be > 0, got {v!r}")
        if alpha_final is not None and not alpha_final > 0:
            raise SgtlabError(f"alpha_final must be > 0, got {alpha_final!r}")
        if not gamma_init < 1 or not gamma_final < 1:
            raise SgtlabError("gamma_init and gamma_final must be < 1")
        self.steps, self.alpha_init, self.alpha_final = steps, alpha_init, alpha_final
        self.gamma_init, self.gamma_final = gamma_init, gamma_final

    def radii(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_eps: Eps | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(best adversarial images, their L-inf distance to x (inf: none found), last iterates).
        Model in eval mode, inputs checked: the caller's part (as `perturb`)."""
        n = len(x)
        view = (n,) + (1,) * (x.ndim - 1)
        cap = torch.maximum(x, 1 - x).flatten(1).amax(1)
        if max_eps is not None:
            cap = torch.minimum(cap, torch.as_tensor(max_eps, dtype=x.dtype, device=x.device).reshape(-1))
        alpha_final = self.alpha_init / 100 if self.alpha_final is None else self.alpha_final
        delta = torch.zeros_like(x)
        epsilon = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        best_norm = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        best = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for i in range(self.steps):
            cosine = (1 + math.cos(math.pi * i / self.steps)) / 2
            alpha = alpha_final + (self.alpha_init - alpha_final) * cosine
            gamma = self.gamma_final + (self.gamma_init - self.gamma_final) * cosine
            adv = (x + delta).requires_grad_(True)
            logits = model(adv)
            m = margin(logits, y)
            grad, = torch.autograd.grad(m.sum(), adv)
            m, adv = m.detach(), adv.detach()
            norm = delta.flatten(1).abs().amax(1)
            is_adv = logits.detach().argmax(1) != y
            better = is_adv & (norm < best_norm)
            best_norm = torch.where(better, norm, best_norm)
            best = torch.where(better.view(view), adv, best)
            found |= is_adv
            to_boundary = m.abs() / grad.flatten(1).abs().sum(1).clamp_min(1e-12)
            epsilon = torch.where(is_adv, torch.minimum(epsilon * (1 - gamma), best_norm),
                                  torch.where(found, epsilon * (1 + gamma), norm + to_boundary))
            epsilon = torch.minimum(epsilon, cap)
            grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            e = epsilon.view(view)
            delta = torch.maximum(torch.minimum(delta + alpha * grad, e), -e)
            delta = (x + delta).clamp(0, 1) - x
        # the last iterate is judged too: `steps` gradients, `steps + 1` verdicts
        with torch.no_grad():
            last = x + delta
            is_adv = model(last).argmax(1) != y
        norm = delta.flatten(1).abs().amax(1)
        better = is_adv & (norm < best_norm)
        best_norm = torch.where(better, norm, best_norm)
        best = torch.where(better.view(view), last, best)
        return best, best_norm, last

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, **_) -> torch.Tensor:
        eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1)
        best, norm, last = self.radii(model, x, y, eps_t)
        ok = (norm <= eps_t).view((len(x),) + (1,) * (x.ndim - 1))
        return torch.where(ok, best, last)


def fmn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_eps: float | None = None, steps: int = 100,
        alpha_init: float = 1.0, alpha_final: float | None = None, gamma_init: float = 0.05,
        gamma_final: float = 0.001, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image the smallest L-inf adversarial image FMN finds and its radius `||x_adv - x||_inf`
    (inf where none was found, the image itself then): `(x_adv, radius)`. `max_eps`: search no
    further (default: the `[0, 1]` box only)."""
    from sgtlab.attacks.base import check_inputs
    from sgtlab.device import eval_mode

    attack = FMN(steps, alpha_init, alpha_final, gamma_init, gamma_final)
    if check:
        check_inputs(x, y, 0.0 if max_eps is None else max_eps)
    if len(x) == 0:
        return x.detach().clone(), torch.empty(0, dtype=x.dtype, device=x.device)
    with eval_mode(model):
        best, norm, _ = attack.radii(model, x.detach(), y.detach(), max_eps)
    return best.detach(), norm
