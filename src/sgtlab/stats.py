"""Statistics of comparisons, as SPEC.md "Statistics of comparisons" defines them: plain functions of
NumPy arrays, used by the report and importable on their own.

Two methods are compared on the same test images with runs paired by seed (same seed: same initial
weights and data order). Outcomes are arrays of shape (n_seeds, n_images): row s of `a` and `b` is
the same seed, column j the same test image (1/0 robust outcomes, or any per-image metric).

- `paired_t_interval`: the mean paired difference over seeds, Student t interval and p-value;
- `paired_bootstrap`: a two-level bootstrap (seeds, then images within each resampled seed), so
  the interval reflects both the training noise and the finite test set;
- `holm`: Holm's step-down correction of the p-values one report makes;
- `wilson_interval`: a single run's robust accuracy over its test images.
scipy gives the t distribution and normal quantiles; the bootstrap is written here because scipy's
`bootstrap` resamples one level only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

from sgtlab.errors import SgtlabError


@dataclass(frozen=True)
class TInterval:
    mean: float
    lo: float
    hi: float
    p: float
    n: int


@dataclass(frozen=True)
class BootResult:
    diff: float
    lo: float
    hi: float
    p: float


@dataclass(frozen=True)
class Comparison:
    diff: float  # mean(a) - mean(b)
    t: TInterval
    boot: BootResult

    @property
    def p(self) -> float:
        return self.boot.p


def _z(conf: float) -> float:
    if not 0 < conf < 1:
        raise SgtlabError(f"confidence level must be in (0, 1), got {conf}")
    return float(_st.norm.ppf(0.5 + conf / 2))


def wilson_interval(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (Wilson 1927; Newcombe 1998, method 3)."""
    if n <= 0 or not 0 <= k <= n:
        raise SgtlabError(f"a proportion needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = _z(conf)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # exact ends at k = 0 and k = n (the formula leaves a rounding residue such as 2.8e-17 there)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def binomial_halfwidth(n: int, p: float = 0.5, conf: float = 0.95) -> float:
    """Normal-approximation half-width of a proportion measured on n images: the smallest
    difference n images can show at this confidence (p = 0.5 is the widest case)."""
    if n <= 0:
        raise SgtlabError(f"need at least one image, got n={n}")
    return _z(conf) * math.sqrt(p * (1 - p) / n)


def paired_t_interval(diffs: Sequence[float], conf: float = 0.95) -> TInterval:
    """Mean of per-seed paired differences with a Student t interval and two-sided p-value.
    With one seed there is no spread: the interval and p are NaN."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    n = int(d.size)
    if n == 0:
        return TInterval(math.nan, math.nan, math.nan, math.nan, 0)
    m = float(d.mean())
    if n < 2:
        return TInterval(m, math.nan, math.nan, math.nan, n)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return TInterval(m, m, m, 1.0 if m == 0 else 0.0, n)
    tq = float(_st.t.ppf(0.5 + conf / 2, n - 1))
    p = float(2 * _st.t.sf(abs(m) / se, n - 1))
    return TInterval(m, m - tq * se, m + tq * se, p, n)


def _as_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim == 1 and b.ndim == 1:  # one seed
        a, b = a[None], b[None]
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise SgtlabError(f"paired outcomes must be two arrays of the same shape (seeds x images), "
                          f"got {a.shape} and {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise SgtlabError("paired outcomes contain NaN: every image needs a value in both runs")
    return a, b


def paired_bootstrap(a, b, n_boot: int = 10_000, conf: float = 0.95, seed: int = 0,
                     chunk: int = 500) -> BootResult:
    """Two-level paired bootstrap of mean(a) - mean(b).

    Each replicate draws the seeds with replacement, then, for each drawn seed, the images with
    replacement, and averages the paired differences. The interval is the percentile interval;
    the two-sided p-value compares |replicate - diff| with |diff| (the replicates shifted to the
    null of no difference), with the usual +1 so p is never 0."""
    a, b = _as_pair(a, b)
    if n_boot < 100:
        raise SgtlabError(f"n_boot must be at least 100, got {n_boot}")
    d = a - b
    s, n = d.shape
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for start in range(0, n_boot, chunk):  # chunks bound the memory at chunk x seeds x images
        m = min(chunk, n_boot - start)
        rows = rng.integers(0, s, size=(m, s))
        cols = rng.integers(0, n, size=(m, s, n))
        reps[start:start + m] = d[rows[:, :, None], cols].mean(axis=(1, 2))
    alpha = 1 - conf
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    if np.all(d == 0):
        p = 1.0
    else:
        p = float((np.sum(np.abs(reps - diff) >= abs(diff)) + 1) / (n_boot + 1))
    return BootResult(diff, float(lo), float(hi), min(1.0, p))


def compare_paired(a, b, conf: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Comparison:
    """Both views of one paired comparison: the t interval over per-seed mean differences and the
    two-level bootstrap over seeds and images."""
    a, b = _as_pair(a, b)
    t = paired_t_interval(a.mean(axis=1) - b.mean(axis=1), conf)
    boot = paired_bootstrap(a, b, n_boot=n_boot, conf=conf, seed=seed)
    return Comparison(boot.diff, t, boot)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given); NaNs stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out
