"""Adversarial attacks, one module each, registered by name (see `docs/attacks.md`).

`fgsm(model, x, y, eps)` and `pgd(model, x, y, eps, steps=10)` are the functions training methods
call; `build_attack(name, **params)` gives any registered attack as an object with the same
`(model, x, y, eps) -> x_adv` call.
"""
from sgtlab.attacks.base import ATTACKS, Attack, attack_names, build_attack, eval_mode, register_attack
from sgtlab.attacks.fgsm import FGSM, fgsm
from sgtlab.attacks.pgd import PGD, pgd
from sgtlab.attacks.mifgsm import MIFGSM, mifgsm
from sgtlab.attacks.fmn import FMN, fmn
from sgtlab.attacks import autoattack as _autoattack  # noqa: F401  (registers apgd-ce, apgd-dlr, square)
from sgtlab.attacks.ensemble import Ensemble

__all__ = ["ATTACKS", "Attack", "Ensemble", "FGSM", "FMN", "MIFGSM", "PGD", "attack_names", "build_attack",
           "eval_mode", "fgsm", "fmn", "mifgsm", "pgd", "register_attack"]
