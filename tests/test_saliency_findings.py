"""The report's interpretability findings on made-up per-image results: paired comparisons against
ST, the papers' claims with verdicts, and the sanity-check table that flags a failing method."""
from __future__ import annotations

import numpy as np

from sgtlab.reporting.saliency_findings import claim_verdicts, comparisons, sanity_table


def _result(rng, entropy_shift=0.0, spearman_last=0.2, n=40):
    base = rng.normal(5.0, 0.3, n)
    per = {"entropy": (base + entropy_shift).tolist(), "gini": rng.uniform(0.3, 0.5, n).tolist(),
           "abpc": rng.normal(0.1, 0.05, n).tolist(), "road_gap": rng.normal(0.5, 0.1, n).tolist(),
           "size_kib": rng.normal(0.6, 0.05, n).tolist(), "aopc_lerf": rng.normal(0.0, 0.01, n).tolist()}
    sp = np.clip(rng.normal(spearman_last, 0.05, 8), -1, 1)
    verdict = "fail" if spearman_last > 0.6 else "pass"
    return {"per_image": {"grad": per}, "options": {"target": "true"},
            "sanity": {"layers": ["fc2", "fc1"], "threshold": 0.5, "n": 8,
                       "methods": {"grad": {"spearman": [sp.tolist(), sp.tolist()], "spearman_mean": [0.8, float(sp.mean())],
                                            "ssim_mean": [0.5, 0.1], "verdict": verdict}}}}


def test_claims_get_verdicts_from_paired_intervals_and_failing_maps_are_flagged():
    rng = np.random.default_rng(0)
    seeds = range(5)  # a method-level verdict needs 5 seeds
    results = {"ST": {s: _result(np.random.default_rng(s)) for s in seeds},
               "SCAAT": {s: _result(np.random.default_rng(s), entropy_shift=-0.5) for s in seeds},
               "SGT": {s: _result(np.random.default_rng(s + 10), spearman_last=0.95) for s in seeds}}
    methods = {"ST": "st", "SCAAT": "scaat", "SGT": "sgt"}
    comps = comparisons(results, methods, ["grad"])
    ent = {c["label"]: c for c in comps if c["metric"] == "entropy"}
    # SCAAT's maps are the ST maps shifted by -0.5 nats on the same images: clearly lower
    assert abs(ent["SCAAT"]["diff"] + 0.5) < 1e-9
    assert ent["SCAAT"]["hi"] < 0 and ent["SCAAT"]["direction"] == "better"
    # SGT's maps are independent draws of the same distribution: no significant difference
    assert ent["SGT"]["direction"] == "no significant difference" and ent["SGT"]["lo"] < 0 < ent["SGT"]["hi"]
    assert all(0 <= c["p_holm"] <= 1 and c["p_holm"] >= c["p"] for c in comps)
    texts = claim_verdicts(comps, methods, "grad")
    scaat_entropy = next(t for t in texts if "lower saliency entropy" in t)
    assert "SUPPORTED" in scaat_entropy
    sgt = next(t for t in texts if "SGT produces better" in t)
    assert "NOT SHOWN" in sgt or "PARTLY" in sgt or "MIXED" in sgt
    table, flagged = sanity_table(results, ["grad"])
    assert flagged == ["SGT / grad"]
    assert [r[-1] for r in table.rows] == ["pass", "pass", "FAIL"]
    # with 2 seeds the same data give no method-level verdict: images do not stand in for seeds
    two = {label: {s: runs[s] for s in (0, 1)} for label, runs in results.items()}
    comps2 = comparisons(two, methods, ["grad"])
    assert all(c["direction"] == "inconclusive: 2 seeds, at least 5 needed" for c in comps2)
    assert "INCONCLUSIVE: 2 SEEDS" in next(t for t in claim_verdicts(comps2, methods, "grad") if "entropy" in t)
