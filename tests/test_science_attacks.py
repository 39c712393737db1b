"""Attacks and the robustness sweep against closed forms on hand-built models.

The models are piecewise simple so that what an attack must reach, and at which eps a sample must
first be fooled, follows from the maths alone (no comparison with the code under test).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgtlab.attacks import build_attack, fgsm, mifgsm, pgd
from sgtlab.evaluate.robustness import robustness_sweep


class Threshold(nn.Module):
    """Two classes; class 1 iff the mean pixel exceeds `t`; the loss of class 0 rises with the
    mean pixel (a linear logit), so every gradient attack pushes every pixel up by its full budget."""

    def __init__(self, t: float = 0.9):
        super().__init__()
        self.lin = nn.Linear(1, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.0], [10.0]]))
            self.lin.bias.copy_(torch.tensor([0.0, -10.0 * t]))

    def forward(self, x):
        return self.lin(x.flatten(1).mean(1, keepdim=True))


class Lottery(nn.Module):
    """Zero gradient everywhere; class 1 iff the single pixel exceeds 0.75. From x = 0.5 at eps 0.3 a
    PGD run is fooled only by its random start: probability 0.05 / 0.6 = 1/12 per restart."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        v = x.flatten(1)[:, 0]
        z = -5 + 10 * (v > 0.75).float() + 0 * v + 0 * self.anchor
        return torch.stack([torch.zeros_like(z), z], 1)


class Kink(Lottery):
    """Never fooled; the loss rises with the mean pixel m up to m = 1 and falls above it."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        z = 10 * m - 20 * torch.relu(m - 1) - 15 + 0 * self.anchor
        return torch.stack([torch.zeros_like(z), z], 1)


def test_pgd_restarts_each_draw_a_new_start():
    """Fooled fraction after R restarts = 1 - (11/12)^R (closed form); 1 and 8 restarts differ by ~0.44."""
    model, n = Lottery(), 1200
    x, y = torch.full((n, 1, 1, 1), 0.5), torch.zeros(n, dtype=torch.long)
    for restarts in (1, 8):
        torch.manual_seed(restarts)
        adv = pgd(model, x, y, 0.3, steps=3, restarts=restarts)
        fooled = (model(adv).argmax(1) != y).float().mean().item()
        expect = 1 - (11 / 12) ** restarts
        sd = math.sqrt(expect * (1 - expect) / n)
        assert abs(fooled - expect) < 5 * sd, (restarts, fooled, expect)
        assert (adv - x).abs().max() <= 0.3 + 1e-6


def test_pgd_restarts_keep_the_worst_case_loss_when_none_fools():
    """No restart can fool (threshold 0.9 out of reach of x = 0.2 at eps 0.3): every PGD run ends at
    the loss maximum x + eps, whatever the restarts; a single-step run from a random start does not."""
    model = Threshold(0.9)
    x, y = torch.full((256, 1, 2, 2), 0.2), torch.zeros(256, dtype=torch.long)
    torch.manual_seed(0)
    adv = pgd(model, x, y, 0.3, steps=1, alpha=0.05, restarts=6)
    one = pgd(model, x, y, 0.3, steps=1, alpha=0.05, restarts=1)
    m6, m1 = adv.flatten(1).mean(1), one.flatten(1).mean(1)
    # the mean pixel (the loss) of the best of 6 draws is ~1.3 sd (~0.09) above one draw's on average;
    # the average over 256 samples has an sd of ~0.005
    assert m6.mean() > m1.mean() + 0.05, (m6.mean(), m1.mean())
    assert (model(adv).argmax(1) == y).all()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "mifgsm"])
def test_sweep_records_the_smallest_fooling_eps_exactly(name):
    """Mean pixel x + eps > 0.9 fools: x = 0.85 first at 0.1, 0.75 at 0.2, 0.55 at 0.5, 0.3 never,
    0.95 is wrong when clean (0)."""
    model = Threshold(0.9)
    xs = torch.tensor([0.85, 0.75, 0.55, 0.3, 0.95])
    x, y = xs.reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(), torch.zeros(5, dtype=torch.long)
    res = robustness_sweep(model, (x, y), [name], [0.1, 0.2, 0.5], progress=False)
    assert res.first_fooled[name].tolist() == [0.1, 0.2, 0.5, math.inf, 0.0]
    assert res.robust_accuracy[name] == pytest.approx({0.1: 0.6, 0.2: 0.4, 0.5: 0.2})
    assert res.clean_accuracy == pytest.approx(0.8)


def test_fgsm_and_mifgsm_move_by_the_closed_form():
    model = Threshold(2.0)  # never fooled: the steps are all the same sign
    x, y = torch.full((3, 1, 2, 2), 0.4), torch.zeros(3, dtype=torch.long)
    assert torch.allclose(fgsm(model, x, y, 0.25), x + 0.25)
    assert torch.allclose(mifgsm(model, x, y, 0.25, steps=5), x + 0.25)
    assert torch.allclose(mifgsm(model, x, y, 0.25, steps=5, alpha=0.01), x + 0.05)
    assert torch.allclose(pgd(model, x, y, 0.25, steps=6, alpha=0.1), x + 0.25)  # from any start: projected
    assert torch.allclose(pgd(model, x, y, 0.25, steps=2, alpha=0.05, random_start=False), x + 0.1)
    torch.manual_seed(0)
    assert torch.allclose(fgsm(model, x, y, 0.25, random_start=True, alpha=1.0), x + 0.25)
    x1 = torch.full((3, 1, 2, 2), 0.9)
    assert torch.allclose(fgsm(model, x1, y, 0.25), torch.ones_like(x1))  # clipped to [0, 1]
    assert build_attack("pgd", steps=3).steps == 3


# -- a fast oracle: torchattacks on a tiny CNN (the mutation runs use these instead of the MNIST ones) --

def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 3
    return model, x, y


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_tiny_equals_torchattacks(eps):
    ta = pytest.importorskip("torchattacks")
    model, x, y = _tiny()
    model.train()  # both attack in eval mode
    assert torch.equal(fgsm(model, x, y, eps), ta.FGSM(model, eps=eps)(x, y))
    for steps, alpha, rs in ((4, None, True), (3, 0.02, False), (5, 0.07, True)):
        torch.manual_seed(7)
        ours = pgd(model, x, y, eps, steps=steps, alpha=alpha, random_start=rs)
        torch.manual_seed(7)
        ref = ta.PGD(model, eps=eps, alpha=2.5 * eps / steps if alpha is None else alpha, steps=steps,
                     random_start=rs)(x, y)
        assert torch.equal(ours, ref), (steps, alpha, rs)
    for steps, decay, alpha in ((5, 1.0, None), (4, 0.5, 0.03)):
        ref = ta.MIFGSM(model, eps=eps, alpha=eps / steps if alpha is None else alpha, steps=steps, decay=decay)(x, y)
        assert torch.equal(mifgsm(model, x, y, eps, steps=steps, decay=decay, alpha=alpha), ref)
    assert model.training and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("eps", [0.05, torch.tensor([0.05] * 8 + [0.2] * 8)])
def test_tiny_masks_early_stop_and_per_sample_eps(eps):
    """Early stop is never weaker (same images for samples never fooled); a mask limits the
    perturbation to its pixels; a per-sample eps bounds each sample."""
    model, x, y = _tiny()
    bound = (eps if isinstance(eps, torch.Tensor) else torch.full((16,), eps)).reshape(-1, 1, 1, 1)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1
    for attack in (build_attack("pgd", steps=4), build_attack("mifgsm", steps=4), build_attack("fgsm")):
        torch.manual_seed(1)
        full = attack(model, x, y, eps)
        assert ((full - x).abs() <= bound + 1e-6).all() and full.min() >= 0 and full.max() <= 1
        if attack.supports_early_stop:
            torch.manual_seed(1)
            early = attack(model, x, y, eps, early_stop=True)
            with torch.no_grad():
                f_full, f_early = model(full).argmax(1) != y, model(early).argmax(1) != y
            assert (f_early >= f_full).all()
            assert torch.equal(early[~f_early], full[~f_early])
    torch.manual_seed(1)
    masked = pgd(model, x, y, 0.3, steps=3, mask=mask)
    assert ((masked - x).abs() * (1 - mask) == 0).all() and ((masked - x).abs() * mask).sum() > 0


def test_zero_gradient_moves_nothing():
    """sign(0) = 0: without a random start, a model with no input gradient keeps every image."""
    model = Lottery()
    x, y = torch.full((4, 1, 1, 1), 0.5), torch.zeros(4, dtype=torch.long)
    for adv in (fgsm(model, x, y, 0.3), mifgsm(model, x, y, 0.3, steps=3),
                pgd(model, x, y, 0.3, steps=3, random_start=False)):
        assert torch.equal(adv, x)


def test_fast_at_fgsm_is_one_step_from_the_random_start():
    """x0 = clip(x + U(-eps, eps)) drawn as torchattacks does, then x0 + alpha sign(grad) (alpha
    defaults to eps), projected onto the eps-ball and [0, 1]; images near 0 and 1 are clipped."""
    x = torch.tensor([0.05, 0.5, 0.95]).repeat(32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    y = torch.zeros(len(x), dtype=torch.long)
    # gradient sign +1 on [0, 1] (Kink: -1 above 1, where an unclipped start would step); zero gradient
    for model, sign in ((Threshold(2.0), 1.0), (Kink(), 1.0), (Lottery(), 0.0)):
        for alpha in (0.05, None):
            torch.manual_seed(3)
            adv = fgsm(model, x, y, 0.2, random_start=True, alpha=alpha)
            torch.manual_seed(3)
            x0 = (x + torch.empty_like(x).uniform_(-0.2, 0.2)).clamp(0, 1)
            step = 0.2 if alpha is None else alpha
            expect = (x + (x0 + step * sign - x).clamp(-0.2, 0.2)).clamp(0, 1)
            assert torch.allclose(adv, expect, atol=1e-6), (model, alpha)


@pytest.mark.parametrize("attack", [fgsm, mifgsm, pgd])
def test_bad_images_are_refused_unless_checks_are_off(attack):
    from sgtlab.errors import SgtlabError

    model = Threshold(2.0)
    x, y = torch.full((2, 1, 2, 2), 1.5), torch.zeros(2, dtype=torch.long)
    with pytest.raises(SgtlabError, match=r"\[0, 1\]"):
        attack(model, x, y, 0.1)
    assert attack(model, x, y, 0.1, check=False).shape == x.shape


def test_defaults_are_the_spec_ones():
    """SPEC defaults: PGD and MI-FGSM 10 steps, PGD alpha 2.5 eps / steps with a random start,
    MI-FGSM alpha eps / steps and decay 1.0; non-positive steps or alpha are refused."""
    from sgtlab.errors import SgtlabError

    ta = pytest.importorskip("torchattacks")
    model, x, y = _tiny()
    ref = ta.MIFGSM(model, eps=0.1, alpha=0.01, steps=10, decay=1.0)(x, y)
    assert torch.equal(mifgsm(model, x, y, 0.1), ref) and torch.equal(build_attack("mifgsm")(model, x, y, 0.1), ref)
    for run in (lambda: pgd(model, x, y, 0.1), lambda: build_attack("pgd")(model, x, y, 0.1)):
        torch.manual_seed(2)
        ours = run()
        torch.manual_seed(2)
        assert torch.equal(ours, ta.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=True)(x, y))
    for name in ("pgd", "mifgsm"):
        for bad in ({"steps": 0}, {"alpha": 0.0}, {"alpha": -1.0}):
            with pytest.raises(SgtlabError):
                build_attack(name, **bad)


def test_early_stop_keeps_the_first_fooling_iterate():
    """Mean pixel 0.85 + 0.03 per step passes 0.9 at the second step: with early stop the image is
    kept there (0.91); without, the attack goes on to the edge of the ball (1.0 after clipping)."""
    model = Threshold(0.9)
    x, y = torch.full((2, 1, 2, 2), 0.85), torch.zeros(2, dtype=torch.long)
    for attack in (build_attack("mifgsm", steps=10, alpha=0.03), build_attack("pgd", steps=10, alpha=0.03,
                                                                               random_start=False)):
        assert torch.allclose(attack(model, x, y, 0.3, early_stop=True), x + 0.06, atol=1e-6)
        assert torch.allclose(attack(model, x, y, 0.3), torch.ones_like(x))


@pytest.mark.parametrize("random_start,restarts", [(True, 1), (False, 1), (False, 2), (True, 3)])
def test_pgd_flags_say_what_perturb_uses(random_start, restarts):
    """The sweep passes its noise only to attacks with `takes_init_delta` and the clean gradient only
    to those with `uses_clean_grad`: each flag is true exactly when perturb reads that argument."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    x, y = torch.rand(4, 2, 2, 2) * 0.5 + 0.25, torch.tensor([0, 1, 0, 1])
    attack = build_attack("pgd", steps=1, alpha=0.01, random_start=random_start, restarts=restarts)  # no saturation

    def run(**kw):
        torch.manual_seed(1)
        return attack.perturb(model, x, y, 0.1, **kw)

    base = run()
    uses_delta = not torch.equal(run(init_delta=torch.full_like(x, -0.1)), base)
    uses_grad = not torch.equal(run(clean_grad=-torch.ones_like(x)), base)
    assert (attack.takes_init_delta, attack.uses_clean_grad) == (uses_delta, uses_grad) == (
        random_start, not random_start and restarts == 1)


def test_pgd_mask_of_any_dtype_limits_the_perturbation():
    # a 0/1 mask given as bool, float64 or float32 marks the same pixels; outside them nothing moves
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    x, y = torch.rand(3, 2, 2, 2) * 0.5 + 0.25, torch.tensor([0, 1, 0])
    marked = torch.tensor([[True, False], [False, True]]).expand(3, 1, 2, 2)
    outs = []
    for mask in (marked, marked.double(), marked.float()):
        torch.manual_seed(1)
        outs.append(pgd(model, x, y, 0.1, steps=3, mask=mask))
    assert all(o.dtype == torch.float32 and torch.equal(o, outs[0]) for o in outs)
    assert torch.equal(outs[0][~marked.expand_as(x)], x[~marked.expand_as(x)])
    assert (outs[0] - x)[marked.expand_as(x)].abs().max() > 0


def test_pgd_restarts_keep_each_samples_eps_and_mask():
    # with restarts, per-sample eps (0 for the first image) and a mask still bound every image:
    # |adv - x| <= eps_i on the marked pixels, nothing moves elsewhere, the eps = 0 image not at all
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    x, y = torch.rand(3, 2, 2, 2) * 0.5 + 0.25, torch.tensor([0, 1, 0])
    eps = torch.tensor([0.0, 0.1, 0.05])
    marked = torch.tensor([[True, False], [False, True]]).expand(3, 1, 2, 2)
    adv = pgd(model, x, y, eps, steps=3, restarts=3, mask=marked)
    move = (adv - x).abs()
    assert torch.equal(adv[0], x[0]) and torch.equal(adv[~marked.expand_as(x)], x[~marked.expand_as(x)])
    assert (move.flatten(1).max(1).values <= eps + 1e-7).all() and move[1:].flatten(1).max(1).values.min() > 0


def _linear(weight, bias):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(weight, dtype=torch.float32))
        model[1].bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return model


def test_pgd_restarts_early_stop_and_ties():
    x, y, start = torch.full((1, 1, 2, 2), 0.5), torch.tensor([0]), torch.zeros(1, 1, 2, 2)
    attack = build_attack("pgd", steps=5, alpha=0.02, restarts=2)
    # logit_0 - logit_1 = sum(x) - 1.95 = 0.05: one step of 0.02 on the 4 pixels (to 0.48) fools it;
    # with early stop the image stays there, without it walks on to the eps = 0.1 boundary
    model = _linear([[1, 1, 1, 1], [0, 0, 0, 0]], [-1.95, 0])
    torch.testing.assert_close(attack.perturb(model, x, y, 0.1, init_delta=start, early_stop=True), x - 0.02)
    torch.testing.assert_close(attack.perturb(model, x, y, 0.1, init_delta=start), x - 0.1)
    # a constant model: no restart is worse than the first, which is kept (its start, as nothing moves)
    flat = _linear([[0, 0, 0, 0], [0, 0, 0, 0]], [1.0, 0])
    first = torch.tensor([0.05, -0.05, 0.1, 0.0]).reshape(1, 1, 2, 2)
    assert torch.equal(attack.perturb(flat, x, y, 0.1, init_delta=first), x + first)


def test_pgd_restarts_on_a_single_image():
    """A batch of one image gets all its restarts too: fooled in 1 - (11/12)^8 = 50 % of runs
    (not the 1/12 of one restart), and the fooling image is returned."""
    model, x, y = Lottery(), torch.full((1, 1, 1, 1), 0.5), torch.zeros(1, dtype=torch.long)
    torch.manual_seed(0)
    fooled = sum(int(model(pgd(model, x, y, 0.3, steps=1, restarts=8)).argmax(1).item() != 0) for _ in range(60))
    assert fooled > 15, fooled  # one restart: about 5 of 60


@pytest.mark.parametrize("random_start", [False, True])
def test_fgsm_uses_clean_grad_says_what_perturb_uses(random_start):
    model = _linear([[1, -1, 1, -1], [0, 0, 0, 0]], [0.0, 0])
    x, y = torch.full((1, 1, 2, 2), 0.5), torch.tensor([0])
    attack = build_attack("fgsm", random_start=random_start)

    def run(**kw):
        torch.manual_seed(1)
        return attack.perturb(model, x, y, 0.1, **kw)

    uses_grad = not torch.equal(run(clean_grad=torch.ones_like(x)), run())
    assert attack.uses_clean_grad == uses_grad == (not random_start)
    if not random_start:  # x + eps * sign(grad): the CE gradient of class 0 is -w
        torch.testing.assert_close(run(), x - 0.1 * torch.tensor([1.0, -1, 1, -1]).reshape(1, 1, 2, 2))
