"""SGT (Ismail et al. 2021)."""
import torch.nn.functional as F

from sgtlab.train.methods.base import register_method
from sgtlab.train.methods._shared import forward_many, kl_term, resolve_k, saliency_mask_and_clean


def sgt(model, x, y, cfg, ctx):
    """Saliency-guided training (Ismail et al.): CE(f(x)) + lambda KL(f(x) || f(M_k(x, S(x, y))))."""
    xm, clean = saliency_mask_and_clean(model, ctx.module, x, y, cfg, resolve_k(cfg, "sgt"))
    if clean is None:
        clean, masked = forward_many(model, ctx.module, x, xm)
    else:  # the clean logits came with the saliency pass (shared mode-independent layers)
        masked = model(xm)
    ce = F.cross_entropy(clean, y)
    kl = kl_term(clean, masked)
    return ce + cfg.lam * kl, {"ce": ce.detach(), "kl": kl.detach()}


# registered by a call, not a decorator: mutmut 3 does not mutate decorated functions
register_method("sgt")(sgt)
