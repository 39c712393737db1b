"""Paired comparisons of two methods under one attack at one eps (SPEC.md, "Statistics of
comparisons"): runs paired by seed, the same test images for every run; the mean paired difference
over seeds with a t interval, a two-level paired bootstrap (seeds, then images) for the 95 % interval
and the p-value, Holm's correction over the comparisons one report makes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgtlab.reporting.data import outcomes
from sgtlab.stats import Comparison, compare_paired, holm

ALPHA = 0.05


@dataclass
class Result:
    a: str              # label
    b: str
    attack: str
    eps: float
    n_seeds: int
    n_images: int
    comparison: Comparison | None  # None: not measurable (no paired runs / per-image results)
    p_holm: float = math.nan

    @property
    def diff_pp(self) -> float:
        return 100 * self.comparison.diff if self.comparison else math.nan

    @property
    def significant(self) -> bool:
        return self.comparison is not None and self.p_holm < ALPHA

    @property
    def direction(self) -> int:
        """+1: a significantly above b, -1: below, 0: no significant difference."""
        if not self.significant:
            return 0
        return 1 if self.comparison.diff > 0 else -1

    def text(self) -> str:
        """'+2.0 pp, 95 % CI [-3.1, +7.1], p = 0.41 (Holm): no significant difference'."""
        c = self.comparison
        if c is None:
            return "not measurable (no runs paired by seed with per-image results)"
        b = c.boot
        verdict = (f"{self.a} is {'more' if c.diff > 0 else 'less'} robust than {self.b}" if self.significant
                   else "no significant difference")
        t = c.t
        tpart = (f"; t interval over {t.n} seeds [{100 * t.lo:+.1f}, {100 * t.hi:+.1f}]" if t.n >= 2 and
                 not math.isnan(t.lo) else f"; {t.n} paired seed, no t interval")
        return (f"{100 * c.diff:+.1f} pp, 95 % CI [{100 * b.lo:+.1f}, {100 * b.hi:+.1f}], p {_p(self.p_holm)} "
                f"(Holm): {verdict} ({self.n_images} images{tpart})")


def _p(p: float) -> str:
    return "= nan" if math.isnan(p) else f"= {p:.2g}" if p >= 0.001 else "< 0.001"


def paired_matrix(root: Path, runs_a: list[dict], runs_b: list[dict], attack: str, eps: float):
    """(seeds x images) outcomes of a and b, rows the seeds both have, columns the images both saw."""
    seeds = sorted({r["seed"] for r in runs_a} & {r["seed"] for r in runs_b})
    rows_a, rows_b = [], []
    for s in seeds:
        ra = next(r for r in runs_a if r["seed"] == s)
        rb = next(r for r in runs_b if r["seed"] == s)
        oa, ob = outcomes(root, ra, attack, eps), outcomes(root, rb, attack, eps)
        if oa is None or ob is None:
            continue
        common, ia, ib = np.intersect1d(oa[0], ob[0], return_indices=True)
        if len(common) == 0:
            continue
        rows_a.append((common, oa[1][ia])), rows_b.append((common, ob[1][ib]))
    if not rows_a:
        return None
    shared = rows_a[0][0]
    for ids, _ in rows_a[1:]:
        shared = np.intersect1d(shared, ids)
    a = np.stack([vals[np.isin(ids, shared)] for ids, vals in rows_a])
    b = np.stack([vals[np.isin(ids, shared)] for ids, vals in rows_b])
    return a, b


def compare_labels(root: Path, groups: dict[str, list[dict]], a: str, b: str, attack: str, eps: float,
                   n_boot: int = 10_000) -> Result:
    m = paired_matrix(root, groups[a], groups[b], attack, eps)
    if m is None:
        return Result(a, b, attack, eps, 0, 0, None)
    xa, xb = m
    return Result(a, b, attack, eps, xa.shape[0], xa.shape[1], compare_paired(xa, xb, n_boot=n_boot))


def apply_holm(results: list[Result]) -> list[Result]:
    """Holm-adjust, in place, the bootstrap p-values of every measurable comparison of the report."""
    ps = [r.comparison.p if r.comparison else math.nan for r in results]
    for r, p in zip(results, holm(ps)):
        r.p_holm = float(p)
    return results
