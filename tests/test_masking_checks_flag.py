"""Each gradient-masking check flags a hand-built model that it, and only it, must flag.

Four 2-class models (class 0 is the label of every image; class 1 means "fooled") each break exactly
one of the properties the checks test, by construction (eps 0.3, eps_large 0.5, 1-channel images):

- `iterative_not_weaker_than_fgsm`: 40 % of the images sit below a local maximum of the loss at
  0.25 per pixel; the fooling region ("every pixel >= 0.48") is reached by FGSM's one full step
  (0.2 + 0.3), never by PGD or MI-FGSM, whose small steps climb to the local maximum and stay.
  The other 60 % are fooled by every attack, so PGD at 0.5 stays below chance.
- `chance_at_large_eps`: gradients are zero and the fooling region (mean pixel > 0.99) is out of
  reach from 0.2 even at eps 0.5: nothing fools it, so no attack is weaker than another.
- `more_steps_not_weaker`: the loss decreases on a narrow band of the mean pixel (0.5115..0.5285,
  wider than PGD-50's step of 0.015): PGD-50 climbs into it and is stuck; PGD-10, MI-FGSM and FGSM
  step over it (their positions are computed in the comments) and reach the fooling region.
- `gradient_free_not_stronger`: gradients are zero; the model is fooled when >= 10 % of the pixels
  are >= 0.79, which Square's +-eps stripes (0.5 + 0.3) do at once, a random start at eps 0.3
  (<= 2 % of pixels) never does and a random start at eps 0.5 (~21 %) always does.
No check may be skipped (pyautoattack is a test dependency).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sgtlab.evaluate.masking_checks import gradient_masking_checks, tolerance

pytest.importorskip("pyautoattack")  # a test dependency (scripts/test.sh installs it); never skipped in CI

CHECKS = ["iterative_not_weaker_than_fgsm", "chance_at_large_eps", "more_steps_not_weaker",
          "gradient_free_not_stronger"]


class TwoClass(nn.Module):
    """logits (0, z(x)); subclasses give z. A dummy parameter tells the checks the device."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = self.z(x.flatten(1)) + 0 * self.anchor
        return torch.stack([torch.zeros_like(z), z], 1)


class TrapForIterative(TwoClass):
    def z(self, v):
        a, easy = v[:, :16], (v[:, 16] > 0.5).float()
        trap = -1 - 40 * ((a - 0.25) ** 2).mean(1) + 100 * (a.amin(1) >= 0.48).float()
        return easy * 10 * (a.mean(1) - 0.5) + (1 - easy) * trap


class ZeroGradUnreachable(TwoClass):
    def z(self, v):
        return -5 + 10 * (v.mean(1) > 0.99).float() + 0 * v.sum(1)


class BandTrapsSmallSteps(TwoClass):
    def z(self, v):
        m = v.mean(1)
        g = m - 2 * torch.clamp(m - 0.5115, 0, 0.017)  # slope -1 on the band, +1 elsewhere
        return g - 5 + 10 * (m >= 0.74).float()


class ZeroGradStripes(TwoClass):
    def z(self, v):
        return -5 + 10 * ((v >= 0.79).float().mean(1) >= 0.1).float() + 0 * v.sum(1)


def _data(kind: str, n: int = 20):
    if kind == "iterative":  # 4 x 5 pixels: 16 attacked ones, then the type pixel (0: trap, 1: easy)
        x = torch.zeros(n, 1, 4, 5)
        trap = torch.arange(n) < int(0.4 * n)
        x.view(n, -1)[:, :16] = torch.where(trap, 0.2, 0.45)[:, None]
        x.view(n, -1)[:, 16] = torch.where(trap, 0.0, 1.0)
        return x, torch.zeros(n, dtype=torch.long)
    # 64 x 64 constant images: the mean of 4096 independent random-start pixels moves by ~0.003 only
    value = {"chance": 0.2, "steps": 0.5, "square": 0.5}[kind]
    return torch.full((n, 1, 64, 64), value), torch.zeros(n, dtype=torch.long)


CASES = [("iterative", TrapForIterative, "iterative_not_weaker_than_fgsm"),
         ("chance", ZeroGradUnreachable, "chance_at_large_eps"),
         ("steps", BandTrapsSmallSteps, "more_steps_not_weaker"),
         ("square", ZeroGradStripes, "gradient_free_not_stronger")]


@pytest.mark.parametrize("kind,cls,flagged", CASES, ids=[c[0] for c in CASES])
def test_each_check_flags_its_model_and_only_it(kind, cls, flagged):
    model = cls()
    x, y = _data(kind)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()  # every image is classified correctly when clean
    found = {}
    checks = gradient_masking_checks(model, (x, y), eps=0.3, n=None, square_queries=100, progress=False,
                                     outcomes=found)
    passed = {name: checks[name]["passed"] for name in CHECKS}
    assert passed == {name: name != flagged for name in CHECKS}, checks
    # the iterative check's tolerance: the binomial half-width at the larger of each pair of accuracies
    it = checks["iterative_not_weaker_than_fgsm"]
    assert it["tol"] == pytest.approx(max(tolerance(len(x), it[f"{a}@{e:g}"], it[f"fgsm@{e:g}"])
                                          for a in ("pgd", "mifgsm") for e in (0.3, 0.5)))
    # the gradient-free check compares with the best white-box accuracy at eps
    ms = checks["more_steps_not_weaker"]
    assert checks["gradient_free_not_stronger"]["best_white_box"] == min(
        it["fgsm@0.3"], it["pgd@0.3"], it["mifgsm@0.3"], ms["pgd-50"], ms["pgd-10x5"])
    # the per-image outcomes handed out for the ensemble are those behind the checks' accuracies
    assert set(found) == {"fgsm", "pgd", "mifgsm", "pgd-50", "pgd-10x5", "square"}
    acc = {"pgd-50": checks["more_steps_not_weaker"]["pgd-50"], "square": checks["gradient_free_not_stronger"]["square"],
           "mifgsm": checks["iterative_not_weaker_than_fgsm"]["mifgsm@0.3"]}
    for name, a in acc.items():
        assert found[name].shape == (len(x),) and found[name].float().mean().item() == pytest.approx(a)
