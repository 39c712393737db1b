"""APGD-CE, APGD-DLR (Croce & Hein 2020), the gradient-free Square attack (Andriushchenko et al.
2020) and standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square with the reference budgets), from the
reference AutoAttack code in the `pyautoattack` package (MIT, pure Python: a core dependency, so the
gradient-free check always runs).

We do not reimplement them: the point of these attacks is that they are the reference ones. The
reference code reseeds torch's global RNG; we run it inside `torch.random.fork_rng`, so the caller's
random stream is left as it was (Square draws the same numbers from a generator of its own instead,
so its batches may run side by side).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from sgtlab.attacks.base import Attack, Eps, check_positive, project, register_attack
from sgtlab.errors import SgtlabError


def require_pyautoattack(module: str = "autopgd_base"):
    """The pyautoattack module, or a clear error saying how to install it."""
    try:
        import importlib

        return importlib.import_module(f"pyautoattack.{module}")
    except ImportError:
        raise SgtlabError("APGD, Square and AutoAttack need the package pyautoattack (a dependency of sgtlab): "
                          "pip install pyautoattack") from None


def _scalar_eps(eps: Eps) -> float:
    if isinstance(eps, torch.Tensor):
        if eps.numel() and not bool((eps == eps.reshape(-1)[0]).all()):
            raise SgtlabError("APGD and Square take one eps for all samples, not a per-sample tensor")
        return float(eps.reshape(-1)[0]) if eps.numel() else 0.0
    return float(eps)


class _Reference(Attack):
    #: True when the reference code draws from the global generator (reseeded and restored around it)
    global_rng = True

    def _run(self, model: nn.Module, make, x: torch.Tensor, y: torch.Tensor, eps: Eps) -> torch.Tensor:
        eps = _scalar_eps(eps)
        if eps == 0:
            return x.clone()
        devices = [x.device] if x.device.type == "cuda" else []
        # FAB (in AutoAttack) calls backward() on the logits, which fills the model's parameter grads;
        # they are set aside (so nothing accumulates into them) and put back as they were
        params = list(model.parameters())
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            with torch.random.fork_rng(devices=devices, enabled=self.global_rng):
                adv = make(eps).perturb(x, y).detach()
        finally:
            for p, g in zip(params, grads):
                p.grad = g
        return project(adv, x, eps)  # the reference code can overshoot the ball by one float ulp


class _APGD(_Reference):
    """APGD (Croce & Hein 2020) from the reference code, as torchattacks' APGD:

        APGDCE(model, norm="Linf", eps=8/255, steps=100, n_restarts=1, seed=0, *, rho=0.75)
        x_adv = atk(x, y)                       # or APGDCE(steps=100)(model, x, y, eps)

    steps: iterations (torchattacks' default: 10; the reference's: 100). n_restarts (`restarts`):
    random restarts. seed: the reference code's seed (run in a forked RNG)."""

    loss = "ce"
    torchattacks_order = ("norm", "eps", "steps", "n_restarts", "seed")
    torchattacks_names = {"n_restarts": "restarts", "verbose": None, "eot_iter": None}

    def __init__(self, steps: int = 100, restarts: int = 1, seed: int = 0, rho: float = 0.75):
        check_positive("steps", steps)
        check_positive("restarts", restarts)
        self.steps, self.restarts, self.seed, self.rho = steps, restarts, seed, rho

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, **_) -> torch.Tensor:
        APGDAttack = require_pyautoattack("autopgd_base").APGDAttack
        return self._run(model, lambda e: APGDAttack(model, n_iter=self.steps, norm="Linf", n_restarts=self.restarts,
                                                     eps=e, seed=self.seed, loss=self.loss, rho=self.rho,
                                                     device=x.device),
                         x, y, eps)


@register_attack("apgd-ce")
class APGDCE(_APGD):
    name = "apgd-ce"
    loss = "ce"


@register_attack("apgd-dlr")
class APGDDLR(_APGD):
    name = "apgd-dlr"
    loss = "dlr"

    def perturb(self, model, x, y, eps, **kw):
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        if classes < 3:
            raise SgtlabError(f"the DLR loss needs at least 3 classes; the model has {classes}")
        return super().perturb(model, x, y, eps, **kw)


@register_attack("square")
class Square(_Reference):
    """Square (Andriushchenko et al. 2020), gradient-free: only the model's outputs are used, as
    torchattacks' Square:

        Square(model, norm="Linf", eps=8/255, n_queries=5000, n_restarts=1, p_init=0.8, *, seed=0)

    n_queries (`queries`): model queries per image (5000, as AutoAttack). p_init: the initial
    fraction of pixels changed per square."""

    name = "square"
    # its draws come from a generator of its own, seeded per call as the reference seeds the global
    # one (`_square_class`): the same numbers, and batches may run side by side
    global_rng = False
    thread_safe = True
    torchattacks_order = ("norm", "eps", "n_queries", "n_restarts", "p_init")
    torchattacks_names = {"n_queries": "queries", "n_restarts": "restarts", "verbose": None, "loss": None,
                          "resc_schedule": None}

    def __init__(self, queries: int = 5000, restarts: int = 1, seed: int = 0, p_init: float = 0.8):
        check_positive("queries", queries)
        check_positive("restarts", restarts)
        self.queries, self.restarts, self.seed, self.p_init = queries, restarts, seed, p_init

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, **_) -> torch.Tensor:
        SquareAttack = _square_class()

        def make(e):
            return SquareAttack(model, norm="Linf", n_queries=self.queries, eps=e, p_init=self.p_init,
                                n_restarts=self.restarts, seed=self.seed, loss="margin", device=x.device)

        with torch.no_grad():  # queries only: no graph
            return self._run(model, make, x, y, eps)


def _square_class():
    """pyautoattack's `SquareAttack`, drawing its random numbers from a generator of its own.

    Why: the reference seeds the global generator at the start of `perturb` and draws from it, so two
    batches attacked side by side (`sgtlab.fast.batch_threads`) would take each other's numbers.
    Here `perturb` seeds a CPU generator of the attack with the same seed and the draws are the
    reference's own expressions on it: a generator seeded alike gives the same sequence as the
    global one, so the adversarial images are the reference's, bit for bit
    (`tests/test_attacks.py`). Only what sgtlab calls is kept: labels given, untargeted."""
    SquareAttack = require_pyautoattack("square").SquareAttack

    class OwnGeneratorSquare(SquareAttack):
        def random_choice(self, shape):
            t = 2 * torch.rand(shape, generator=self.generator).to(self.device) - 1
            return torch.sign(t)

        def random_int(self, low=0, high=1, shape=[1]):
            t = low + (high - low) * torch.rand(shape, generator=self.generator).to(self.device)
            return t.long()

        def perturb(self, x, y):
            """The reference's `perturb` (labels given, untargeted) with its own generator."""
            self.init_hyperparam(x)
            self.generator = torch.Generator().manual_seed(int(self.seed))
            adv = x.clone()
            y = y.detach().clone().long().to(self.device)
            acc = self.predict(x).max(1)[1] == y
            for _ in range(self.n_restarts):
                todo = acc.nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                _, adv_curr = self.attack_single_run(x[todo].clone(), y[todo].clone())
                fooled = (self.predict(adv_curr).max(1)[1] != y[todo]).nonzero().squeeze(1)
                acc[todo[fooled]] = False
                adv[todo[fooled]] = adv_curr[fooled].clone()
            return adv

    return OwnGeneratorSquare


def standard_members(classes: int) -> tuple[list[str], int]:
    """(attacks, target classes) of standard AutoAttack on a `classes`-way model: APGD-CE, APGD-T,
    FAB-T, Square with min(9, C - 1) target classes. The targeted DLR loss needs 4 classes, so with
    3 APGD-T gives way to APGD-DLR (the untargeted DLR loss), and with 2 it is left out (the one
    target class is the one APGD-CE already attacks)."""
    if classes < 2:
        raise SgtlabError(f"AutoAttack needs a model with at least 2 classes; this one has {classes}")
    targets = min(9, classes - 1)
    middle = ["apgd-t"] if classes >= 4 else ["apgd-dlr"] if classes == 3 else []
    return ["apgd-ce", *middle, "fab-t", "square"], targets


@register_attack("autoattack")
class AutoAttackStandard(_Reference):
    """Standard AutoAttack (Croce & Hein 2020; the RobustBench evaluation): APGD-CE, APGD-T and
    FAB-T on min(9, C - 1) target classes, and Square (5000 queries), each attacking the images the
    previous ones left robust; on any number of classes C >= 2 (see `standard_members`). Slow: for
    presets that ask for it (`attack.attacks: [..., autoattack]`) and `sgtlab.benchmark`.

        AutoAttackStandard(model, norm="Linf", eps=8/255, version="standard", n_classes=10, seed=0)(x, y)

    (torchattacks' form; `n_classes` is read from the model.)
    """

    name = "autoattack"
    torchattacks_order = ("norm", "eps", "version", "n_classes", "seed")
    torchattacks_names = {"n_classes": None, "verbose": None}  # the classes are read from the model

    def __init__(self, seed: int = 0, version: str = "standard"):
        if version != "standard":
            raise SgtlabError(f"AutoAttack: only version='standard' is run here, got {version!r}")
        self.seed = seed

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Eps, **_) -> torch.Tensor:
        AutoAttack = require_pyautoattack("autoattack").AutoAttack
        with torch.no_grad():
            classes = int(model(x[:1]).shape[1])
        members, targets = standard_members(classes)

        def make(e):
            aa = AutoAttack(model, norm="Linf", eps=e, version="standard", seed=self.seed, device=x.device)
            aa.verbose = False
            aa.logger = _QUIET  # its class-count note misreads our choice of members (see standard_members)
            aa.attacks_to_run = members
            aa.apgd_targeted.n_target_classes = targets
            aa.fab.n_target_classes = targets
            return _Evaluation(aa)

        return self._run(model, make, x, y, eps)


_QUIET = logging.getLogger("sgtlab.autoattack")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class _Evaluation:
    """AutoAttack's `run_standard_evaluation` behind the `perturb(x, y)` the other reference attacks have."""

    def __init__(self, aa):
        self.aa = aa

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.aa.run_standard_evaluation(x, y, batch_size=max(1, len(x)))[0]  # (x_adv, y_adv)
