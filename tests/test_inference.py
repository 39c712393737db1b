"""Method-level inference on the crossed seeds x images design (sgtlab.inference), and the
calibration of its test by simulation (sgtlab.calibration): the verdict rule of the report."""
import math

import numpy as np
import pytest
from scipy import stats

from sgtlab import calibration as cal
from sgtlab.errors import SgtlabError
from sgtlab.inference import crossed_bootstrap, crossed_comparison, mean_squares, model_comparison


@pytest.mark.parametrize("seeds", [3, 5, 10])
@pytest.mark.parametrize("regime", cal.REGIMES, ids=lambda r: r.name)
def test_false_positive_rate_at_most_nominal(seeds, regime):
    """No true difference: the test rejects at most 5 % + 2 Monte-Carlo se of experiments."""
    rate, se = cal.rates(cal.crossed_test, seeds, regime, n_sim=2000, seed=seeds)
    assert rate <= 0.05 + 2 * se, f"{regime.name}, {seeds} seeds: {rate:.3f} (se {se:.3f})"


def test_seed_noise_regime_is_not_conservative():
    """Without an image effect the test is the paired t over seeds: its rate is near 5 %, not 0."""
    rate, se = cal.rates(cal.crossed_test, 5, cal.REGIMES[0], n_sim=2000, seed=1)
    assert 0.05 - 3 * se <= rate


@pytest.mark.parametrize("regime", [cal.REGIMES[0], cal.REGIMES[2]], ids=lambda r: r.name)
def test_power_at_twice_the_seed_sd_with_ten_seeds(regime):
    a, b = cal.simulate(np.random.default_rng(7), 500, 10, 300, regime)
    sd = float(np.sqrt(mean_squares((a - b).astype(float))[0].mean() / 300))  # sd of per-seed mean diffs
    power, _ = cal.rates(cal.crossed_test, 10, regime, effect=2 * sd, n_sim=1000, seed=3)
    assert power >= 0.8


def test_the_old_nested_bootstrap_was_liberal():
    """The rule the report used before (bootstrap over 2 seeds, images anew in each): far above 5 %."""
    rate, se = cal.rates(cal.bootstrap_test("nested", n_boot=200), 2, cal.REGIMES[2], n_sim=300, seed=0)
    assert rate > 0.05 + 3 * se


def test_without_image_effect_it_is_the_paired_t_over_seeds():
    rng = np.random.default_rng(0)
    a = np.repeat(rng.random((5, 1)), 40, axis=1)  # every image of a seed has the same outcome
    b = np.repeat(rng.random((5, 1)), 40, axis=1)
    r = crossed_comparison(a, b)
    t = stats.ttest_rel(a.mean(1), b.mean(1))
    assert r.df == 4 and math.isclose(r.p, t.pvalue, rel_tol=1e-9)
    assert math.isclose(r.diff, float((a - b).mean()))


def test_variance_adds_the_test_set_part():
    """A shared per-image difference (the same images for every seed) widens the interval beyond the
    seed-level t, which treats the test set as fixed."""
    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, 200)
    a = img[None] + rng.normal(0, 0.1, (5, 1)) + rng.normal(0, 0.5, (5, 200))
    b = np.zeros_like(a)
    r = crossed_comparison(a, b)
    seed_only = stats.ttest_1samp(a.mean(1), 0)
    assert r.var_image > 0.5 and r.se > float(a.mean(1).std(ddof=1)) / math.sqrt(5)
    assert r.p > seed_only.pvalue
    assert r.mde > 2 * r.se and r.lo < r.diff < r.hi


def test_equivalence_and_identical_runs():
    a = np.zeros((5, 50))
    r = crossed_comparison(a, a)
    assert r.diff == 0 and r.p == 1.0 and r.equivalent(0.02)
    rng = np.random.default_rng(2)
    x = (rng.random((5, 500)) < 0.5).astype(float)
    assert not crossed_comparison(x, np.zeros_like(x)).equivalent(0.02)


def test_needs_two_seeds_and_same_shapes():
    with pytest.raises(SgtlabError, match="at least 2 seeds"):
        crossed_comparison(np.ones((1, 5)), np.zeros((1, 5)))
    with pytest.raises(SgtlabError, match="same shape"):
        crossed_comparison(np.ones((2, 5)), np.zeros((2, 4)))


def test_model_comparison_is_the_paired_t_over_images():
    rng = np.random.default_rng(3)
    a, b = (rng.random(300) < 0.6).astype(float), (rng.random(300) < 0.5).astype(float)
    m = model_comparison(a, b)
    assert math.isclose(m.p, stats.ttest_rel(a, b).pvalue, rel_tol=1e-9) and m.n_images == 300
    with pytest.raises(SgtlabError, match="one run per side"):
        model_comparison(np.ones((2, 3)), np.zeros((2, 3)))


def test_crossed_bootstrap_brackets_the_difference():
    rng = np.random.default_rng(4)
    a = (rng.random((8, 200)) < 0.7).astype(float)
    b = (rng.random((8, 200)) < 0.5).astype(float)
    lo, hi, p = crossed_bootstrap(a, b, n_boot=500)
    assert lo < (a - b).mean() < hi and p < 0.01
