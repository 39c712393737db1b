"""Adversarial training: AT-FGSM (Wong et al. 2020, random start by default) and AT-PGD (Madry et al.)."""
import torch.nn.functional as F

from sgtlab.attacks import fgsm, pgd
from sgtlab.train.methods.base import register_method
from sgtlab.train.methods._shared import attack_model, fgsm_budget, forward_many, pgd_budget


def _adv_loss(model, module, x, x_adv, y, cfg):
    """CE(f(x')) (+ CE(f(x)) with --clean-loss, one shared forward where exact)."""
    if not cfg.clean_loss:
        ce_adv = F.cross_entropy(model(x_adv), y)
        return ce_adv, {"ce_adv": ce_adv.detach()}
    adv, clean = forward_many(model, module, x_adv, x)
    ce_adv, ce = F.cross_entropy(adv, y), F.cross_entropy(clean, y)
    return ce_adv + ce, {"ce_adv": ce_adv.detach(), "ce": ce.detach()}


def at_fgsm(model, x, y, cfg, ctx):
    """Adversarial training with FGSM (random start by default): CE(f(x'))."""
    # alpha 1.25 eps with random start (Wong et al.), eps for plain FGSM (where fgsm ignores alpha);
    # both ramp up over the first eps_warmup of training
    eps, alpha = fgsm_budget(cfg, ctx)
    x_adv = fgsm(attack_model(model, ctx.module), x, y, eps, random_start=cfg.random_start, alpha=alpha, check=False)
    return _adv_loss(model, ctx.module, x, x_adv, y, cfg)


def at_pgd(model, x, y, cfg, ctx):
    """Adversarial training with PGD (Madry et al.): CE(f(x'))."""
    eps, alpha = pgd_budget(cfg, ctx)  # ramped up over the first eps_warmup of training
    x_adv = pgd(attack_model(model, ctx.module), x, y, eps, steps=cfg.train_steps, alpha=alpha,
                random_start=True, check=False)
    return _adv_loss(model, ctx.module, x, x_adv, y, cfg)


# registered by a call, not a decorator: mutmut 3 does not mutate decorated functions
register_method("at-fgsm")(at_fgsm)
register_method("at-pgd")(at_pgd)
