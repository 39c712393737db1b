"""The report's words follow the statistics: a planted difference is called significant with its
direction, interval and Holm-corrected p; no difference is called not significant; the papers'
claims get verdicts (supported / contradicted / not significant / not measured here)."""
from __future__ import annotations

import json
import zlib

import numpy as np

from sgtlab.experiments.runner import run_dir, write_results
from sgtlab.reporting import build_report
from sgtlab.reporting.data import headline_eps
from sgtlab.reporting.text import analyse, claim_verdicts, findings

N = 400


def make_experiment(root, accs: dict[tuple[str, str], list[float]], seeds=(0, 1, 2)):
    """Runs with per-image ensemble outcomes drawn at the given robust accuracy per seed (eps 0.1;
    eps 0.3 at half of it), on the same N test images."""
    rows = []
    ids = np.random.default_rng(99).permutation(1000)[:N]
    for (label, method), per_seed in accs.items():
        for s, acc in zip(seeds, per_seed):
            run = f"{label.lower()}-seed{s}"
            rng = np.random.default_rng(zlib.crc32(f"{label}{s}".encode()))
            r1 = (rng.random(N) < acc).astype(int)
            r3 = r1 * (rng.random(N) < 0.5)
            folder = run_dir(root, run)
            folder.mkdir(parents=True)
            lines = ["index,test_index,label,clean_pred,clean_correct,ensemble@0.1,ensemble@0.3"]
            lines += [f"{i},{ids[i]},1,1,1,{r1[i]},{r3[i]}" for i in range(N)]
            (folder / "robustness_per_sample.csv").write_text("\n".join(lines) + "\n")
            (folder / "robustness.json").write_text(json.dumps({"n": N, "attacks_run": {"pgd": "PGD(steps=10)"}}))
            rows.append({"run": run, "label": label, "method": method, "seed": s, "dataset": "mnist5k",
                         "model": "sgt-cnn", "epochs": 2, "n_test": N, "clean_accuracy": 0.98,
                         "rob:ensemble:0.1": r1.mean(), "rob:ensemble:0.3": r3.mean(), "sweep": "nested",
                         "sgtlab_version": "0.1.0", "torch_version": "2.x", "command": "sgtlab reproduce"})
    write_results(root, rows)
    (root / "experiment.json").write_text(json.dumps({"name": "t", "dataset": "mnist5k",
                                                      "attack": {"headline_eps": [0.1, 0.3]}}))
    return rows


def verdict(verdicts, claim_start):
    return [v["verdict"] for v in verdicts if v["claim"].startswith(claim_start)]


def test_planted_difference_is_significant_and_claims_get_verdicts(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6, 0.62, 0.61], ("SGT", "sgt"): [0.4, 0.42, 0.41],
                                      ("ASGT", "asgt"): [0.61, 0.6, 0.62], ("AT-PGD", "at-pgd"): [0.6, 0.61, 0.62]})
    an = analyse(rows, tmp_path, {"attack": {"headline_eps": [0.1, 0.3]}}, n_boot=2000)
    assert an.attack == "ensemble" and an.eps == [0.1, 0.3] == headline_eps(rows, {})
    sgt_st = an.pairs[("SGT", "ST")][0]
    assert sgt_st.comparison.boot.hi < 0 and sgt_st.p_holm < 0.05 and sgt_st.direction == -1
    text = " ".join(findings(rows, an))
    assert "SGT vs ST" in text and "95 % CI [" in text and "(Holm" in text and "SGT is less robust than ST" in text
    assert "3 seed(s)" in text and f"{N} test images" in text and "clear" not in text
    v = claim_verdicts(rows, an)
    assert verdict(v, "SGT raises") == ["contradicted"] and verdict(v, "SGT lowers") == ["supported"]
    assert verdict(v, "ASGT beats SGA") == ["not measured here"]
    assert verdict(v, "ASGT beats adversarial training with the same attack") == ["not significant"]


def test_report_has_claims_headline_table_and_provenance(tmp_path):
    make_experiment(tmp_path, {("ST", "st"): [0.5, 0.5, 0.5], ("SGT", "sgt"): [0.5, 0.5, 0.5]})
    page = build_report(tmp_path, n_boot=1000).read_text()
    assert "Claims of the papers" in page and "Headline robust accuracy" in page and "Wilson" in page
    assert "torch_version: 2.x" in page and "command: sgtlab reproduce" in page
    claims = (tmp_path / "report" / "claims.md").read_text()
    assert "not significant" in claims and "not measured here" in claims
    head = (tmp_path / "report" / "tables" / "headline.csv").read_text()
    assert "ensemble eps 0.1" in head and "ensemble eps 0.3" in head


def test_mean_and_sd_over_seeds_are_the_sample_statistics(tmp_path):
    """'mean ± sd over seeds' uses the sample sd (n - 1), as `statistics.stdev` computes it: the
    population sd would shrink every spread the report prints by sqrt((n - 1) / n)."""
    import statistics

    from sgtlab.experiments.tables import mean_std

    vals = [0.91, 0.95, 0.9, 0.97]
    m, sd = mean_std(vals + [float("nan")])  # a missing seed is left out
    assert np.isclose(m, statistics.mean(vals)) and np.isclose(sd, statistics.stdev(vals))
    assert mean_std([0.5]) == (0.5, 0.0)
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6, 0.62]}, seeds=(0, 1))
    rows[0]["clean_accuracy"], rows[1]["clean_accuracy"] = 0.9, 0.8
    an = analyse(rows, tmp_path, {"attack": {"headline_eps": [0.1, 0.3]}}, n_boot=200)
    text = " ".join(findings(rows, an))
    assert f"ST 85.0 ± {100 * statistics.stdev([0.9, 0.8]):.1f} %" in text  # 7.1, not the population 5.0
