"""Calibration of the report's verdict rule by simulation (SPEC.md, "Statistics of comparisons").

`simulate` draws whole experiments of two methods on the report's design: S training seeds x N test
images, the same images for every seed, 0/1 robust outcomes. Each image has a difficulty q_j (shared
by both methods); each method adds a per-image term h_mj that every seed of the method shares (so
per-image differences correlate across seeds, as measured in the quick run: +0.2 to +0.5) and a
per-seed term u_ms (the seed-to-seed spread of a run's robust accuracy); an outcome is
Bernoulli(clip(q_j + h_mj + u_ms + effect_m, 0, 1)). With q_j symmetric about 0.5 and symmetric
terms, both methods have the same expected accuracy exactly when the effect is 0: the null.

`rates` runs a test on many simulated experiments and returns its rejection rate with the
Monte-Carlo standard error; `REGIMES` are the three regimes of the issue "Verdicts that hold" at
the quick run's levels (seed sd 10.6 pp for one method and 2.1 pp for the other, 300 images).
`python scripts/calibrate_verdicts.py` prints the table for the analytic test and the bootstraps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Regime:
    name: str
    seed_sd: tuple[float, float]  # sd of u for method a and b (accuracy units)
    image_sd: float               # sd of each method's per-image term h


REGIMES = (
    Regime("seed noise only", (0.106, 0.021), 0.0),
    Regime("per-image correlation only", (0.0, 0.0), 0.35),
    Regime("both (quick's levels)", (0.106, 0.021), 0.35),
)


def simulate(rng: np.random.Generator, n_sim: int, seeds: int, images: int, regime: Regime,
             effect: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) outcomes of n_sim experiments, each array n_sim x seeds x images of 0/1."""
    q = rng.uniform(0.2, 0.8, size=(n_sim, 1, images))
    out = []
    for m, eff in ((0, effect), (1, 0.0)):
        h = rng.normal(0, regime.image_sd, size=(n_sim, 1, images)) if regime.image_sd else 0.0
        u = rng.normal(0, regime.seed_sd[m], size=(n_sim, seeds, 1)) if regime.seed_sd[m] else 0.0
        p = np.clip(q + h + u + eff, 0, 1)
        out.append((rng.random((n_sim, seeds, images)) < p).astype(np.float32))
    return out[0], out[1]


def image_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean correlation across seeds of the per-image differences (the quick run's +0.2 to +0.5)."""
    d = (a - b).astype(float)
    d = d - d.mean(axis=-1, keepdims=True)
    s = d.shape[-2]
    cors = []
    for i in range(s):
        for j in range(i + 1, s):
            num = (d[..., i, :] * d[..., j, :]).sum(-1)
            den = np.sqrt((d[..., i, :] ** 2).sum(-1) * (d[..., j, :] ** 2).sum(-1))
            cors.append(np.where(den > 0, num / np.where(den > 0, den, 1), 0).mean())
    return float(np.mean(cors)) if cors else math.nan


Test = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (n_sim x S x N) pairs -> n_sim p-values


def rates(test: Test, seeds: int, regime: Regime, effect: float = 0.0, n_sim: int = 2000, images: int = 300,
          alpha: float = 0.05, seed: int = 0, batch: int = 250) -> tuple[float, float]:
    """(rejection rate at alpha, its Monte-Carlo standard error) of `test` over n_sim experiments."""
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_sim, batch):
        m = min(batch, n_sim - start)
        a, b = simulate(rng, m, seeds, images, regime, effect)
        hits += int(np.sum(test(a, b) < alpha))
    r = hits / n_sim
    return r, math.sqrt(max(r * (1 - r), 1e-12) / n_sim)


def crossed_test(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The report's method-level test (`sgtlab.inference.crossed_t`), vectorised."""
    from sgtlab.inference import crossed_t

    return crossed_t((a - b).astype(np.float64))[3]


def seed_t_test(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A paired t test over per-seed means: treats the test set as fixed."""
    from scipy import stats

    d = (a - b).mean(axis=-1)
    return stats.ttest_1samp(d, 0.0, axis=-1).pvalue


def _boot_p(reps: np.ndarray, diff: np.ndarray) -> np.ndarray:
    return (np.sum(np.abs(reps - diff[:, None]) >= np.abs(diff)[:, None], axis=1) + 1) / (reps.shape[1] + 1)


def bootstrap_test(kind: str, n_boot: int = 400, seed: int = 0) -> Test:
    """The two-level bootstrap the report used before ("nested": seeds, then images anew inside each
    seed) or the crossed one (one image draw shared by all seeds), vectorised over experiments."""
    def test(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        d = (a - b).astype(np.float32)
        k, s, n = d.shape
        diff = d.mean(axis=(1, 2))
        reps = np.empty((k, n_boot), np.float32)
        ks = np.arange(k)[:, None, None]
        for r in range(n_boot):
            rows = rng.integers(0, s, size=(k, s))
            cols = rng.integers(0, n, size=(k, s, n) if kind == "nested" else (k, 1, n))
            reps[:, r] = d[ks, rows[:, :, None], cols].mean(axis=(1, 2))
        p = _boot_p(reps, diff)
        return np.where(np.all(d == 0, axis=(1, 2)), 1.0, p)

    return test
