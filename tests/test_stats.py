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
