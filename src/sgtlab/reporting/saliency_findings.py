"""The interpretability findings of a report: per-image saliency metrics of each training method
compared with ST's, paired by seed and test image (`sgtlab.inference.crossed_comparison`: the
training seed is the replicate and the shared test images a second source of noise; a verdict needs
`MIN_SEEDS` seeds; Holm over every such comparison of the report), the papers' saliency claims with
their measured verdict, and the sanity-check table.

Input: `{label: {seed: interpretability.json}}` and `{label: training method}`; plain data out
(texts and `Table`s), so the report only places them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgtlab.reporting.summary import Table
from sgtlab.inference import crossed_comparison
from sgtlab.reporting.comparisons import MIN_SEEDS
from sgtlab.stats import holm

# (per-image key, +1 if higher is better / -1 if lower is, what "better" means)
COMPARED = (("entropy", -1, "more concentrated (lower entropy)"), ("gini", +1, "sparser (higher Gini)"),
            ("abpc", +1, "more faithful (higher ABPC)"), ("road_gap", +1, "more faithful (higher ROAD MoRF-LeRF)"),
            ("size_kib", -1, "smaller (compressed size)"), ("aopc_lerf", -1, "lower AOPC_LeRF"),
            ("sanity", -1, "more model-dependent (lower Spearman after randomisation)"))
# the papers' claims: (training method, claim as the paper states it, the metrics that make it true)
CLAIMS = (("sgt", "SGT produces better saliency maps than ST", ("entropy", "abpc", "road_gap")),
          ("asgt", "ASGT produces better saliency maps than ST", ("entropy", "abpc", "road_gap")),
          ("scaat", "SCAAT gives lower saliency entropy than ST", ("entropy",)),
          ("scaat", "SCAAT gives smaller saliency maps (size) than ST", ("size_kib",)),
          ("scaat", "SCAAT gives lower AOPC_LeRF than ST", ("aopc_lerf",)))
ALPHA = 0.05


def _values(res: dict[str, Any], method: str, key: str) -> np.ndarray | None:
    if key == "sanity":
        s = (res.get("sanity") or {}).get("methods", {}).get(method)
        return None if s is None else np.asarray(s["spearman"][-1], dtype=float)
    v = res["per_image"].get(method, {}).get(key)
    return None if v is None else np.asarray(v, dtype=float)


def _paired(runs_a: dict[int, dict], runs_b: dict[int, dict], method: str, key: str):
    """seeds x images arrays of both labels on their common seeds and the images every run scored."""
    seeds = sorted(set(runs_a) & set(runs_b))
    a = [_values(runs_a[s], method, key) for s in seeds]
    b = [_values(runs_b[s], method, key) for s in seeds]
    if not seeds or any(v is None for v in a + b) or len({len(v) for v in a + b}) != 1:
        return None
    a, b = np.stack(a), np.stack(b)
    keep = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    return (a[:, keep], b[:, keep]) if keep.sum() >= 2 else None


def comparisons(results: dict[str, dict[int, dict]], train_method: dict[str, str], saliency: list[str],
                n_boot: int = 0, min_seeds: int = MIN_SEEDS) -> list[dict[str, Any]]:
    """Every (label vs ST, saliency method, metric) comparison with its intervals and Holm p."""
    st = next((l for l, m in train_method.items() if m == "st" and l in results), None)
    if st is None:
        return []
    out = []
    for label, runs in results.items():
        if label == st:
            continue
        for method in saliency:
            for key, sign, better in COMPARED:
                pair = _paired(runs, results[st], method, key)
                if pair is None:
                    continue
                seeds = pair[0].shape[0]
                c = crossed_comparison(*pair) if seeds >= 2 else None
                nan = math.nan
                out.append({"label": label, "train_method": train_method.get(label, ""), "vs": st, "saliency": method,
                            "metric": key, "sign": sign, "better": better, "diff": float((pair[0] - pair[1]).mean()),
                            "lo": c.lo if c else nan, "hi": c.hi if c else nan, "mde": c.mde if c else nan,
                            "p": c.p if c and seeds >= min_seeds else nan, "seeds": seeds,
                            "images": pair[0].shape[1]})
    for c, p in zip(out, holm([c["p"] for c in out])):
        c["p_holm"] = float(p)
        if c["seeds"] < min_seeds:
            c["direction"] = f"inconclusive: {c['seeds']} seed{'s' * (c['seeds'] != 1)}, at least {min_seeds} needed"
        else:
            c["direction"] = ("better" if c["diff"] * c["sign"] > 0 else "worse") if p < ALPHA else "no significant difference"
    return out


def comparison_table(comps: list[dict[str, Any]]) -> Table:
    def f(v):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.4f}"

    rows = [[c["label"], c["saliency"], c["metric"], f(c["diff"]), f"[{f(c['lo'])}, {f(c['hi'])}]",
             f(c["mde"]).lstrip("+"), "–" if math.isnan(c["p_holm"]) else f"{c['p_holm']:.3g}", c["direction"],
             f"{c['seeds']} x {c['images']}"] for c in comps]
    return Table("Saliency metrics against ST (difference = method - ST, per image, paired by seed and image; "
                 "95 % interval: random-effects t over seeds, carrying the noise of the shared test images; MDE: "
                 "the minimal detectable effect at 80 % power; p Holm-adjusted over the comparisons with enough "
                 "seeds for a verdict)",
                 ["method", "saliency", "metric", "difference", "95 % CI", "MDE", "p (Holm)",
                  "verdict", "seeds x images"], rows)


def _p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.2g}"


def claim_verdicts(comps: list[dict[str, Any]], train_method: dict[str, str], saliency: str) -> list[str]:
    """One sentence per claim of the papers whose method was run, on maps of `saliency`."""
    out = []
    for method, claim, keys in CLAIMS:
        for label in [l for l, m in train_method.items() if m == method]:
            rel = [c for c in comps if c["label"] == label and c["saliency"] == saliency and c["metric"] in keys]
            if not rel:
                continue
            good = [c for c in rel if c["direction"] == "better"]
            bad = [c for c in rel if c["direction"] == "worse"]
            few = [c for c in rel if c["direction"].startswith("inconclusive")]
            verdict = (few[0]["direction"] if len(few) == len(rel) else "supported" if len(good) == len(rel) else "contradicted" if len(bad) == len(rel)
                       else "mixed" if good and bad else "partly supported" if good else "partly contradicted" if bad
                       else "not shown")
            detail = "; ".join(f"{c['metric']} {c['diff']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}] over {c['seeds']} "
                               f"seed(s) x {c['images']} images, p(Holm) {_p(c['p_holm'])}: {c['direction']}"
                               for c in rel)
            out.append(f"Claim: \"{claim}\" ({label}, {saliency} maps) - measured verdict: {verdict.upper()}. "
                       f"{detail}.")
    return out


def sanity_table(results: dict[str, dict[int, dict]], saliency: list[str]) -> tuple[Table | None, list[str]]:
    """Spearman (mean over images, then seeds) per randomisation step, SSIM after the last, and the
    verdict (FAIL when any seed fails); plus the flagged (label, method) pairs."""
    rows, flagged, layers = [], [], None
    for label, runs in results.items():
        for method in saliency:
            san = [r["sanity"] for r in runs.values() if r.get("sanity") and method in r["sanity"]["methods"]]
            if not san:
                continue
            layers = layers or san[0]["layers"]
            sp = np.mean([s["methods"][method]["spearman_mean"] for s in san], axis=0)
            ss = np.mean([s["methods"][method]["ssim_mean"][-1] for s in san])
            verdicts = [s["methods"][method]["verdict"] for s in san]
            word = "FAIL" if "fail" in verdicts else "pass" if all(v == "pass" for v in verdicts) else "unclear"
            if word == "FAIL":
                flagged.append(f"{label} / {method}")
            rows.append([label, method] + [f"{v:.3f}" for v in sp] + [f"{ss:.3f}", word])
    if not rows:
        return None, []
    thr = next(iter(next(iter(results.values())).values())).get("sanity", {}).get("threshold", 0.5)
    return Table(f"Sanity check (cascading randomisation, Adebayo et al. 2018): Spearman rank correlation of |maps| "
                 f"between the original and the randomised model, after randomising each further layer (output "
                 f"first); SSIM after the last; FAIL when the 95 % interval of the last Spearman lies above {thr}",
                 ["method", "saliency"] + [f"+{l}" for l in layers] + ["SSIM (all random)", "verdict"], rows), flagged


def label_sanity_table(results: dict[str, dict[int, dict]], saliency: list[str]) -> tuple[Table | None, list[str]]:
    """The label-randomisation check (`label_sanity.json` of each random-label run, `{label: {seed:
    result}}`): Spearman and SSIM between the maps of the real and the random-label model (mean over
    images, then seeds) and the verdict (FAIL when any seed fails); plus the flagged (real label,
    method) pairs."""
    rows, flagged, thr = [], [], 0.5
    for label, runs in results.items():
        for method in saliency:
            res = [r for r in runs.values() if method in r.get("methods", {})]
            if not res:
                continue
            thr = res[0].get("threshold", thr)
            sp = np.mean([r["methods"][method]["spearman_mean"] for r in res])
            ss = np.mean([r["methods"][method]["ssim_mean"] for r in res])
            verdicts = [r["methods"][method]["verdict"] for r in res]
            word = "FAIL" if "fail" in verdicts else "pass" if all(v == "pass" for v in verdicts) else "unclear"
            if word == "FAIL":
                flagged.append(f"{res[0]['real']} / {method}")
            rows.append([res[0]["real"], label, method, f"{sp:.3f}", f"{ss:.3f}", str(len(res)), word])
    if not rows:
        return None, []
    return Table(f"Sanity check (label randomisation, Adebayo et al. 2018): Spearman rank correlation of |maps| and "
                 f"SSIM between the model trained on the true labels and the same model trained on randomly "
                 f"permuted labels (mean over images, then seeds); FAIL when the 95 % interval of the Spearman "
                 f"lies above {thr}",
                 ["method", "random-label model", "saliency", "Spearman", "SSIM", "seeds", "verdict"], rows), flagged
