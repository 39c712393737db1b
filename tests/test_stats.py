"""The statistics of comparisons against textbook values and their calibration on synthetic data."""
from __future__ import annotations

import numpy as np
import pytest

from sgtlab.errors import SgtlabError
from sgtlab.stats import binomial_halfwidth, compare_paired, holm, paired_bootstrap, paired_t_interval, wilson_interval


@pytest.mark.parametrize("k,n,lo,hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                       (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_matches_newcombe_1998(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_refuses_impossible_counts():
    for k, n in [(3, 2), (-1, 5), (0, 0)]:
        with pytest.raises(SgtlabError):
            wilson_interval(k, n)


def test_holm_on_known_pvalues():
    # Holm (1979): sorted p 0.01, 0.02, 0.03, 0.5 with m = 4 -> 0.04, 0.06, 0.06 (monotone), 0.5
    adj = holm([0.03, 0.5, 0.01, 0.02])
    np.testing.assert_allclose(adj, [0.06, 0.5, 0.04, 0.06])
    assert np.isnan(holm([np.nan, 0.2])[0]) and holm([np.nan, 0.2])[1] == pytest.approx(0.2)
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])  # capped at 1, monotone


def test_t_interval_against_closed_form():
    d = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    r = paired_t_interval(d)
    m, se = d.mean(), d.std(ddof=1) / np.sqrt(5)
    assert r.mean == pytest.approx(m)
    assert r.hi - r.mean == pytest.approx(2.776445 * se, rel=1e-5)  # t_{0.975, 4}
    t = m / se
    from scipy import stats
    assert r.p == pytest.approx(2 * stats.t.sf(t, 4))
    one = paired_t_interval([0.3])
    assert one.mean == 0.3 and np.isnan(one.lo) and np.isnan(one.p)


def _outcomes(rng, seeds, images, acc_a, acc_b, seed_sd=0.02):
    """Robust (1) / fooled (0) per seed and image; each image has its own difficulty shared by
    both methods, each seed its own shift."""
    difficulty = rng.normal(0, 1, size=images)
    shift = rng.normal(0, seed_sd, size=(seeds, 1))

    def draw(acc):
        from scipy import stats
        logits = stats.norm.ppf(acc) + difficulty[None] + shift * 10
        return (rng.random((seeds, images)) < stats.norm.cdf(logits)).astype(float)
    return draw(acc_a), draw(acc_b)


def test_planted_difference_is_found():
    rng = np.random.default_rng(1)
    a, b = _outcomes(rng, 5, 400, 0.70, 0.55)
    c = compare_paired(a, b, n_boot=2000)
    assert c.boot.lo > 0 and c.p < 0.05
    assert c.t.lo > 0 and c.t.p < 0.05
    assert c.diff == pytest.approx(a.mean() - b.mean())


def test_null_pvalues_are_calibrated():
    rng = np.random.default_rng(2)
    ps = []
    for _ in range(100):
        a, b = _outcomes(rng, 3, 200, 0.6, 0.6)
        ps.append(paired_bootstrap(a, b, n_boot=400, seed=int(rng.integers(1 << 30))).p)
    ps = np.array(ps)
    assert (ps < 0.05).sum() < 10
    assert (ps < 0.5).sum() > 25  # not conservative to the point of uselessness


def test_bootstrap_interval_widens_with_fewer_images():
    rng = np.random.default_rng(3)
    a, b = _outcomes(rng, 3, 1000, 0.6, 0.5)
    wide = paired_bootstrap(a[:, :50], b[:, :50], n_boot=1000)
    narrow = paired_bootstrap(a, b, n_boot=1000)
    assert (wide.hi - wide.lo) > 2 * (narrow.hi - narrow.lo)


def test_identical_runs_have_p_one_and_bad_shapes_are_refused():
    a = np.ones((2, 10))
    assert paired_bootstrap(a, a, n_boot=200).p == 1.0
    with pytest.raises(SgtlabError):
        paired_bootstrap(np.ones((2, 10)), np.ones((2, 9)))
    with pytest.raises(SgtlabError):
        paired_bootstrap(np.full((2, 3), np.nan), np.ones((2, 3)))


def test_binomial_halfwidth():
    assert binomial_halfwidth(100) == pytest.approx(1.959964 * 0.05, rel=1e-6)
    assert binomial_halfwidth(64) > binomial_halfwidth(1000)


# -- edge cases pinned from the formulas (mutation testing, docs/testing.md) ------------------------

@pytest.mark.parametrize("conf", [0.0, 1.0, 1.5, -0.5])
def test_confidence_level_outside_open_unit_interval_refused(conf):
    with pytest.raises(SgtlabError):
        wilson_interval(3, 10, conf)
    with pytest.raises(SgtlabError):
        binomial_halfwidth(10, conf=conf)


def test_wilson_single_image_and_all_or_nothing_counts():
    z2 = 1.959964 ** 2
    # k = n = 1: lower = 1 / (1 + z^2), upper = 1 (the closed form at p = 1)
    assert wilson_interval(1, 1) == pytest.approx((1 / (1 + z2), 1.0), abs=1e-6)
    assert wilson_interval(0, 1) == pytest.approx((0.0, z2 / (1 + z2)), abs=1e-6)
    for n in range(1, 70):  # the upper bound is 1 at k = n, never past it by rounding (n = 16, 40, ...)
        assert wilson_interval(n, n)[1] <= 1.0 and wilson_interval(n, n)[1] == pytest.approx(1.0)
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0  # exact ends


def test_binomial_halfwidth_small_n():
    assert binomial_halfwidth(1) == pytest.approx(1.959964 * 0.5, rel=1e-6)
    with pytest.raises(SgtlabError):
        binomial_halfwidth(0)


def test_t_interval_two_seeds_is_the_cauchy_closed_form():
    # one degree of freedom: t is Cauchy, quantile tan(pi (q - 1/2)), sf(t) = 1/2 - atan(t) / pi
    r = paired_t_interval([0.1, 0.3], conf=0.9)
    m, se = 0.2, 0.1  # sd of (0.1, 0.3) is sqrt(0.02), over sqrt(2)
    tq = np.tan(np.pi * 0.45)
    assert (r.mean, r.lo, r.hi, r.n) == pytest.approx((m, m - tq * se, m + tq * se, 2))
    assert r.p == pytest.approx(1 - 2 * np.arctan(m / se) / np.pi)
    five = paired_t_interval([0.02, 0.05, -0.01, 0.04, 0.03])
    assert five.n == 5 and five.mean - five.lo == pytest.approx(five.hi - five.mean)


def test_t_interval_without_spread_or_without_seeds():
    const = paired_t_interval([0.25, 0.25, 0.25])
    assert (const.mean, const.lo, const.hi, const.p, const.n) == (0.25, 0.25, 0.25, 0.0, 3)
    zero = paired_t_interval([0.0, 0.0])
    assert (zero.mean, zero.lo, zero.hi, zero.p, zero.n) == (0.0, 0.0, 0.0, 1.0, 2)
    for empty in ([], [np.nan, np.nan]):
        r = paired_t_interval(empty)
        assert r.n == 0 and all(isinstance(v, float) and np.isnan(v) for v in (r.mean, r.lo, r.hi, r.p))
    one = paired_t_interval([0.3, np.nan])
    assert one.n == 1 and np.isnan(one.hi)
    # a seed whose value was written to JSON as null (NaN) is left out, like NaN
    assert paired_t_interval([0.1, None, 0.3]) == paired_t_interval([0.1, 0.3])


def test_one_image_one_seed_bootstrap_p_is_one_over_n_boot_plus_one():
    # every replicate equals diff = 0.5, so no replicate is as far from diff as 0 is: p = 1 / (n_boot + 1)
    r = paired_bootstrap([[1.0]], [[0.5]])
    assert (r.diff, r.lo, r.hi, r.p) == pytest.approx((0.5, 0.5, 0.5, 1 / 10_001))
    assert compare_paired([[1.0]], [[0.5]]).p == pytest.approx(1 / 10_001)
    assert compare_paired([[1.0]], [[0.5]], n_boot=200).p == pytest.approx(1 / 201)


def test_outcome_shapes_one_seed_and_missing_values():
    rng = np.random.default_rng(5)
    a, b = (rng.random(12) < 0.6).astype(float), (rng.random(12) < 0.4).astype(float)
    one = paired_bootstrap(a, b, n_boot=200)  # 1-D: one seed
    assert one == paired_bootstrap(a[None], b[None], n_boot=200)
    assert one.diff == pytest.approx(a.mean() - b.mean())
    for x, y in [(np.ones((2, 2, 3)), np.ones((2, 2, 3))), (np.ones((2, 0)), np.ones((2, 0))),
                 ([[1.0, None]], [[1.0, 0.0]]), ([[1.0, 0.0]], [[None, 0.0]])]:
        with pytest.raises(SgtlabError):
            paired_bootstrap(x, y, n_boot=200)


def test_compare_paired_is_reproducible_and_its_t_view_uses_per_seed_differences():
    rng = np.random.default_rng(6)
    a, b = _outcomes(rng, 4, 30, 0.7, 0.5, seed_sd=0.05)
    c = compare_paired(a, b, conf=0.5, n_boot=300, seed=3)
    assert c.boot == paired_bootstrap(a, b, n_boot=300, conf=0.5, seed=3)  # the seed is passed on
    assert paired_bootstrap(a, b, n_boot=300) == paired_bootstrap(a, b, n_boot=300, seed=0)  # default seed 0
    per_seed = a.mean(axis=1) - b.mean(axis=1)
    m, se = per_seed.mean(), per_seed.std(ddof=1) / 2
    from scipy import stats
    tq = stats.t.ppf(0.75, 3)
    assert (c.t.mean, c.t.lo, c.t.hi) == pytest.approx((m, m - tq * se, m + tq * se))


def test_default_bootstrap_stream_is_fixed():
    # the report's numbers are reproducible: default seed 0, 10 000 replicates drawn in chunks of 500
    a = np.array([[1.0, 0, 1, 1, 0], [0, 1, 1, 1, 0]])
    b = np.array([[0.0, 0, 1, 0, 0], [0, 1, 0, 1, 0]])
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b, n_boot=10_000, seed=0, chunk=500)
    assert compare_paired(a, b).boot == paired_bootstrap(a, b, n_boot=10_000, seed=0, chunk=500)


def test_bootstrap_takes_at_least_100_replicates_in_chunks_of_any_size():
    # all replicates are 1 and none is as far from the mean as 0 is: p = 1 / (n_boot + 1) counts them
    a, b = np.ones((2, 5)), np.zeros((2, 5))
    with pytest.raises(SgtlabError, match="n_boot"):
        paired_bootstrap(a, b, n_boot=99)
    assert paired_bootstrap(a, b, n_boot=100).p == pytest.approx(1 / 101)
    # a last chunk shorter than the others (150 = 100 + 50) still draws each replicate once
    assert paired_bootstrap(a, b, n_boot=150, chunk=100).p == pytest.approx(1 / 151)


def test_holm_accepts_missing_as_none():
    np.testing.assert_allclose(holm([0.01, None, 0.04]), [0.02, np.nan, 0.04])


def test_bootstrap_percentile_interval_and_p_on_one_seed_binomial():
    # one seed, 10 images, 4 of them differ by 1: a replicate is Binomial(10, 0.4) / 10, whose
    # 20 % and 80 % quantiles are 3/10 and 5/10 (CDF 0.167 -> 0.382 at 3, 0.633 -> 0.834 at 5)
    a, b = np.array([1.0] * 4 + [0.0] * 6), np.zeros(10)
    r = paired_bootstrap(a, b, n_boot=5000, conf=0.6, seed=1)
    assert (r.diff, r.lo, r.hi) == pytest.approx((0.4, 0.3, 0.5))
    # every image differs by 1: all replicates are 1, none as far from the mean as 0 is
    assert paired_bootstrap(np.ones((2, 5)), np.zeros((2, 5)), n_boot=200).p == pytest.approx(1 / 201)
    # mean difference 0 but not all zero: every replicate is at least |0| away, p = 1 exactly
    assert paired_bootstrap([1.0, 0.0], [0.0, 1.0], n_boot=200).p == 1.0
