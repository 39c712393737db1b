"""The gradient-masking checks' numbers and verdicts against closed forms, on tiny hand-built models
(four 2 x 2 images: fast enough for the mutation run of `sgtlab.evaluate.masking_checks`).

On `Threshold` (class 1 iff the mean pixel exceeds 0.9; the loss rises with the mean pixel) every
gradient attack, however many steps or restarts, ends at x + eps, so every white-box accuracy is
the fraction of images with x + eps <= 0.9; Square cannot do better (no image in the ball has a
larger mean) and, on the one image any increase of the mean fools (0.89), finds one.
The tolerance is the 95 % binomial half-width `1.96 sqrt(p (1 - p) / n)` (SPEC: "a flag in the report").
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.evaluate import masking_checks as mc
from sgtlab.evaluate.masking_checks import default_eps, gradient_masking_checks, tolerance
from sgtlab.evaluate.robustness import robustness_sweep
from test_science_attacks import Lottery, Threshold  # class 1 iff the mean pixel > 0.9; zero gradient

pytest.importorskip("pyautoattack")


class Band(Threshold):
    """Fooled iff 0.55 < mean < 0.75; the loss rises with the mean below 0.65: FGSM fools 0.5 at a
    small eps (0.5 + eps in the band) and not at a large one (a rising FGSM curve)."""

    def forward(self, x):
        z = 1 - 100 * (x.flatten(1).mean(1) - 0.65) ** 2 + 0 * self.lin.bias[0]
        return torch.stack([torch.zeros_like(z), z], 1)


def _images(values):
    x = torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return x, torch.zeros(len(values), dtype=torch.long)


# eps 0.3: only 0.89 is fooled (accuracy 0.75); eps 0.5: 0.89 and 0.45 (0.5 = chance for 2 classes)
VALUES = [0.89, 0.45, 0.3, 0.2]
WHITE = ("fgsm", "pgd", "mifgsm")


def _z(conf=0.95):
    return norm.ppf(0.5 + conf / 2)


def test_tolerance_is_the_binomial_half_width():
    z = _z()
    assert tolerance(100, 0.2, 0.3) == pytest.approx(z * math.sqrt(0.3 * 0.7 / 100))
    assert tolerance(100, 0.3, 0.2) == pytest.approx(z * math.sqrt(0.3 * 0.7 / 100))
    assert tolerance(100) == pytest.approx(z * 0.05)  # no accuracy: p = 0.5
    assert tolerance(100, 0.0) == pytest.approx(z * math.sqrt(0.01 * 0.99 / 100))  # p at least 1 / n
    assert tolerance(100, 1.0) == pytest.approx(z * math.sqrt(0.99 * 0.01 / 100))  # and at most 1 - 1 / n
    assert tolerance(4, 0.1) == pytest.approx(z * math.sqrt(0.25 * 0.75 / 4))
    assert tolerance(1, 0.3) == pytest.approx(z * 0.5)  # one image: the widest case
    assert tolerance(50, 0.4, conf=0.9) == pytest.approx(_z(0.9) * math.sqrt(0.4 * 0.6 / 50))


def test_default_eps_is_the_datas_headline_budget():
    assert default_eps(torch.zeros(2, 1, 28, 28)) == 0.3
    assert default_eps(torch.zeros(2, 3, 32, 32)) == pytest.approx(8 / 255)


@pytest.mark.parametrize("tol", [0.0, None])
def test_every_number_and_verdict_on_a_model_where_all_attacks_reach_the_ball_edge(tol):
    x, y = _images(VALUES)
    found = {}
    checks = gradient_masking_checks(Threshold(), (x, y), tol=tol, square_queries=50, outcomes=found)
    assert list(checks) == ["iterative_not_weaker_than_fgsm", "fgsm_curve_not_rising", "chance_at_large_eps",
                            "more_steps_not_weaker", "gradient_free_not_stronger"]
    t = (lambda *a: 0.0) if tol is not None else (lambda *a: _z() * math.sqrt(
        min(max(max(a), 0.25), 0.75) * (1 - min(max(max(a), 0.25), 0.75)) / 4))
    it = checks["iterative_not_weaker_than_fgsm"]  # eps defaults to 0.3 (small grey images), eps_large 0.5
    assert it == {"passed": True, **{f"{a}@0.3": 0.75 for a in WHITE}, **{f"{a}@0.5": 0.5 for a in WHITE},
                  "tol": pytest.approx(max(t(0.75), t(0.5))), "n": 4,
                  "tol_from": "fixed" if tol is not None else "95 % binomial half-width, n = 4"}
    curve = checks["fgsm_curve_not_rising"]  # the default grid of small grey images: 0.05 to 0.4
    grid = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]
    assert {k: v for k, v in curve.items() if k.startswith("fgsm@")} == {f"fgsm@{e:g}": 0.75 for e in grid}
    assert curve["passed"] is True and "rise" not in curve and curve["tol"] == pytest.approx(t(0.75))
    assert checks["chance_at_large_eps"] == {"passed": True, "eps": 0.5, "pgd_accuracy": 0.5, "chance": 0.5,
                                             "tol": pytest.approx(t(0.5, 0.5)), "n": 4,
                                             "tol_from": it["tol_from"]}
    assert checks["more_steps_not_weaker"] == {"passed": True, "eps": 0.3, "pgd-10": 0.75, "pgd-50": 0.75,
                                               "pgd-10x5": 0.75, "tol": pytest.approx(t(0.75)), "n": 4,
                                               "tol_from": it["tol_from"]}
    g = checks["gradient_free_not_stronger"]
    square = g.pop("square")  # no image in the ball beats x + eps: 0.75 or, if it misses 0.89, 1.0
    assert g == {"passed": True, "eps": 0.3, "best_white_box": 0.75, "queries": 50,
                 "tol": pytest.approx(t(0.75)), "n": 4, "tol_from": it["tol_from"]}
    assert set(found) == {*WHITE, "pgd-50", "pgd-10x5", "square"}
    assert found["square"][1:].all() and found["square"].float().mean().item() == square
    for name, robust in found.items():
        if name != "square":
            assert robust.tolist() == [False, True, True, True], name


def test_eps_n_grid_and_eps_large_are_used():
    """eps 0.1 and eps_large 0.2 on the first 3 images: 0.89 is fooled at both, 0.45 at neither;
    the FGSM curve on the given grid; chance 0.5 is reached (0.67 > 0.5 + 0): flagged."""
    x, y = _images(VALUES)
    checks = gradient_masking_checks(Threshold(), (x, y), eps=0.1, eps_large=0.2, n=3, tol=0.0,
                                     grid=[0.2, 0.05, 0.2], square_queries=20)
    assert checks["iterative_not_weaker_than_fgsm"]["pgd@0.1"] == pytest.approx(2 / 3)
    assert checks["iterative_not_weaker_than_fgsm"]["mifgsm@0.2"] == pytest.approx(2 / 3)
    assert {k for k in checks["fgsm_curve_not_rising"] if k.startswith("fgsm@")} == {"fgsm@0.05", "fgsm@0.2"}
    ch = checks["chance_at_large_eps"]
    assert ch["passed"] is False and ch["eps"] == 0.2 and ch["pgd_accuracy"] == pytest.approx(2 / 3)
    assert all(c["n"] == 3 for c in checks.values())
    assert checks["more_steps_not_weaker"]["eps"] == 0.1 and checks["gradient_free_not_stronger"]["queries"] == 20
    for bad in ({"eps": 0.5}, {"eps": 0.6}, {"eps": 0.0}, {"eps": -0.1}):
        with pytest.raises(SgtlabError, match="eps"):
            gradient_masking_checks(Threshold(), (x, y), **bad)


def test_a_rising_fgsm_curve_is_flagged_with_its_largest_rise():
    """Band from 0.5: FGSM fools at eps 0.1 (0.6) and 0.15 (0.65), not at 0.3 (0.8); 0.2 is never
    fooled (0.5 at most): accuracy 1/3, 1/3, then 1, a rise of 66.7 pp. A falling curve passes."""
    x, y = _images([0.5, 0.5, 0.2])
    checks = gradient_masking_checks(Band(), (x, y), eps=0.1, eps_large=0.2, tol=0.0, grid=[0.3, 0.1, 0.15],
                                     square_queries=10)
    c = checks["fgsm_curve_not_rising"]
    assert c["passed"] is False and c["fgsm@0.3"] == 1.0
    assert c["fgsm@0.1"] == pytest.approx(1 / 3) and c["fgsm@0.15"] == pytest.approx(1 / 3)
    assert c["rise"] == "+66.7 pp from eps 0.1 to 0.3"
    x, y = _images([0.5, 0.5])
    falling = gradient_masking_checks(Threshold(), _images(VALUES), tol=0.0, grid=[0.1, 0.5], square_queries=5)
    assert falling["fgsm_curve_not_rising"]["fgsm@0.1"] == 0.75 and falling["fgsm_curve_not_rising"]["fgsm@0.5"] == 0.5
    assert falling["fgsm_curve_not_rising"]["passed"] is True
    with_tol = gradient_masking_checks(Band(), (x, y), eps=0.1, eps_large=0.2, tol=1.0, grid=[0.1, 0.3],
                                       square_queries=10)["fgsm_curve_not_rising"]
    assert with_tol["passed"] is True and "rise" not in with_tol and with_tol["tol"] == 1.0
    two = gradient_masking_checks(Band(), (x, y), eps=0.1, eps_large=0.2, tol=0.0, grid=[0.1, 0.3],
                                  square_queries=10)["fgsm_curve_not_rising"]  # a rise between neighbours
    assert two["passed"] is False and two["rise"] == "+100.0 pp from eps 0.1 to 0.3"
    # the curve's tolerance from n = 4: the largest half-width over its accuracies (here all 0.75);
    # one grid eps: the check cannot fail, its tolerance is the widest (p = 0.5)
    xv, yv = _images(VALUES)
    for grid, want in (([0.1, 0.2], _z() * math.sqrt(0.75 * 0.25 / 4)), ([0.1], _z() * math.sqrt(0.25 / 4))):
        c = gradient_masking_checks(Threshold(), (xv, yv), grid=grid, square_queries=5)["fgsm_curve_not_rising"]
        assert c["passed"] is True and c["fgsm@0.1"] == 0.75 and c["tol"] == pytest.approx(want), grid


def test_without_square_the_check_says_why_and_passes_none(monkeypatch):
    def missing(name, **kw):
        raise SgtlabError("square needs pyautoattack")

    monkeypatch.setattr(mc, "build_attack", missing)
    x, y = _images(VALUES)
    found = {}
    checks = gradient_masking_checks(Threshold(), (x, y), tol=0.0, outcomes=found)
    g = checks["gradient_free_not_stronger"]
    assert g == {"passed": None, "skipped": "square needs pyautoattack", "eps": 0.3, "best_white_box": 0.75,
                 "n": 4}
    assert "square" not in found

    def broken(name, **kw):
        raise SgtlabError("something else")

    monkeypatch.setattr(mc, "build_attack", broken)
    with pytest.raises(SgtlabError, match="something else"):
        gradient_masking_checks(Threshold(), (x, y), tol=0.0)


def _no_square(monkeypatch, seen):
    def spy(name, **kw):
        seen.append((name, kw))
        raise SgtlabError("square needs pyautoattack")

    monkeypatch.setattr(mc, "build_attack", spy)


@pytest.mark.parametrize("seed", [None, 3])
def test_defaults_and_the_seeded_random_starts(monkeypatch, capfd, seed):
    """Defaults: the first 500 images, Square with 1000 queries and seed 0, no progress bar. PGD's
    start at eps (the first of [eps, eps_large]) is `manual_seed(seed)`'s uniform draw, PGD-50's is
    `manual_seed(seed + 1000)`'s (independent starts): on Lottery each outcome is its start's."""
    seen = []
    _no_square(monkeypatch, seen)
    x, y = torch.full((510, 1, 1, 2), 0.6), torch.zeros(510, dtype=torch.long)
    found = {}
    kw = {} if seed is None else {"seed": seed}
    checks = gradient_masking_checks(Lottery(), (x, y), outcomes=found, **kw)
    assert capfd.readouterr().err == ""
    seed = 0 if seed is None else seed
    assert seen == [("square", {"queries": 1000, "seed": seed})]
    assert all(c["n"] == 500 for c in checks.values()) and len(found["pgd"]) == 500
    for name, s in (("pgd", seed), ("pgd-50", seed + 1000)):
        torch.manual_seed(s)
        start = torch.empty_like(x[:500]).uniform_(-0.3, 0.3)
        assert found[name].tolist() == ((x[:500] + start)[:, 0, 0, 0] <= 0.75).tolist(), name
    assert 0 < found["pgd"].sum() < 500 and not torch.equal(found["pgd"], found["pgd-50"])
    # the verdicts' numbers are the outcomes' means, the tolerances the half-widths at n = 500
    acc = {a: found[a].float().mean().item() for a in found}
    more = checks["more_steps_not_weaker"]
    big = max(acc["pgd-50"], acc["pgd-10x5"])
    assert more["pgd-10"] == pytest.approx(acc["pgd"]) and more["pgd-10x5"] == pytest.approx(acc["pgd-10x5"])
    assert more["tol"] == pytest.approx(tolerance(500, big, acc["pgd"]))
    assert more["passed"] == (big <= acc["pgd"] + tolerance(500, big, acc["pgd"]))
    assert checks["gradient_free_not_stronger"]["best_white_box"] == pytest.approx(min(acc.values()))


def test_progress_and_batch_size_reach_every_sweep(monkeypatch, capfd):
    _no_square(monkeypatch, [])
    x, y = _images(VALUES)
    gradient_masking_checks(Threshold(), (x, y), tol=0.0, progress=False, grid=[0.1])
    assert capfd.readouterr().err == ""
    gradient_masking_checks(Threshold(), (x, y), tol=0.0, progress=True, grid=[0.1])
    assert capfd.readouterr().err.count("attacks") >= 3  # the base, FGSM-curve and strong sweeps
    with pytest.raises(SgtlabError, match="batch size"):
        gradient_masking_checks(Threshold(), (x, y), tol=0.0, batch_size=0, grid=[0.1])


def test_without_square_the_other_attacks_outcomes_are_still_given(monkeypatch):
    _no_square(monkeypatch, [])
    x, y = _images(VALUES)
    found = {}
    checks = gradient_masking_checks(Threshold(), (x, y), eps=0.25, tol=0.0, grid=[0.1], outcomes=found)
    assert checks["gradient_free_not_stronger"]["passed"] is None
    assert set(found) == {*WHITE, "pgd-50", "pgd-10x5"}
    assert all(r.tolist() == [False, True, True, True] for r in found.values())  # 0.89 + 0.25 > 0.9


class _GradCounter(Threshold):
    """Never fooled (class 1 needs a mean pixel above 2); counts the forward passes that take a gradient."""

    def __init__(self):
        super().__init__()
        self.grads = 0
        with torch.no_grad():
            self.lin.bias.copy_(torch.tensor([0.0, -20.0]))

    def forward(self, x):
        self.grads += int(x.requires_grad)
        return super().forward(x)


def test_the_strong_attacks_are_pgd_50_and_pgd_10_with_5_restarts(monkeypatch):
    """Gradient passes on a model nothing fools (one batch): the clean gradient once per sweep that has
    FGSM or MI-FGSM (2), PGD-10 at eps and eps_large (20), MI-FGSM's 9 further steps at each (18),
    PGD-50 (50) and PGD-10 with 5 restarts (50): 140. Square takes none."""
    model = _GradCounter()
    x, y = _images(VALUES)
    checks = gradient_masking_checks(model, (x, y), tol=0.0, grid=[0.1, 0.2], square_queries=5)
    assert model.grads == 2 + 20 + 18 + 50 + 50
    g = checks["gradient_free_not_stronger"]  # Square exactly as strong as the best white box: passes
    assert g["square"] == g["best_white_box"] == 1.0 and g["passed"] is True


def test_the_iterative_checks_tolerance_comes_from_both_accuracies():
    """Band: FGSM at 0.3 fools 0.3 (0.6) but overshoots 0.5 (0.8); PGD's small steps fool both:
    accuracies 0.5 and 0; the tolerance is the half-width at the larger, 0.5 (n = 4)."""
    x, y = _images([0.5, 0.5, 0.3, 0.3])
    checks = gradient_masking_checks(Band(), (x, y), eps=0.3, eps_large=0.4, grid=[0.1], square_queries=5)
    it = checks["iterative_not_weaker_than_fgsm"]
    assert it["fgsm@0.3"] == 0.5 and it["pgd@0.3"] == 0.0 and it["passed"] is True
    assert it["tol"] == pytest.approx(max(tolerance(4, it[f"{a}@{e:g}"], it[f"fgsm@{e:g}"])
                                          for a in ("pgd", "mifgsm") for e in (0.3, 0.4)))
    assert it["tol"] == pytest.approx(_z() * math.sqrt(0.25 / 4))
    ch = checks["chance_at_large_eps"]  # PGD accuracy 0 at 0.4, chance 0.5: the half-width at 0.5
    assert ch["pgd_accuracy"] == 0.0 and ch["tol"] == pytest.approx(tolerance(4, 0.0, 0.5))
    assert ch["tol"] == pytest.approx(_z() * math.sqrt(0.25 / 4))
    xv, yv = _images(VALUES)  # Threshold at eps_large 0.2: PGD accuracy 0.75 > chance: the half-width at 0.75
    ch = gradient_masking_checks(Threshold(), (xv, yv), eps=0.1, eps_large=0.2, grid=[0.1],
                                 square_queries=5)["chance_at_large_eps"]
    assert ch["pgd_accuracy"] == 0.75 and ch["tol"] == pytest.approx(_z() * math.sqrt(0.75 * 0.25 / 4))


class _Sweep:
    """A sweep's result with chosen accuracies (k of m images robust: the first k)."""

    def __init__(self, acc, m):
        self.robust_accuracy, self.m = acc, m

    def robust(self, attack, eps):
        return torch.arange(self.m) < round(self.robust_accuracy[attack][eps] * self.m)


def _chosen(monkeypatch, white, curve, square, m=100):
    """Every sweep of the checks returns the chosen accuracies: `white[attack][eps]` (fgsm, pgd, mifgsm at
    eps 0.3 and eps_large 0.5; pgd-50 and pgd-10x5 at 0.3), the from-scratch FGSM `curve[eps]`, `square`."""
    def sweep(model, data, attacks, eps_list, *, from_scratch=False, **kw):
        names = list(attacks)
        if from_scratch:
            return _Sweep({"fgsm": {e: curve[e] for e in eps_list}}, m)
        if names == ["square"]:
            return _Sweep({"square": {e: square for e in eps_list}}, m)
        return _Sweep({a: {e: white[a][e] for e in eps_list} for a in names}, m)

    monkeypatch.setattr(mc, "robustness_sweep", sweep)
    x, y = torch.zeros(m, 1, 2, 2), torch.zeros(m, dtype=torch.long)
    return gradient_masking_checks(Threshold(), (x, y), eps=0.3, grid=sorted(curve), square_queries=5)


def _h(p, n=100):
    """The 95 % binomial half-width at p (clamped to [1/n, 1 - 1/n])."""
    p = min(max(p, 1 / n), 1 - 1 / n)
    return _z() * math.sqrt(p * (1 - p) / n)


def test_each_verdict_takes_the_half_width_at_the_larger_of_its_two_accuracies(monkeypatch):
    """n = 100. A rise from 0.02 to 0.06 (MI-FGSM over FGSM, PGD-50 over PGD-10, the FGSM curve
    from eps 0.1 to 0.2) is within the half-width at 0.06 (0.047) but not at 0.02 (0.027): every check
    passes, each reporting the half-width at the larger accuracy. Square at 0 against a best white box
    of 0.02: within the half-width at 0.02, not at 0 (p = 1/n: 0.0195)."""
    white = {"fgsm": {0.3: 0.02, 0.5: 0.02}, "pgd": {0.3: 0.02, 0.5: 0.02}, "mifgsm": {0.3: 0.06, 0.5: 0.02},
             "pgd-50": {0.3: 0.06}, "pgd-10x5": {0.3: 0.02}}
    assert 0.06 - 0.02 <= _h(0.06) and 0.06 - 0.02 > _h(0.02) and 0.02 - 0.0 <= _h(0.02) and 0.02 > _h(0.0)
    checks = _chosen(monkeypatch, white, {0.1: 0.02, 0.2: 0.06}, 0.0)
    it = checks["iterative_not_weaker_than_fgsm"]
    assert it["mifgsm@0.3"] == 0.06 and it["passed"] is True and it["tol"] == pytest.approx(_h(0.06))
    curve = checks["fgsm_curve_not_rising"]
    assert curve["passed"] is True and "rise" not in curve and curve["tol"] == pytest.approx(_h(0.06))
    more = checks["more_steps_not_weaker"]
    assert more["pgd-10"] == 0.02 and more["pgd-50"] == 0.06 and more["passed"] is True
    assert more["tol"] == pytest.approx(_h(0.06))
    g = checks["gradient_free_not_stronger"]
    assert g["square"] == 0.0 and g["best_white_box"] == 0.02 and g["passed"] is True
    assert g["tol"] == pytest.approx(_h(0.02))


@pytest.mark.parametrize("best", ["fgsm", "pgd", "mifgsm", "pgd-50", "pgd-10x5"])
def test_the_best_white_box_is_the_lowest_of_all_five_attacks(monkeypatch, best):
    """One white-box attack at 0.3, the others at 0.4: it is the best white box; Square at 0.6 is
    weaker, and its tolerance is the half-width at 0.6 (the larger of the two)."""
    white = {a: {0.3: 0.4, 0.5: 0.4} for a in ("fgsm", "pgd", "mifgsm", "pgd-50", "pgd-10x5")}
    white[best] = {0.3: 0.3, 0.5: 0.4}
    g = _chosen(monkeypatch, white, {0.1: 0.4, 0.2: 0.4}, 0.6)["gradient_free_not_stronger"]
    assert g["best_white_box"] == 0.3 and g["square"] == 0.6 and g["passed"] is True
    assert g["tol"] == pytest.approx(_h(0.6)) and _h(0.6) != pytest.approx(_h(0.3))
