"""Saliency maps against closed forms on a non-linear model.

SmoothGrad averages the *signed* gradient over Gaussian noise (SPEC; Smilkov et al.). For the logit
sum_i sin(a x_i) the expectation is known: E[a cos(a (x + n))] = a cos(a x) exp(-(a sigma)^2 / 2),
n ~ N(0, sigma^2), while averaging |grad| would give a positive map of about twice the size.

The saliency-metric formulas (`sgtlab.evaluate.saliency_metrics`) against their definitions on maps
small enough to work out by hand: every map statistic reads |s| (a negated map scores the same),
the t-interval gate of `clearly_positive` / `ratio_where_defined` at one degree of freedom (Cauchy
quantile tan(pi (q - 1/2))), Spearman and SSIM on signed maps.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.evaluate.saliency_metrics import (clearly_positive, localisation, ratio_where_defined, saliency_entropy,
                                              saliency_gini, saliency_size, spearman_abs, ssim)
from sgtlab.explain import saliency_maps

A, SIGMA = 10.0, 0.15  # sigma: the default noise 0.15 times the input range [0, 1]


class Sines(nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = torch.sin(A * x).flatten(1).sum(1) + 0 * self.anchor
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_smoothgrad_averages_the_signed_gradient():
    x = torch.tensor([0.1, 0.2, 0.31, 0.4, 0.5, 0.63, 0.7, 0.8]).reshape(1, 1, 2, 4)
    y = torch.zeros(1, dtype=torch.long)
    expect = A * torch.cos(A * x) * math.exp(-(A * SIGMA) ** 2 / 2)
    torch.manual_seed(0)
    signed = saliency_maps(Sines(), x, y, "smoothgrad", reduce=False, samples=400)
    # per pixel the Monte-Carlo sd is at most A * sqrt(1/2) / sqrt(400) = 0.35
    assert (signed - expect).abs().max() < 1.6, (signed, expect)
    assert (expect < -1).any() and (signed < -1).any()  # the sign survives the averaging
    torch.manual_seed(0)
    reduced = saliency_maps(Sines(), x, y, "smoothgrad", samples=400)  # |s| summed over channels
    assert (reduced - expect.abs().sum(1)).abs().max() < 1.6


def test_smoothgrad_without_noise_is_the_gradient_and_one_sample_is_allowed():
    """noise = 0 is allowed (a fraction >= 0) and leaves every copy equal to x: one sample, or
    many, give the plain gradient a cos(a x) exactly."""
    x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(2, dtype=torch.long)
    for samples in (1, 3):
        m = saliency_maps(Sines(), x, y, "smoothgrad", reduce=False, samples=samples, noise=0.0)
        torch.testing.assert_close(m, A * torch.cos(A * x))


def test_smoothgrad_noise_scales_with_the_width_of_an_offset_input_range():
    """input_range (-1, 1): sigma = 0.05 x width 2 = 0.1, so E[a cos(a (x + n))] shrinks by
    exp(-(a sigma)^2 / 2) = exp(-1/2) (not by exp(0) as a sigma from hi + lo = 0 would give)."""
    x = torch.full((1, 1, 16, 16), 0.02)
    y = torch.zeros(1, dtype=torch.long)
    torch.manual_seed(0)
    m = saliency_maps(Sines(), x, y, "smoothgrad", reduce=False, samples=100, noise=0.05, input_range=(-1.0, 1.0))
    expect = A * math.cos(A * 0.02) * math.exp(-0.5)  # 5.9; the mean of 25 600 draws of sd <= A / sqrt(2): sd < 0.05
    assert m.mean().item() == pytest.approx(expect, abs=0.15)


def test_smoothgrad_sends_samples_batch_size_copies_per_model_call():
    rows = []

    class Counting(Sines):
        def forward(self, x):
            rows.append(len(x))
            return super().forward(x)

    x, y = torch.rand(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)
    torch.manual_seed(0)
    a = saliency_maps(Counting(), x, y, "smoothgrad", samples=6, samples_batch_size=2)
    assert rows == [2 * 3] * 3  # 2 noisy copies of each of the 3 images per call
    rows.clear()
    torch.manual_seed(0)
    saliency_maps(Counting(), x, y, "smoothgrad", samples=6)
    assert rows == [6 * 3]
    rows.clear()
    saliency_maps(Counting(), x, y, "smoothgrad")
    assert rows == [10 * 3]  # the default: 10 noisy copies, all in one call
    assert a.shape == (3, 2, 2)


# -- saliency-metric formulas ----------------------------------------------------------------------

def test_map_statistics_read_the_absolute_map():
    # a 2 x 2 map with |s| = (1, 1, 2, 0): p = (1/4, 1/4, 1/2, 0), H = 1.5 ln 2; sorted |s| (0, 1, 1, 2),
    # G = sum (2i - n - 1) a_(i) / (n sum a) = (-3*0 - 1 + 1 + 3*2) / (4 * 4) = 3/8
    m = torch.tensor([[[1.0, -1.0], [-2.0, 0.0]]])
    assert saliency_entropy(m).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    assert saliency_gini(m).item() == pytest.approx(3 / 8)
    region = torch.tensor([[[False, False], [True, False]]])
    assert localisation(m, region).item() == pytest.approx(0.5)  # 2 of the mass 4
    g = torch.Generator().manual_seed(0)
    r = torch.randn(3, 8, 8, generator=g)
    for f in (saliency_entropy, saliency_gini, saliency_size):
        torch.testing.assert_close(f(r), f(r.abs()))
    half = torch.zeros(3, 8, 8, dtype=torch.bool)
    half[:, :4] = True
    torch.testing.assert_close(localisation(r, half), localisation(r.abs(), half))


@pytest.mark.parametrize("bad", [torch.ones(2, 1, 4, 4), torch.ones(4, 4), torch.ones(2, 4, 4, dtype=torch.int64),
                                 np.ones((2, 4, 4), dtype=np.float32)])
def test_map_statistics_refuse_what_is_not_n_h_w_float(bad):
    for f in (saliency_entropy, saliency_gini, saliency_size):
        with pytest.raises(SgtlabError):
            f(bad)


def test_clearly_positive_is_the_t_interval_lower_bound():
    # two values 1, 3: mean 2, se 1, one degree of freedom: t quantile tan(pi (q - 1/2))
    for conf in (0.5, 0.9):
        ok, lo, hi = clearly_positive([1.0, np.nan, 3.0], conf)
        tq = math.tan(math.pi * conf / 2)
        assert (lo, hi) == pytest.approx((2 - tq, 2 + tq)) and ok == (2 - tq > 0)
    assert clearly_positive([0.25, 0.25, 0.25]) == (True, 0.25, 0.25)
    assert clearly_positive([-0.25, -0.25]) == (False, -0.25, -0.25)
    assert clearly_positive([0.0, 0.0]) == (False, 0.0, 0.0)
    # a lower bound of exactly 0 is not above 0: m -+ 1 with m the 97.5 % t quantile at 1 df (mean m, se 1)
    from scipy import stats
    m = float(stats.t.ppf(0.975, 1))
    ok, lo, _ = clearly_positive([m - 1, m + 1])
    assert lo == 0.0 and ok is False
    for few in ([0.5], [], [np.nan, 2.0]):
        ok, lo, hi = clearly_positive(few)
        assert ok is False and math.isnan(lo) and math.isnan(hi)


def test_ratio_defined_only_where_lerf_clears_zero_at_the_given_level():
    lerf, morf = [1.0, 3.0], [2.0, np.nan, 6.0]  # LeRF mean 2, interval 2 +- tan(pi conf / 2)
    assert math.isnan(ratio_where_defined(morf, lerf))  # 95 %: 2 - 12.7 < 0
    assert ratio_where_defined(morf, lerf, conf=0.5) == pytest.approx(4.0 / 2.0)  # 2 - 1 > 0; NaN left out


def test_similarity_of_signed_maps():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 7, 7, generator=g), torch.randn(2, 7, 7, generator=g)
    # both read |map|: a map and its negation are identical to them
    torch.testing.assert_close(spearman_abs(a, -a), torch.ones(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(ssim(a, -a), torch.ones(2), rtol=0, atol=1e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = [scipy_stats.spearmanr(a[i].abs().flatten(), b[i].abs().flatten()).statistic for i in range(2)]
    np.testing.assert_allclose(spearman_abs(a, b).numpy(), ref, atol=1e-6)
    skimage = pytest.importorskip("skimage.metrics")
    # 7 x 7 maps (one window, the smallest SSIM takes) and 9 x 9, against skimage with data_range 1
    for x, y in ((a, b), (torch.randn(2, 9, 9, generator=g), torch.randn(2, 9, 9, generator=g))):
        ref = [skimage.structural_similarity((x[i].abs() / x[i].abs().max()).double().numpy(),
                                             (y[i].abs() / y[i].abs().max()).double().numpy(), data_range=1.0)
               for i in range(2)]
        np.testing.assert_allclose(ssim(x, y).numpy(), ref, atol=1e-7)
    for h, w in ((6, 6), (6, 9), (9, 6)):  # either side shorter than the 7 x 7 window
        with pytest.raises(SgtlabError):
            ssim(torch.rand(2, h, w), torch.rand(2, h, w))


def test_size_compresses_the_per_image_min_max_scaled_absolute_map(monkeypatch):
    """The bytes handed to zlib are |s| min-max scaled per image to 0..255 and rounded, row-major
    (zlib's length hardly depends on which bytes they are, so the bytes themselves are checked)."""
    g = torch.Generator().manual_seed(2)
    maps = torch.stack([torch.randn(4, 5, generator=g),  # signed
                        2 + torch.rand(4, 5, generator=g),  # |s| in [2, 3): min far from 0, range < 1
                        torch.full((4, 5), -0.5)])  # constant: all zeros
    maps[0, 1, 2] = 0.0  # the min of |s| is 0, its max elsewhere
    seen = []
    real = zlib.compress

    def spy(data, level=-1):
        seen.append((bytes(data), level))
        return real(data, level)

    monkeypatch.setattr(zlib, "compress", spy)
    sizes = saliency_size(maps)
    monkeypatch.undo()
    a = maps.abs().double().numpy().reshape(3, -1)
    for i, (data, level) in enumerate(seen):
        lo, hi = a[i].min(), a[i].max()
        expected = np.zeros(20, np.uint8) if hi == lo else np.round((a[i] - lo) / (hi - lo) * 255).astype(np.uint8)
        assert data == expected.tobytes() and level == 9
        assert sizes[i].item() == pytest.approx(len(real(expected.tobytes(), 9)) / 1024)
    assert len(seen) == 3 and max(seen[0][0]) == 255 and min(seen[0][0]) == 0


def test_faithfulness_scores_per_image():
    # ROAD's drop: per image, the mean over fractions of f_c(x) - f_c(x_p); ABPC = MoRF - LeRF
    from sgtlab.evaluate.saliency_metrics import abpc, drop_from_probs
    clean, prob = torch.tensor([0.9, 0.5]), torch.tensor([[0.7, 0.1], [0.5, 0.6]])
    torch.testing.assert_close(drop_from_probs(clean, prob), torch.tensor([0.5, -0.05]))
    torch.testing.assert_close(abpc(torch.tensor([0.5, 0.1]), torch.tensor([0.2, 0.3])), torch.tensor([0.3, -0.2]))


def test_gate_and_ratio_read_json_nulls_as_missing():
    # per-image values come back from JSON with null for NaN: left out like NaN
    assert clearly_positive([1.0, None, 3.0], 0.5) == clearly_positive([1.0, 3.0], 0.5)
    assert ratio_where_defined([2.0, None, 6.0], [1.0, None, 3.0], conf=0.5) == pytest.approx(2.0)


def test_rank_average_is_scipy_rankdata_along_the_last_dimension():
    from sgtlab.evaluate.saliency_metrics import rank_average
    scipy_stats = pytest.importorskip("scipy.stats")
    v = torch.tensor([[[3.0, 1.0, 3.0, 2.0], [0.5, 0.5, 0.5, 9.0]], [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]])
    np.testing.assert_array_equal(rank_average(v).numpy(), scipy_stats.rankdata(v.numpy(), axis=-1))
    for a, b in ((torch.ones(2, 1, 7, 7), torch.ones(2, 1, 7, 7)),  # same shapes but not N x H x W
                 (torch.ones(2, 7, 7), torch.ones(2, 8, 8)), (torch.ones(2, 7, 7), [[1.0]]), ([[1.0]], torch.ones(2, 7, 7))):
        with pytest.raises(SgtlabError):
            spearman_abs(a, b)
