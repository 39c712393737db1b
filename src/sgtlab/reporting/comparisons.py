"""Paired comparisons of two methods (SPEC.md, "Statistics of comparisons").

Runs are paired by seed and every run sees the same test images: a crossed seeds x images design.
A comparison of two method labels under one attack at one eps (or over the whole eps grid: the area
under the robustness curve, per image the mean outcome over the grid) is

- *method-level*: `sgtlab.inference.crossed_comparison` over the seeds both labels have, the seed
  being the replicate and the shared test set a second source of noise; it gives a verdict only
  with at least `min_seeds` seeds, when neither arm sits at the floor (or ceiling), and after Holm's
  correction over every such comparison of the report;
- *per model*: each seed's two trained models compared over the images (`model_comparison`), shown
  beside it and never a verdict about the methods.

Each comparison also carries the clean-accuracy difference, the robust difference on the images
both runs classify correctly, and its minimal detectable effect. Runs flagged as under-trained
(`sgtlab.reporting.flags`) are left out, with their seed."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sgtlab.inference import CrossedResult, ModelComparison, crossed_comparison, model_comparison
from sgtlab.reporting.data import ATTACK_NAMES, outcomes, per_sample
from sgtlab.reporting.eps import eps_text
from sgtlab.stats import holm

ALPHA = 0.05
MIN_SEEDS = 5      # a method-level verdict needs this many seeds (SPEC.md)
MARGIN = 0.02      # equivalence margin: "no effect larger than 2 pp"
FLOOR = 0.05       # both arms below (or both above 1 - FLOOR): no information


@dataclass
class Options:
    min_seeds: int = MIN_SEEDS
    margin: float = MARGIN
    dataset: str | None = None   # for eps printed as k/255 on colour data


@dataclass
class Result:
    a: str
    b: str
    attack: str
    eps: float | None            # None: the mean over the eps grid (area under the curve)
    seeds: list[int] = field(default_factory=list)
    n_images: int = 0
    acc_a: float = math.nan      # mean robust accuracy of each arm over seeds and images
    acc_b: float = math.nan
    method: CrossedResult | None = None
    models: list[tuple[int, ModelComparison]] = field(default_factory=list)
    clean_diff: float = math.nan      # mean over seeds of clean accuracy a - b
    correct_diff: float = math.nan    # robust a - b on the images both runs classify correctly
    opts: Options = field(default_factory=Options)
    grid: list[float] = field(default_factory=list)
    p_holm: float = math.nan

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def measured(self) -> bool:
        return self.n_images > 0

    @property
    def at_floor(self) -> bool:
        lo, hi = FLOOR, 1 - FLOOR
        return self.measured and ((self.acc_a < lo and self.acc_b < lo) or (self.acc_a > hi and self.acc_b > hi))

    @property
    def eligible(self) -> bool:
        """Counts as a method-level test: enough seeds, not at the floor."""
        return self.method is not None and self.n_seeds >= self.opts.min_seeds and not self.at_floor

    @property
    def significant(self) -> bool:
        return self.eligible and self.p_holm < ALPHA

    @property
    def direction(self) -> int:
        """+1: a significantly above b, -1: below, 0: neither."""
        return 0 if not self.significant else (1 if self.method.diff > 0 else -1)

    @property
    def equivalent(self) -> bool:
        return self.eligible and not self.significant and self.method.equivalent(self.opts.margin)

    def where(self) -> str:
        name = ATTACK_NAMES.get(self.attack, self.attack)
        if self.eps is None:
            return f"{name}, mean over eps {', '.join(eps_text(e, self.opts.dataset) for e in self.grid)} (area)"
        return f"{name} at eps {eps_text(self.eps, self.opts.dataset)}"

    def status(self) -> str:
        """One phrase: what this comparison says about the methods."""
        if not self.measured:
            return "not measurable (no runs paired by seed with per-image results)"
        if self.at_floor:
            side = "floor" if self.acc_a < FLOOR else "ceiling"
            return (f"at the {side} ({self.a} {100 * self.acc_a:.1f} %, {self.b} {100 * self.acc_b:.1f} %): "
                    f"no information")
        if self.n_seeds < self.opts.min_seeds:
            return f"inconclusive: {self.n_seeds} seed{'s' * (self.n_seeds != 1)}, at least {self.opts.min_seeds} needed"
        if self.significant:
            return f"{self.a} {'more' if self.method.diff > 0 else 'less'} robust than {self.b}"
        if self.equivalent:
            return f"no effect larger than {100 * self.opts.margin:g} pp"
        return "no significant difference"

    def text(self) -> str:
        """The difference, its interval and test, its status, then what it rests on."""
        if not self.measured:
            return self.status()
        parts = []
        m = self.method
        if m is not None:
            parts.append(f"{100 * m.diff:+.1f} pp, 95 % CI [{100 * m.lo:+.1f}, {100 * m.hi:+.1f}] "
                         f"(random-effects t over {m.n_seeds} seeds x {m.n_images} images, df {m.df:.1f}), "
                         f"p {p_text(m.p)}" + (f", Holm {p_text(self.p_holm)}" if not math.isnan(self.p_holm) else "")
                         + f"; minimal detectable effect {100 * m.mde:.1f} pp")
        else:
            d = np.mean([c.diff for _, c in self.models]) if self.models else math.nan
            parts.append(f"{100 * d:+.1f} pp ({self.n_seeds} seed: no method-level test)")
        out = f"{parts[0]}: {self.status()}"
        if self.models and (m is None or self.n_seeds < self.opts.min_seeds):
            out += ("; trained models compared (not a method verdict): " + ", ".join(
                f"seed {s} {100 * c.diff:+.1f} pp [{100 * c.lo:+.1f}, {100 * c.hi:+.1f}]" for s, c in self.models))
        extra = []
        if not math.isnan(self.clean_diff):
            extra.append(f"clean accuracy {100 * self.clean_diff:+.1f} pp")
        if not math.isnan(self.correct_diff):
            extra.append(f"robust {100 * self.correct_diff:+.1f} pp on the images both classify correctly")
        return out + (f" ({'; '.join(extra)})" if extra else "")


def p_text(p: float) -> str:
    """Three significant digits, so a p just above 0.05 never prints as '0.05'."""
    return "= nan" if math.isnan(p) else f"= {p:.3g}" if p >= 0.001 else "< 0.001"


def _clean(root: Path, run: dict, ids: np.ndarray) -> np.ndarray | None:
    table = per_sample(root, run)
    if table is None or "clean_correct" not in table:
        return None
    own = table.get("test_index", table["index"])
    pos = {int(i): k for k, i in enumerate(own)}
    return np.array([table["clean_correct"][pos[int(i)]] for i in ids])


def _grid_outcomes(root: Path, run: dict, attack: str, grid: list[float]):
    """Per image, the mean robust outcome over the eps grid (the area under its curve)."""
    got = [outcomes(root, run, attack, e) for e in grid]
    if not got or any(g is None for g in got):
        return None
    ids = got[0][0]
    return ids, np.mean([g[1] for g in got], axis=0)


def compare(root: Path, runs_a: list[dict], runs_b: list[dict], a: str, b: str, attack: str,
            eps: float | None, opts: Options, grid: list[float] | None = None) -> Result:
    """The comparison of labels a and b (their runs, flagged ones already left out)."""
    res = Result(a, b, attack, eps, opts=opts, grid=list(grid or []))
    by_seed_b = {r["seed"]: r for r in runs_b}
    pairs = [(r, by_seed_b[r["seed"]]) for r in runs_a if r["seed"] in by_seed_b]
    got = []
    for ra, rb in sorted(pairs, key=lambda p: p[0]["seed"]):
        if eps is None:
            oa, ob = _grid_outcomes(root, ra, attack, res.grid), _grid_outcomes(root, rb, attack, res.grid)
        else:
            oa, ob = outcomes(root, ra, attack, eps), outcomes(root, rb, attack, eps)
        if oa is not None and ob is not None:
            got.append((ra, rb, oa, ob))
    if not got:
        return res
    shared = got[0][2][0]
    for _, _, oa, ob in got:
        shared = np.intersect1d(np.intersect1d(shared, oa[0]), ob[0])
    if shared.size == 0:
        return res

    def take(o):  # values in the order of `shared` (sorted test-set ids)
        mask = np.isin(o[0], shared)
        return o[1][mask][np.argsort(o[0][mask], kind="stable")]

    xa = np.stack([take(oa) for _, _, oa, _ in got])
    xb = np.stack([take(ob) for _, _, _, ob in got])
    if np.isnan(xa).any() or np.isnan(xb).any():  # an attack that did not run on every image
        keep = ~(np.isnan(xa).any(0) | np.isnan(xb).any(0))
        xa, xb, shared = xa[:, keep], xb[:, keep], shared[keep]
    res.seeds = [ra["seed"] for ra, _, _, _ in got]
    res.n_images = xa.shape[1]
    res.acc_a, res.acc_b = float(xa.mean()), float(xb.mean())
    if xa.shape[1] > 1:
        res.models = [(s, model_comparison(xa[i], xb[i])) for i, s in enumerate(res.seeds)]
    if xa.shape[0] >= 2:
        res.method = crossed_comparison(xa, xb)
    res.clean_diff = float(np.mean([float(ra["clean_accuracy"]) - float(rb["clean_accuracy"])
                                    for ra, rb, _, _ in got]))
    diffs = []
    for i, (ra, rb, _, _) in enumerate(got):
        ca, cb = _clean(root, ra, shared), _clean(root, rb, shared)
        if ca is None or cb is None:
            break
        both = (ca > 0) & (cb > 0)
        if both.any():
            diffs.append(float(xa[i][both].mean() - xb[i][both].mean()))
    if len(diffs) == len(got):
        res.correct_diff = float(np.mean(diffs))
    return res


def apply_holm(results: list[Result]) -> list[Result]:
    """Holm-adjust, in place, the p-values of the method-level comparisons that can give a verdict
    (enough seeds, not at the floor); the others keep p_holm NaN."""
    ps = [r.method.p if r.eligible else math.nan for r in results]
    for r, p in zip(results, holm(ps)):
        r.p_holm = float(p)
    return results
