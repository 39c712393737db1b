"""The interface every attack shares (`sgtlab.attacks.base`), against docs/attacks.md and SPEC.md.

Tiny hand-built models whose input gradient has a known sign, so every expected image is a closed
form: on a linear 2-class model with logits `W x`, the cross-entropy gradient of label `y` is
`p_other * (w_other - w_y)`, whose sign is `sign(w_other - w_y)`. Covered: the two call forms
(`Attack(**params)(model, x, y, eps)` and torchattacks' bound `Attack(model, eps=...)(x, y)`, eps
8/255 by default), for the built-in attacks and for a plug-in subclass; eval mode during the attack
and each module's mode restored; eps and input validation (refused before the model runs);
the uniform random start (its bounds, moments and RNG); and the shared iteration loop (early stop,
the first step's gradient handed in by the sweep).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgtlab.attacks import FGSM, MIFGSM, PGD, Attack, build_attack, fgsm
from sgtlab.attacks.base import as_eps, uniform_delta
from sgtlab.errors import SgtlabError
from test_science_attacks import Threshold

W = [[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]]
SIGN = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 1, 2, 2)  # sign of the CE gradient for label 1


def _linear(weight=W, dropout: bool = False) -> nn.Module:
    layers = [nn.Flatten()] + ([nn.Dropout(1.0)] if dropout else []) + [nn.Linear(4, 2, bias=False)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        model[-1].weight.copy_(torch.tensor(weight))
    return model


def _batch():
    x = torch.tensor([0.3, 0.5, 0.7]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    y = torch.tensor([0, 1, 0])
    return x, y


def _fgsm_closed_form(x, y, eps):
    """x + eps * sign(grad), clipped: label 0 moves along -SIGN, label 1 along +SIGN."""
    direction = torch.where(y.reshape(-1, 1, 1, 1) == 1, 1.0, -1.0) * SIGN
    eps = eps.reshape(-1, 1, 1, 1) if isinstance(eps, torch.Tensor) else eps
    return (x + eps * direction).clamp(0, 1)


class Never(nn.Module):
    """Fails the test if an attack runs it: input errors must be refused before the model runs."""

    def forward(self, x):
        raise AssertionError("the model ran")


# --- the two call forms -----------------------------------------------------------------------

def test_bound_and_explicit_forms_give_the_closed_form():
    model = _linear()
    x, y = _batch()
    want = _fgsm_closed_form(x, y, 0.1)
    assert torch.allclose(FGSM()(model, x, y, 0.1), want)
    assert torch.allclose(FGSM()(model, x, y, eps=0.1), want)  # eps as a keyword
    assert torch.allclose(FGSM(model, eps=0.1)(x, y), want)
    assert torch.allclose(FGSM(model)(x, y), _fgsm_closed_form(x, y, 8 / 255))  # torchattacks' default eps
    assert torch.allclose(FGSM(model, eps=0.1)(x, y, eps=0.2), _fgsm_closed_form(x, y, 0.2))  # per-call eps wins
    # a per-sample eps bound at construction
    per = torch.tensor([0.05, 0.1, 0.2])
    assert torch.allclose(FGSM(model, eps=per)(x, y), _fgsm_closed_form(x, y, per))


def test_bound_call_passes_options_and_the_check_flag():
    """Options of `perturb` (early stop) and `check=False` reach the attack in the bound form too."""
    model = _threshold()
    x, y = torch.full((2, 1, 2, 2), 0.85), torch.zeros(2, dtype=torch.long)
    atk = PGD(model, eps=0.3, steps=10, alpha=0.03, random_start=False)
    assert torch.allclose(atk(x, y, early_stop=True), x + 0.06, atol=1e-6)  # kept where first fooled
    assert torch.allclose(atk(x, y), torch.ones_like(x))
    bad = torch.full((2, 1, 2, 2), 1.5)
    for call in (lambda **kw: atk(bad, y, **kw), lambda **kw: PGD(steps=2)(model, bad, y, 0.1, **kw)):
        with pytest.raises(SgtlabError, match=r"\[0, 1\]"):
            call()
        assert call(check=False).shape == bad.shape  # checks off: runs on whatever it is given


def test_wrong_calls_are_refused():
    model = _linear()
    x, y = _batch()
    atk = FGSM()
    for call in (lambda: atk(model, x, y),              # no eps
                 lambda: atk(model, x, y, 0.1, 0.2),    # too many
                 lambda: atk(x, y),                     # not bound to a model
                 lambda: FGSM(model, eps=0.1)(x),       # bound: needs (x, y)
                 lambda: FGSM(model, eps=0.1)(x, y, 0.1),
                 lambda: FGSM(eps=0.1),                 # an eps without a model
                 lambda: FGSM(model, eps=-0.1),         # a bound eps is checked too
                 lambda: FGSM(model, eps=float("nan"))):
        with pytest.raises(SgtlabError):
            call()


def test_attacks_run_in_eval_mode_and_restore_each_modules_mode():
    """Dropout(p=1) zeroes everything in train mode (zero gradient: FGSM would not move); in eval
    mode it is the identity, so the closed form shows the attack ran in eval mode."""
    model = _linear(dropout=True)
    x, y = _batch()
    model.train()
    model[0].eval()  # a submodule in its own mode: kept
    for run in (lambda: FGSM(model, eps=0.1)(x, y), lambda: fgsm(model, x, y, 0.1)):
        assert torch.allclose(run(), _fgsm_closed_form(x, y, 0.1))
        assert model.training and model[1].training and not model[0].training
        assert all(p.grad is None for p in model.parameters())


class Shift(Attack):
    """A plug-in attack: every pixel up by `scale * eps` (no gradient)."""

    name = "shift"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def perturb(self, model, x, y, eps, **kw):
        return (x + self.scale * as_eps(eps, x)).clamp(0, 1)


def test_a_plug_in_attack_gets_the_bound_form():
    model = _linear()
    x, y = _batch()
    want = (x + 0.05).clamp(0, 1)
    assert torch.allclose(Shift(scale=0.5)(model, x, y, 0.1), want)
    assert torch.allclose(Shift(model, eps=0.1, scale=0.5)(x, y), want)
    assert torch.allclose(Shift(model, 0.5)(x, y), (x + 0.5 * 8 / 255).clamp(0, 1))  # default eps
    with pytest.raises(SgtlabError):
        Shift(eps=0.1)

    class Half(Shift):  # a subclass with its own constructor calling its parent's
        def __init__(self):
            super().__init__(scale=0.5)

    class Same(Shift):  # no constructor of its own
        pass

    assert torch.allclose(Half(model, eps=0.1)(x, y), want)
    assert torch.allclose(Same(model, eps=0.1, scale=0.5)(x, y), want)

    class Bare(Attack):  # no constructor anywhere: both forms (Attack's own constructor binds)
        def perturb(self, model, x, y, eps, **kw):
            return (x - eps).clamp(0, 1)

    assert torch.allclose(Bare()(model, x, y, 0.1), (x - 0.1).clamp(0, 1))
    assert torch.allclose(Bare(model, eps=0.1)(x, y), (x - 0.1).clamp(0, 1))
    assert torch.allclose(Bare(model)(x, y), (x - 8 / 255).clamp(0, 1))


def test_repr_rebuilds_the_attack():
    """repr names the class and its parameters (not the bound model): evaluating it rebuilds an
    attack with the same parameters."""
    model = _linear()
    for atk in (FGSM(random_start=True, alpha=0.02), MIFGSM(model, eps=0.1, steps=3, decay=0.5), Shift(scale=2.0)):
        again = eval(repr(atk), {"FGSM": FGSM, "MIFGSM": MIFGSM, "Shift": Shift})
        assert type(again) is type(atk) and vars(again) == {k: v for k, v in vars(atk).items()
                                                            if not k.startswith("_")}


# --- eps and input validation -----------------------------------------------------------------

@pytest.mark.parametrize("eps", [-0.1, float("nan"), "0.1", torch.tensor([0.1, -0.1, 0.1]),
                                 torch.full((3, 1), 0.1), torch.tensor([0.1, 0.2]), torch.full((1, 3), 0.1)],
                         ids=["negative", "nan", "str", "negative-entry", "2d", "wrong-length", "2d-row"])
def test_bad_eps_is_refused_before_the_model_runs(eps):
    x, y = _batch()
    with pytest.raises(SgtlabError, match="eps"):
        FGSM()(Never(), x, y, eps)


@pytest.mark.parametrize("eps", [0, 0.0, torch.tensor(0.1), torch.tensor([0.1]), torch.tensor([0.1, 0.0, 0.2]),
                                 torch.tensor([0.1, 0.0, 0.2], dtype=torch.float64)],
                         ids=["int0", "0", "0d", "length1", "per-sample", "float64"])
def test_good_eps_forms_give_the_closed_form(eps):
    """A number, a 0-d tensor, a length-1 tensor (one eps for all) or one eps per sample, in any
    float dtype: the images keep the images' dtype."""
    model = _linear()
    x, y = _batch()
    ref = eps.float().expand(3) if isinstance(eps, torch.Tensor) else float(eps)
    for atk in (FGSM(), build_attack("pgd", steps=3, alpha=0.02, random_start=False), build_attack("mifgsm", steps=2)):
        out = atk(model, x, y, eps)
        assert out.dtype == x.dtype
        step = ref  # FGSM, and MI-FGSM's steps of eps / steps all along one sign: the edge of the ball
        if atk.name == "pgd":  # 3 steps of 0.02, within the ball of eps
            step = torch.minimum(torch.as_tensor(ref), torch.tensor(0.06)) if isinstance(ref, torch.Tensor) \
                else min(ref, 0.06)
        torch.testing.assert_close(out, _fgsm_closed_form(x, y, step))


def test_a_length_one_eps_is_one_eps_for_all_with_restarts_and_early_stop():
    model = _threshold()
    x = torch.tensor([0.85, 0.88, 0.2, 0.5]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    y = torch.zeros(4, dtype=torch.long)
    for restarts in (1, 3):
        atk = build_attack("pgd", steps=4, alpha=0.03, restarts=restarts)
        torch.manual_seed(0)
        a = atk(model, x, y, torch.tensor([0.1]), early_stop=True)
        torch.manual_seed(0)
        b = atk(model, x, y, 0.1, early_stop=True)
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", ["3d", "int", "y2d", "y-length", "above", "below", "nan"])
def test_bad_inputs_are_refused_before_the_model_runs(case):
    x, y = _batch()
    x = {"3d": x[:, 0], "int": (x * 255).to(torch.uint8), "above": x + 0.5, "below": x - 0.5,
         "nan": x.masked_fill(x > 0.6, float("nan"))}.get(case, x)
    y = {"y2d": y[:, None], "y-length": y[:2]}.get(case, y)
    with pytest.raises(SgtlabError):
        FGSM()(Never(), x, y, 0.1)


def test_images_at_the_ends_of_the_range_are_accepted():
    model = _linear()
    x = torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    y = torch.tensor([0, 1])
    torch.testing.assert_close(FGSM()(model, x, y, 0.1), _fgsm_closed_form(x, y, 0.1))


def test_an_empty_batch_is_returned_unchanged():
    x, y = torch.empty(0, 1, 2, 2), torch.empty(0, dtype=torch.long)
    assert FGSM()(Never(), x, y, 0.1).shape == (0, 1, 2, 2)


# --- the uniform random start -----------------------------------------------------------------

def test_uniform_start_is_uniform_on_each_samples_ball():
    """U(-eps_i, eps_i) per sample: inside the ball, mean 0, variance eps^2 / 3, reaching both ends;
    a float eps draws exactly `torch.empty_like(x).uniform_(-eps, eps)` on the global RNG (docs)."""
    x = torch.zeros(2, 1, 100, 100)
    eps = torch.tensor([0.05, 0.3]).reshape(2, 1, 1, 1)
    for e, d in ((eps, None), (0.3, None)):
        torch.manual_seed(0)
        d = uniform_delta(x, e)
        bound = e if isinstance(e, torch.Tensor) else torch.full((2, 1, 1, 1), e)
        for i in range(2):
            v, b = d[i].flatten(), bound[i].item()
            n = v.numel()
            assert v.abs().max() <= b
            assert abs(v.mean().item()) < 5 * b / math.sqrt(3 * n)
            assert v.var().item() == pytest.approx(b * b / 3, rel=0.05)
            assert v.min() < -0.99 * b and v.max() > 0.99 * b
            # the fraction below the midpoint of [0, b] is 3/4 for a uniform law
            assert (v < b / 2).float().mean().item() == pytest.approx(0.75, abs=0.02)
    torch.manual_seed(5)
    d = uniform_delta(x, 0.2)
    torch.manual_seed(5)
    assert torch.equal(d, torch.empty_like(x).uniform_(-0.2, 0.2))


@pytest.mark.parametrize("eps", [0.2, torch.tensor([0.1, 0.2]).reshape(2, 1, 1, 1)], ids=["float", "tensor"])
def test_uniform_start_draws_from_the_generator_it_is_given(eps):
    """With a generator: the same seed gives the same start, and the global RNG is not touched."""
    x = torch.zeros(2, 1, 3, 3)
    torch.manual_seed(1)
    a = uniform_delta(x, eps, generator=torch.Generator().manual_seed(9))
    after = torch.rand(3)
    torch.manual_seed(1)
    b = uniform_delta(x, eps, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(1)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), after)
    assert not torch.equal(a, uniform_delta(x, eps, generator=torch.Generator().manual_seed(10)))


# --- the shared iteration loop ----------------------------------------------------------------

def _threshold() -> nn.Module:
    return Threshold()  # class 1 iff the mean pixel > 0.9: every step moves every pixel up


class _Well(nn.Module):
    """Never fooled; the loss of class 0 is largest at every pixel = 0.52, so signed steps of 0.03
    from 0.5 oscillate: 0.53, 0.50, 0.53, ..."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = -100 * ((x.flatten(1) - 0.52) ** 2).sum(1) - 5 + 0 * self.anchor
        return torch.stack([torch.zeros_like(z), z], 1)


def test_early_stop_returns_every_sample_when_one_is_left():
    """Two samples are fooled after one and two steps; the third is never fooled and must come back
    as in the full run (six steps of 0.03 up), also when it is the last one left."""
    model = _threshold()
    x = torch.tensor([0.88, 0.85, 0.2]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    y = torch.zeros(3, dtype=torch.long)
    for atk in (build_attack("pgd", steps=6, alpha=0.03, random_start=False), build_attack("mifgsm", steps=6, alpha=0.03)):
        early = atk(model, x, y, 0.3, early_stop=True)
        torch.testing.assert_close(early[:, 0, 0, 0], torch.tensor([0.91, 0.91, 0.38]))


def test_the_first_gradient_handed_in_serves_the_first_step_only():
    """The sweep hands in the clean gradient for the first step; later steps must use the gradient
    at the current iterate: on the well the steps oscillate (0.53, 0.50, ...), never drift."""
    model = _Well()
    x, y = torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, dtype=torch.long)
    xg = x.clone().requires_grad_(True)
    clean_grad, = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), xg)
    for early_stop in (False, True):
        for steps, end in ((2, 0.5), (3, 0.53), (4, 0.5)):
            atk = build_attack("pgd", steps=steps, alpha=0.03, random_start=False)
            out = atk.perturb(model, x, y, 0.1, early_stop=early_stop, clean_grad=clean_grad)
            torch.testing.assert_close(out, torch.full_like(x, end), atol=1e-6, rtol=0)


def test_iterate_runs_every_step_unless_told_to_stop_early():
    """`iterate` (the loop a plug-in iterative attack can reuse) runs all its steps by default: a
    sample fooled after two steps of 0.03 still walks on (0.85 -> 0.97); with early stop it stays
    at 0.91."""
    from sgtlab.attacks.base import iterate, project

    model = _threshold()
    x, y = torch.full((1, 1, 2, 2), 0.85), torch.zeros(1, dtype=torch.long)

    def step(x_adv, grad, x, state):
        return project(x_adv + 0.03 * grad.sign(), x, 0.3)

    torch.testing.assert_close(iterate(model, x, y, x.clone(), 4, step, {}), x + 0.12)
    torch.testing.assert_close(iterate(model, x, y, x.clone(), 4, step, {}, True), x + 0.06)
