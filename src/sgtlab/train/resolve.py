"""The values a run really uses, written out: which options each training method reads (an option
the method does not read is refused, naming the ones it does), the data's training eps (from the
one budget resolver, `sgtlab.data.budgets.budgets_for`), the method's default `k`, the data set's
default model and PGD's and FGSM's step sizes. `config.json` then says `k: 0.5`, `train_eps:
0.0313725`, not `null`, and the run's identity holds the numbers it trained with."""
from __future__ import annotations

import copy
import dataclasses
from typing import Iterable

from sgtlab.errors import SgtlabError
from sgtlab.train.config import TrainConfig
from sgtlab.train.methods import MethodConfig

_MASK = ("k", "lam", "saliency", "saliency_target", "mask_fill", "mask_low", "mask_high")
_PGD = ("train_eps", "train_steps", "train_alpha", "eps_warmup")

#: the MethodConfig fields each built-in method reads; a plug-in method may say its own with an
#: `options` attribute on its function (without one, every option is accepted)
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "st": (),
    "sgt": _MASK,
    "sga": _MASK + _PGD,
    "asgt": _MASK + _PGD,
    "at-fgsm": ("train_eps", "fgsm_alpha", "random_start", "clean_loss", "eps_warmup"),
    "at-pgd": _PGD + ("clean_loss",),
    "scaat": ("lam", "saliency", "saliency_target", "q0", "gamma", "q_min", "q_max", "warmup_epochs", "eps_irr",
              "train_steps", "train_alpha", "eps_warmup"),
}
#: the budget each PGD-training method attacks with (its step size defaults to 2.5 x it / steps)
PGD_BUDGET = {"at-pgd": "train_eps", "sga": "train_eps", "asgt": "train_eps", "scaat": "eps_irr"}


def method_options(method: str) -> tuple[str, ...] | None:
    """The options `method` reads; None: not known (a plug-in that does not say), all accepted."""
    if method in METHOD_OPTIONS:
        return METHOD_OPTIONS[method]
    from sgtlab.train.methods import METHODS

    opts = getattr(METHODS.get(method).fn, "options", None)
    return tuple(opts) if opts is not None else None


def check_method_options(method: str, given: Iterable[str]) -> None:
    """Refuse, in one line, a method option the method does not read (`k=0.3` with `method="st"`)."""
    allowed = method_options(method)
    fields = {f.name for f in dataclasses.fields(MethodConfig)}
    unused = sorted(set(given) & fields - set(allowed)) if allowed is not None else []
    if unused:
        raise SgtlabError(f"method {method!r} does not use {', '.join(unused)}; its options: "
                          f"{', '.join(allowed) or 'none (plain cross-entropy)'}")


def given_options(mc: MethodConfig) -> set[str]:
    """The method options that differ from MethodConfig's defaults (what a user must have set)."""
    default = MethodConfig()
    return {f.name for f in dataclasses.fields(mc) if getattr(mc, f.name) != getattr(default, f.name)}


def resolve_train(tc: TrainConfig, given: set[str] | None = None,
                  shape: tuple[int, ...] | None = None) -> TrainConfig:
    """A copy of `tc` with the values the run will use written out: the data set's default model
    (registered data), the method's default k, the data's training eps (unless `train_eps` is in
    `given`, the options that were set; by default those that differ from MethodConfig's defaults)
    from the data set's name or, for data given in Python, the images' `shape`, and the training
    attacks' step sizes. Idempotent."""
    from sgtlab.data.budgets import budgets_for
    from sgtlab.train.methods._shared import DEFAULT_K

    tc = copy.deepcopy(tc)
    mc = tc.method_cfg
    given = given_options(mc) if given is None else set(given)
    if tc.model is None:
        from sgtlab.data import dataset_info

        tc.model = dataset_info(tc.dataset).default_model
    if mc.k is None and tc.method in DEFAULT_K:
        mc.k = DEFAULT_K[tc.method]
    if "train_eps" not in given and "train_eps" in (method_options(tc.method) or ()):
        mc.train_eps = budgets_for(tc.dataset, shape).train_eps
    if mc.train_alpha is None and tc.method in PGD_BUDGET:
        mc.train_alpha = 2.5 * getattr(mc, PGD_BUDGET[tc.method]) / mc.train_steps  # PGD's default
    if mc.fgsm_alpha is None and tc.method == "at-fgsm":
        mc.fgsm_alpha = 1.25 * mc.train_eps if mc.random_start else mc.train_eps
    return tc


def fill_defaults(tc: TrainConfig) -> TrainConfig:
    """Only the `None` fields written out (model, k, step sizes), the eps as it stands: how a resumed
    run's saved config (from before values were written out) compares with a new one."""
    return resolve_train(tc, given={"train_eps"})
