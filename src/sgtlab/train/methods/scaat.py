"""SCAAT (Xu et al.): adversarial training restricted to each sample's low-saliency pixels, with a
per-sample adaptive ratio q_i kept in the method state (so in every checkpoint)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sgtlab.attacks import pgd
from sgtlab.saliency import lowest_mask, saliency, saliency_and_clean_logits
from sgtlab.train.methods.base import register_method
from sgtlab.train.methods._shared import attack_model, forward_many, kl_term, pgd_budget, runs_module


def init_state(n_train: int, cfg, device) -> dict[str, torch.Tensor]:
    return {"q": torch.full((n_train,), float(cfg.q0), device=device)}


def update_q(q: torch.Tensor, correct: torch.Tensor, cfg) -> torch.Tensor:
    """q + gamma where the model still predicts y on x_adv (the attack may grow), q - gamma where it
    does not, clipped to [q_min, q_max]."""
    step = torch.where(correct, cfg.gamma, -cfg.gamma).to(q.dtype)
    return (q + step).clamp_(cfg.q_min, cfg.q_max)


def scaat(model, x, y, cfg, ctx):
    """Saliency-constrained adaptive AT: CE(f(x)) + lambda KL(f(x) || f(x_adv)), x_adv = PGD on the q_i lowest-saliency pixels."""
    module = ctx.module
    if runs_module(model, module):
        s, clean = saliency_and_clean_logits(module, x, y, mode=cfg.saliency, target=cfg.saliency_target)
    else:
        s, clean = saliency(module, x, y, mode=cfg.saliency, target=cfg.saliency_target), None
    q_all = ctx.state["q"]
    q = q_all[ctx.idx]
    h, w = x.shape[-2:]
    # floor(q_i * H * W) positions; the 1e-6 keeps float error (0.29 * 100 = 28.999...) from flooring down
    n = torch.floor(q * (h * w) + 1e-6).long()
    support = lowest_mask(s, n)
    eps, alpha = pgd_budget(cfg, ctx, cfg.eps_irr)  # the budget eps_irr, ramped up over the first eps_warmup
    x_adv = pgd(attack_model(model, module), x, y, eps, steps=cfg.train_steps, alpha=alpha, random_start=True,
                mask=support, check=False)
    if clean is None:
        clean, adv = forward_many(model, module, x, x_adv)
    else:
        adv = model(x_adv)
    ce = F.cross_entropy(clean, y)
    kl = kl_term(clean, adv)
    if ctx.epoch >= cfg.warmup_epochs:
        # "still predicts y_i on x_adv_i" is read from the training forward of x_adv (train mode),
        # a choice that costs no extra pass
        # a sample is seen once per epoch, by one rank under DDP: each rank writes its own entries
        # and the loop merges them across ranks at the end of the epoch
        q_all[ctx.idx] = update_q(q, adv.detach().argmax(1) == y, cfg)
    return ce + cfg.lam * kl, {"ce": ce.detach(), "kl": kl.detach(), "q": q_all.mean()}


# registered by a call, not a decorator: mutmut 3 does not mutate decorated functions
register_method("scaat", init_state=init_state)(scaat)
