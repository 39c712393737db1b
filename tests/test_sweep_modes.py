"""The from-scratch sweep (each eps on its own) and the check that flags an FGSM curve rising with eps."""
from __future__ import annotations

import math

import torch

from sgtlab.evaluate.masking_checks import gradient_masking_checks, tolerance
from sgtlab.evaluate.robustness import robustness_sweep

EPS = [0.1, 0.2, 0.3]


def test_from_scratch_is_each_eps_on_its_own(trained_model, mnist5k_test):
    data = (mnist5k_test.x[:60], mnist5k_test.y[:60])
    scratch = robustness_sweep(trained_model, data, ["fgsm", "pgd", "ensemble"], EPS, progress=False, seed=3,
                               from_scratch=True)
    nested = robustness_sweep(trained_model, data, ["fgsm", "pgd"], EPS, progress=False, seed=3)
    assert scratch.sweep == "from-scratch" and nested.sweep == "nested"
    for j, e in enumerate(EPS):  # the j-th eps's random starts are seeded seed + j, as a one-eps sweep's
        alone = robustness_sweep(trained_model, data, ["fgsm", "pgd"], [e], progress=False, seed=3 + j)
        for a in ("fgsm", "pgd"):
            assert torch.equal(scratch.robust(a, e), alone.robust(a, e)), (a, e)
            assert not (nested.robust(a, e) & ~scratch.robust(a, e)).any()  # nested: never weaker
        assert torch.equal(scratch.robust("ensemble", e), scratch.robust("fgsm", e) & scratch.robust("pgd", e))
    assert scratch.to_dict()["from_scratch"] is True


class Periodic(torch.nn.Module):
    """Two classes; class 0's logit is cos(2 pi (mean(x) - 0.5) / 0.4): FGSM shifts the mean by eps,
    so it fools the model at eps ~0.2 and not at 0.4 (the cosine comes back): a rising FGSM curve,
    the textbook sign of a gradient that misleads a single-step attack."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = torch.cos(2 * math.pi * (x.mean(dim=(1, 2, 3)) - 0.5) / 0.4) + self.dummy
        return torch.stack([z, -z], 1)


def test_rising_fgsm_curve_is_flagged_with_a_tolerance_from_n():
    g = torch.Generator().manual_seed(0)
    x = 0.51 + 0.02 * torch.rand(40, 1, 28, 28, generator=g)  # mean just above 0.5: FGSM pushes it up
    y = torch.zeros(40, dtype=torch.long)
    checks = gradient_masking_checks(Periodic(), (x, y), n=None, square_queries=20)
    c = checks["fgsm_curve_not_rising"]
    assert c["passed"] is False and "rise" in c
    assert c["fgsm@0.2"] < 0.1 and c["fgsm@0.4"] > 0.9
    assert c["tol_from"].endswith("n = 40") and c["tol"] == max(tolerance(40, a, b) for a in (0, 1) for b in (0, 1))
    # tolerances shrink with n: 1.96 sqrt(p (1 - p) / n)
    assert tolerance(400, 0.5) == tolerance(100, 0.5) / 2 and math.isclose(tolerance(100, 0.5), 0.098, abs_tol=1e-3)
