"""The "ensemble": per sample, the worst case over a list of attacks. Each member attacks only the
samples the previous members did not fool (as AutoAttack does), so the cost falls as they succeed."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sgtlab.attacks.base import Attack, Eps, build_attack, register_attack, rows
from sgtlab.errors import SgtlabError

#: open detail: the default members are the always-available white-box attacks
DEFAULT_MEMBERS = ("fgsm", "pgd", "mifgsm")


@register_attack("ensemble")
class Ensemble(Attack):
    name = "ensemble"

    def __init__(self, members: Sequence[str | Attack] = DEFAULT_MEMBERS):
        if not members:
            raise SgtlabError("an ensemble needs at least one attack")
        self.members = [build_attack(m) if isinstance(m, str) else m for m in members]
        if any(isinstance(m, Ensemble) for m in self.members):
            raise SgtlabError("an ensemble cannot contain an ensemble")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, **kw) -> torch.Tensor:
        out = x.clone()
        todo = torch.arange(len(x), device=x.device)
        for attack in self.members:
            adv = attack.perturb(model, x[todo], y[todo], rows(eps, todo),
                                 early_stop=attack.supports_early_stop)
            with torch.no_grad():
                fooled = model(adv).argmax(1) != y[todo]
            out[todo] = adv  # not fooled: the last member's image (all are equally unsuccessful)
            todo = todo[~fooled]
            if len(todo) == 0:
                break
        return out
