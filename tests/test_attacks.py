"""Attacks: equality with torchattacks 3.5.1, the eps-ball, masks, restarts, early stop, mode/grad
hygiene and bad input."""
from __future__ import annotations

import pytest
import torch

from sgtlab.attacks import PGD, Ensemble, attack_names, build_attack, fgsm, mifgsm, pgd
from sgtlab.attacks.base import project
from sgtlab.data import load_dataset
from sgtlab.errors import SgtlabError
from sgtlab.models import build_model

N = 48


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("sgt-cnn", 1, 10, (0.1307,), (0.3081,))
    data = load_dataset("mnist5k", "test")
    return model, data.x[:N].clone(), data.y[:N].clone()


def fooled(model, adv, y):
    with torch.no_grad():
        return model.eval()(adv).argmax(1) != y


# --- torchattacks equality -------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_fgsm_equals_torchattacks(setup, eps):
    ta = pytest.importorskip("torchattacks")
    model, x, y = setup
    model.train()  # both must attack in eval mode
    assert torch.equal(fgsm(model, x, y, eps), ta.FGSM(model, eps=eps)(x, y))


@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("eps,steps", [(0.1, 10), (0.3, 7)])
def test_pgd_equals_torchattacks(setup, random_start, eps, steps):
    ta = pytest.importorskip("torchattacks")
    model, x, y = setup
    model.train()
    torch.manual_seed(123)
    ours = pgd(model, x, y, eps, steps=steps, random_start=random_start)
    torch.manual_seed(123)
    ref = ta.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)(x, y)
    assert torch.equal(ours, ref)
    torch.manual_seed(123)  # an explicit alpha too
    ours = pgd(model, x, y, eps, steps=steps, alpha=0.01, random_start=random_start)
    torch.manual_seed(123)
    ref = ta.PGD(model, eps=eps, alpha=0.01, steps=steps, random_start=random_start)(x, y)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("eps,steps,decay", [(0.1, 10, 1.0), (0.3, 5, 0.5)])
def test_mifgsm_equals_torchattacks(setup, eps, steps, decay):
    ta = pytest.importorskip("torchattacks")
    model, x, y = setup
    ours = mifgsm(model, x, y, eps, steps=steps, decay=decay)
    ref = ta.MIFGSM(model, eps=eps, alpha=eps / steps, steps=steps, decay=decay)(x, y)
    assert torch.equal(ours, ref)


# --- the eps-ball, [0, 1], masks ----------------------------------------------------------------
ALL = [("fgsm", {}), ("fgsm", {"random_start": True, "alpha": 0.2}), ("pgd", {}), ("pgd", {"restarts": 2}),
       ("mifgsm", {}), ("ensemble", {"members": ["fgsm", "mifgsm"]})]


@pytest.mark.parametrize("name,params", ALL)
@pytest.mark.parametrize("per_sample", [False, True])
def test_adversarial_images_in_ball_and_range(setup, name, params, per_sample):
    model, x, y = setup
    eps = torch.linspace(0.0, 0.3, N) if per_sample else 0.25
    adv = build_attack(name, **params)(model, x, y, eps)
    bound = eps.view(-1, 1, 1, 1) if per_sample else eps
    assert adv.shape == x.shape and not adv.requires_grad
    assert ((adv - x).abs() <= bound + 1e-6).all()  # + one float ulp, as torchattacks
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().amax() > 0.2  # it did move


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr", "square"])
def test_reference_attacks_in_ball_and_leave_rng(setup, name):
    pytest.importorskip("pyautoattack")
    model, x, y = setup
    params = {"queries": 100} if name == "square" else {"steps": 10}
    state = torch.get_rng_state()
    adv = build_attack(name, **params)(model, x[:16], y[:16], 0.3)
    assert torch.equal(state, torch.get_rng_state())  # the reference code reseeds; we restore
    assert ((adv - x[:16]).abs() <= 0.3 + 1e-6).all() and adv.min() >= 0 and adv.max() <= 1
    assert fooled(model, adv, y[:16]).float().mean() > 0.5


def test_square_draws_the_reference_numbers_from_its_own_generator(setup):
    """sgtlab's Square seeds a generator of its own instead of the global one (so batches may run
    side by side): the adversarial images are those of pyautoattack's SquareAttack, bit for bit, and
    the global stream is neither read nor moved."""
    SquareAttack = pytest.importorskip("pyautoattack.square").SquareAttack
    model, x, _ = setup
    x = x[:24]
    with torch.no_grad():  # an untrained model: its own predictions as labels, so every image is attacked
        y = model.eval()(x).argmax(1)
    with torch.random.fork_rng():
        ref = SquareAttack(model, norm="Linf", n_queries=100, eps=0.3, p_init=0.8, n_restarts=2, seed=3,
                           loss="margin", device=x.device).perturb(x, y)
    state = torch.get_rng_state()
    ours = build_attack("square", queries=100, restarts=2, seed=3)(model, x, y, 0.3)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(ours, project(ref, x, 0.3)) and (ours != x).any()
    assert fooled(model, ours, y).any()


def test_pgd_mask_limits_pixels(setup):
    model, x, y = setup
    mask = (torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    adv = pgd(model, x, y, 0.3, mask=mask)
    moved = (adv != x).any(1, keepdim=True)
    assert not (moved & (mask == 0)).any()
    assert (moved & (mask == 1)).float().mean() > 0.1


def test_restarts_keep_worst_case(setup):
    model, x, y = setup
    torch.manual_seed(5)
    one = fooled(model, pgd(model, x, y, 0.08, steps=3), y)
    torch.manual_seed(5)  # same seed: the first restart is the single run, so restarts can only add
    three = fooled(model, pgd(model, x, y, 0.08, steps=3, restarts=4), y)
    assert (three | ~one).all() and three.sum() >= one.sum()


@pytest.mark.parametrize("name", ["pgd", "mifgsm"])
def test_early_stop_is_never_weaker(setup, name):
    model, x, y = setup
    model.eval()
    attack = build_attack(name, steps=10)
    kw = {"init_delta": torch.empty_like(x).uniform_(-0.1, 0.1)} if name == "pgd" else {}
    full = fooled(model, attack.perturb(model, x, y, 0.1, **kw), y)
    early_adv = attack.perturb(model, x, y, 0.1, early_stop=True, **kw)
    early = fooled(model, early_adv, y)
    assert (early | ~full).all()
    assert ((early_adv - x).abs() <= 0.1 + 1e-6).all()


def test_ensemble_is_worst_case_of_members(setup):
    model, x, y = setup
    members = [build_attack("fgsm"), build_attack("mifgsm", steps=3)]
    ens = fooled(model, Ensemble(members)(model, x, y, 0.1), y)
    for m in members:
        assert (ens | ~fooled(model, m(model, x, y, 0.1), y)).all()


# --- hygiene and bad input ------------------------------------------------------------------
def test_model_mode_and_grads_restored(setup):
    model, x, y = setup
    model.train()
    model[1][3].eval()  # a mixed state must come back as it was
    modes = [m.training for m in model.modules()]
    p = next(model.parameters())
    p.grad = torch.full_like(p, 7.0)
    others = [q for q in model.parameters() if q is not p]
    for name, params in ALL:
        build_attack(name, **params)(model, x, y, 0.1)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(p.grad, torch.full_like(p, 7.0)) and all(q.grad is None for q in others)
    model.eval()


@pytest.mark.parametrize("call,match", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), "eps"),
    (lambda m, x, y: pgd(m, x, y, float("nan")), "eps"),
    (lambda m, x, y: pgd(m, x, y, torch.tensor([0.1] * (N - 1) + [-0.1])), "eps"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), "steps"),
    (lambda m, x, y: pgd(m, x, y, 0.1, restarts=0), "restarts"),
    (lambda m, x, y: mifgsm(m, x, y, 0.1, steps=0), "steps"),
    (lambda m, x, y: pgd(m, x * 2, y, 0.1), r"\[0, 1\]"),
    (lambda m, x, y: fgsm(m, x - 0.5, y, 0.1), r"\[0, 1\]"),
    (lambda m, x, y: fgsm(m, x, y[:-1], 0.1), "labels"),
    (lambda m, x, y: fgsm(m, x[0], y, 0.1), "N x C x H x W"),
    (lambda m, x, y: build_attack("cw")(m, x, y, 0.1), "unknown attack 'cw'; choose one of"),
])
def test_bad_input_is_refused_before_work(setup, call, match):
    _, x, y = setup

    class Untouchable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the model was run")

    with pytest.raises(SgtlabError, match=match):
        call(Untouchable(), x, y)


def test_registry_names():
    assert {"fgsm", "pgd", "mifgsm", "apgd-ce", "apgd-dlr", "square", "ensemble"} <= set(attack_names())
    assert isinstance(build_attack("pgd", steps=3), PGD)


def test_reference_attacks_need_pyautoattack(setup, monkeypatch):
    import sys

    model, x, y = setup
    monkeypatch.setitem(sys.modules, "pyautoattack.square", None)  # as if not installed
    with pytest.raises(SgtlabError, match="pip install"):
        build_attack("square")(model, x, y, 0.1)
