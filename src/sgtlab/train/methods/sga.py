"""SGA (Li et al. 2022): mask first, then attack the masked input."""
import torch.nn.functional as F

from sgtlab.attacks import pgd
from sgtlab.train.methods.base import register_method
from sgtlab.train.methods._shared import (attack_model, forward_many, kl_term, pgd_budget, resolve_k,
                                            saliency_mask_and_clean)


def sga(model, x, y, cfg, ctx):
    """Saliency-guided adversarial: CE(f(x)) + lambda KL(f(x) || f(PGD(M_k(x, S(x, y)))))."""
    xm, clean = saliency_mask_and_clean(model, ctx.module, x, y, cfg, resolve_k(cfg, "sga"))
    # the attack is PGD with the training-attack options (a choice: the spec says "attack")
    eps, alpha = pgd_budget(cfg, ctx)  # ramped up over the first eps_warmup of training
    x_ma = pgd(attack_model(model, ctx.module), xm, y, eps, steps=cfg.train_steps, alpha=alpha,
               random_start=True, check=False)
    if clean is None:
        clean, masked_adv = forward_many(model, ctx.module, x, x_ma)
    else:  # f(x) in train mode came with the saliency pass
        masked_adv = model(x_ma)
    ce = F.cross_entropy(clean, y)
    kl = kl_term(clean, masked_adv)
    return ce + cfg.lam * kl, {"ce": ce.detach(), "kl": kl.detach()}


# registered by a call, not a decorator: mutmut 3 does not mutate decorated functions
register_method("sga")(sga)
