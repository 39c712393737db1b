import torch.nn.functional as F

from sgtlab.train.methods import register_method


@register_method("st")
def st(model, x, y, cfg, ctx):
    """Standard training: CE(f(x), y)."""
    loss = F.cross_entropy(model(x), y)
    return loss, {"ce": loss.detach()}
