"""FMN, the minimum-norm attack: exact on a linear model, in line with the PGD sweep on a trained
CNN, and one more member of the ensemble that can only lower it."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgtlab.attacks import FMN, build_attack, fmn
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.robustness import robustness_sweep


class Linear2(nn.Module):
    """A binary linear classifier on images: logits (0, w.x + b)."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b = nn.Parameter(w.flatten()), nn.Parameter(torch.tensor(b))

    def forward(self, x):
        f = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(f), f], 1)


def exact_radius(w: torch.Tensor, b: float, x: torch.Tensor) -> float:
    """The smallest L-inf perturbation inside [0, 1] that flips sign(w.x + b): the decrease
    sum_i |w_i| min(r, room_i) (room: how far pixel i can move the helpful way) reaches |f|; it is
    piecewise linear and increasing in r, so bisection finds r to 1e-12 (inf: the box forbids it)."""
    w, x = w.double().flatten(), x.double().flatten()
    f = float(w @ x + b)
    s = -1.0 if f > 0 else 1.0  # the direction of the pixels that lower |f|
    room = torch.where(s * w > 0, 1 - x, x)

    def reach(r):
        return float((w.abs() * torch.clamp(room, max=r)).sum())

    if reach(1.0) < abs(f):
        return math.inf
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reach(mid) < abs(f) else (lo, mid)
    return hi


@pytest.mark.parametrize("box", ["interior", "clipped"])
def test_fmn_finds_a_linear_models_exact_radius(box):
    g = torch.Generator().manual_seed(0)
    n = 16
    w = torch.randn(n, 1, 7, 7, generator=g)[0]
    b = 0.3
    if box == "interior":  # pixels far from the box: the radius is |f| / ||w||_1
        x = 0.35 + 0.3 * torch.rand(n, 1, 7, 7, generator=g)
    else:  # pixels at 0 or 1: the box clips the best direction on many of them
        x = (torch.rand(n, 1, 7, 7, generator=g) > 0.5).float() * 0.9 + 0.05 * torch.rand(n, 1, 7, 7, generator=g)
    model = Linear2(w, b)
    with torch.no_grad():
        y = model(x).argmax(1)
    exact = torch.tensor([exact_radius(w, b, xi) for xi in x])
    if box == "interior":
        f = (x.flatten(1).double() @ w.flatten().double() + b).abs()
        assert torch.allclose(exact.double(), f / w.abs().sum().double(), rtol=1e-9)
        assert bool((exact < 0.3).all())
    adv, radius = fmn(model, x, y, steps=200)
    finite = torch.isfinite(exact)
    assert bool(finite.sum() >= n // 2)
    # never below the exact radius (its images are verified adversarial), at most 1 % above it
    assert bool((radius[finite].double() >= exact[finite].double() - 1e-6).all())
    assert bool((radius[finite].double() <= exact[finite].double() * 1.01 + 1e-4).all()), (radius, exact)
    assert bool(torch.isinf(radius[~finite]).all())
    with torch.no_grad():
        assert bool((model(adv[finite]).argmax(1) != y[finite]).all())
    assert torch.allclose((adv - x).flatten(1).abs().amax(1)[finite], radius[finite], atol=1e-6)
    assert adv.min() >= 0 and adv.max() <= 1


def test_fmn_class_and_function_forms(trained_model, mnist5k_test):
    x, y = mnist5k_test.x[:16], mnist5k_test.y[:16]
    atk = FMN(trained_model, eps=0.2, steps=20)
    adv = atk(x, y)  # torchattacks' form: bound model and eps
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert isinstance(build_attack("fmn", steps=5), FMN)
    same = FMN(steps=20)(trained_model, x, y, 0.2)
    assert torch.equal(adv, same)  # deterministic: no random start
    # within the budget wherever the unbounded radius is below it, and adversarial there
    _, radius = fmn(trained_model, x, y, max_eps=0.2, steps=20)
    with torch.no_grad():
        fooled = trained_model(adv).argmax(1) != y
    assert torch.equal(fooled, radius <= 0.2)
    for bad in ({"steps": 0}, {"gamma_init": 1.5}, {"alpha_init": -1.0}):
        with pytest.raises(SgtlabError):
            FMN(**bad)


EPS = [0.1, 0.2, 0.3]
N = 40  # images: small, the machine is shared


@pytest.fixture(scope="module")
def sweep(trained_model, mnist5k_test):
    return robustness_sweep(trained_model, mnist5k_test, ["fgsm", "pgd", "fmn", "ensemble"], EPS, n=N,
                            batch_size=N, progress=False, seed=1)


def test_fmn_radii_agree_with_the_pgd_sweep(sweep, trained_model, mnist5k_test):
    acc = sweep.robust_accuracy
    for e in EPS:  # one FMN run against a PGD-10 run per eps: as strong, give or take a few images
        assert acc["fmn"][e] <= acc["pgd"][e] + 0.05, (e, acc["fmn"][e], acc["pgd"][e])
    assert acc["fmn"][0.1] > 0.5  # a real model: FMN does not fool everything at a small budget
    r = sweep.radii["fmn"]
    assert bool((r[~sweep.clean_correct] == 0).all())
    for e in EPS:  # the radius gives the curve: robust at eps exactly when the radius exceeds it
        assert torch.equal(sweep.robust("fmn", e), r > torch.tensor(e, dtype=torch.float32))
    assert sweep.info["images_attacked"]["fmn"] == {"all eps": int(sweep.clean_correct.sum())}
    # every image FMN counts as fooled at its radius is: an adversarial image at that distance
    x, y = mnist5k_test.x[:N], mnist5k_test.y[:N]
    hit = (torch.isfinite(r) & sweep.clean_correct).nonzero().squeeze(1)[:10]
    adv, radius = fmn(trained_model, x[hit], y[hit], max_eps=EPS[-1])
    assert torch.allclose(radius, r[hit], atol=1e-3)  # another batch: float rounding, not another result
    with torch.no_grad():
        assert bool((trained_model(adv).argmax(1) != y[hit]).all())
    assert torch.allclose((adv - x[hit]).flatten(1).abs().amax(1), radius, atol=1e-6)


def test_ensemble_with_fmn_is_never_above_the_ensemble_without(sweep, trained_model, mnist5k_test):
    without = torch.stack([sweep.first_fooled[a] for a in ("fgsm", "pgd")]).amin(0)
    assert bool((sweep.first_fooled["ensemble"] <= without).all())
    assert bool((sweep.first_fooled["ensemble"] <= sweep.first_fooled["fmn"]).all())
    # the Ensemble attack: FMN as one more member (same seed for PGD's start) fools a superset
    x, y = mnist5k_test.x[:N], mnist5k_test.y[:N]
    fooled = {}
    for members in (("fgsm", "pgd"), ("fgsm", "pgd", "fmn")):
        torch.manual_seed(0)
        adv = build_attack("ensemble", members=list(members))(trained_model, x, y, 0.15)
        assert (adv - x).abs().max() <= 0.15 + 1e-6
        with torch.no_grad():
            fooled[len(members)] = trained_model(adv).argmax(1) != y
    assert not (fooled[2] & ~fooled[3]).any()
    assert fooled[3].sum() >= fooled[2].sum()


def test_fmn_from_scratch_sweep_is_its_radius_at_each_eps(trained_model, mnist5k_test):
    eps = [0.1, 0.2]
    r = robustness_sweep(trained_model, mnist5k_test, {"fmn": FMN(steps=10)}, eps, n=20, progress=False,
                         from_scratch=True)
    for e in eps:
        assert torch.equal(r.robust("fmn", e), r.radii["fmn"] > e)
