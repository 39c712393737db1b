"""Adversarial attacks, one module each, registered by name (see `docs/attacks.md`).

`fgsm(model, x, y, eps)` and `pgd(model, x, y, eps, steps=10)` are the functions training methods
call; `build_attack(name, **params)` gives any registered attack as an object with the same
`(model, x, y, eps) -> x_adv` call.
"""
from sgtlab.attacks.base import ATTACKS, Attack, attack_names, build_attack, eval_mode, register_attack
from sgtlab.attacks.fgsm import FGSM, fgsm
from sgtlab.attacks.pgd import PGD, pgd

__all__ = ["ATTACKS", "Attack", "FGSM", "PGD", "attack_names", "build_attack", "eval_mode", "fgsm", "pgd",
           "register_attack"]
