"""ASGT (Guesmi et al. 2024): attack, then mask the adversarial input."""
import torch.nn.functional as F

from sgtlab.attacks import pgd
from sgtlab.train.methods.base import register_method
from sgtlab.train.methods._shared import (attack_model, forward_many, kl_term, pgd_budget, resolve_k,
                                            saliency_mask_and_clean)


def asgt(model, x, y, cfg, ctx):
    """Adversarial saliency-guided: CE(f(x)) + CE(f(x')) + lambda KL(f(x) || f(M_k(x', S(x', y)))), x' = PGD(x)."""
    eps, alpha = pgd_budget(cfg, ctx)  # ramped up over the first eps_warmup of training
    x_adv = pgd(attack_model(model, ctx.module), x, y, eps, steps=cfg.train_steps, alpha=alpha,
                random_start=True, check=False)
    x_am, adv = saliency_mask_and_clean(model, ctx.module, x_adv, y, cfg, resolve_k(cfg, "asgt"))
    if adv is None:
        clean, adv, masked_adv = forward_many(model, ctx.module, x, x_adv, x_am)
    else:  # f(x') in train mode came with the saliency pass on x'
        clean, masked_adv = forward_many(model, ctx.module, x, x_am)
    ce = F.cross_entropy(clean, y)
    ce_adv = F.cross_entropy(adv, y)
    kl = kl_term(clean, masked_adv)
    return ce + ce_adv + cfg.lam * kl, {"ce": ce.detach(), "ce_adv": ce_adv.detach(), "kl": kl.detach()}


# registered by a call, not a decorator: mutmut 3 does not mutate decorated functions
register_method("asgt")(asgt)
