"""The report's words follow the statistics: a planted difference is called significant with its
direction, interval and Holm-corrected p; no difference is called not significant; the papers'
claims get verdicts (supported / contradicted / not significant / not measured here)."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from sgtlab.errors import SgtlabError
from sgtlab.experiments.store import run_dir, write_results
from sgtlab.reporting import build_report
from sgtlab.reporting.data import headline_eps
from sgtlab.reporting.text import analyse, claim_verdicts, findings

N = 400
EPS = (0.1, 0.2, 0.25, 0.3)


def make_experiment(root, accs: dict[tuple[str, str], list[float]], seeds=(0, 1, 2), eps=EPS, dataset="mnist5k",
                    clean=None, attacks=("ensemble",), final_loss=None):
    """Runs with per-image outcomes drawn at the given robust accuracy per seed (at every eps; the
    largest eps at half of it), on the same N test images; `clean`: label -> clean accuracy."""
    rows = []
    ids = np.random.default_rng(99).permutation(1000)[:N]
    cols = [f"{a}@{e:g}" for a in attacks for e in eps]
    for (label, method), per_seed in accs.items():
        for s, acc in zip(seeds, per_seed):
            run = f"{label.lower()}-seed{s}"
            rng = np.random.default_rng(zlib.crc32(f"{label}{s}".encode()))
            r = (rng.random(N) < acc).astype(int)
            half = r * (rng.random(N) < 0.5)
            per_eps = {e: (half if e == max(eps) else r) for e in eps}
            folder = run_dir(root, run)
            folder.mkdir(parents=True)
            lines = ["index,test_index,label,clean_pred,clean_correct," + ",".join(cols)]
            lines += [f"{i},{ids[i]},1,1,1," + ",".join(str(per_eps[float(c.split('@')[1])][i]) for c in cols)
                      for i in range(N)]
            (folder / "robustness_per_sample.csv").write_text("\n".join(lines) + "\n")
            (folder / "robustness.json").write_text(json.dumps({"n": N, "attacks_run": {"pgd": "PGD(steps=10)"}}))
            row = {"run": run, "label": label, "method": method, "seed": s, "dataset": dataset,
                   "model": "sgt-cnn", "epochs": 2, "n_test": N,
                   "clean_accuracy": (clean or {}).get(label, 0.98), "sweep": "nested",
                   "sgtlab_version": "0.1.0", "torch_version": "2.x", "command": "sgtlab reproduce",
                   **{f"rob:{c.split('@')[0]}:{c.split('@')[1]}": per_eps[float(c.split('@')[1])].mean() for c in cols}}
            if final_loss:
                row["final_loss"], row["num_classes"] = final_loss.get(label, 0.1), 10
            rows.append(row)
    write_results(root, rows)
    (root / "experiment.json").write_text(json.dumps({"name": "t", "dataset": dataset,
                                                      "attack": {"headline_eps": [0.1, 0.3]}}))
    return rows


CFG = {"attack": {"headline_eps": [0.1, 0.3]}}


def verdict(verdicts, claim_start):
    return [v["verdict"] for v in verdicts if v["claim"].startswith(claim_start)]


def test_planted_difference_is_significant_and_claims_get_verdicts(tmp_path):
    seeds = (0, 1, 2, 3, 4)
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6, 0.62, 0.61, 0.6, 0.63],
                                      ("SGT", "sgt"): [0.4, 0.42, 0.41, 0.43, 0.4],
                                      ("ASGT", "asgt"): [0.61, 0.6, 0.62, 0.6, 0.61],
                                      ("AT-PGD", "at-pgd"): [0.6, 0.61, 0.62, 0.61, 0.6]}, seeds=seeds)
    an = analyse(rows, tmp_path, CFG)
    assert an.attack == "ensemble" and an.eps == [0.1, 0.3] == headline_eps(rows, {})
    sgt_st = an.pairs[("SGT", "ST")][0]
    assert sgt_st.method.hi < 0 and sgt_st.p_holm < 0.05 and sgt_st.direction == -1 and sgt_st.n_seeds == 5
    text = " ".join(findings(rows, an))
    assert "SGT vs ST" in text and "95 % CI [" in text and "Holm" in text and "SGT less robust than ST" in text
    assert "5 seed(s)" in text and f"{N} test images" in text and "minimal detectable effect" in text
    v = claim_verdicts(rows, an)
    assert verdict(v, "SGT raises") == ["contradicted"] and verdict(v, "SGT lowers") == ["supported"]
    assert verdict(v, "ASGT is more robust than SGA") == ["not measured here"]
    assert verdict(v, "ASGT is more robust than AT-PGD")[0] in ("inconclusive", "no effect")


def test_two_seeds_give_no_method_verdict_but_per_model_comparisons(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6, 0.62], ("SGT", "sgt"): [0.3, 0.32]}, seeds=(0, 1))
    an = analyse(rows, tmp_path, CFG)
    v = claim_verdicts(rows, an)
    assert all(x.startswith("inconclusive: 2 seeds, at least 5 needed") for x in verdict(v, "SGT raises") + verdict(v, "SGT lowers"))
    measured = next(x["measured"] for x in v if x["claim"].startswith("SGT raises"))
    assert "trained models compared (not a method verdict): seed 0" in measured and "seed 1" in measured
    assert "minimal detectable effect" in measured
    assert not any(r.significant for r in an.results) and all(np.isnan(r.p_holm) for r in an.results)
    # the same data with min_seeds 2 (an option): now a method-level test counts
    an2 = analyse(rows, tmp_path, CFG, min_seeds=2)
    assert any(r.eligible for r in an2.results)


def test_primary_budget_is_used_when_on_the_grid_and_said_when_not(tmp_path):
    seeds = (0, 1, 2, 3, 4)
    rows = make_experiment(tmp_path, {("ST", "st"): [0.3] * 5, ("SGT", "sgt"): [0.5] * 5}, seeds=seeds,
                           attacks=("fgsm", "pgd", "ensemble"))
    an = analyse(rows, tmp_path, CFG)
    t = next(t for t in an.claims if t.claim.text.startswith("SGT raises"))
    assert [(r.attack, r.eps) for r in t.primary] == [("fgsm", 0.25)]
    assert ("pgd", 0.25) in [(r.attack, r.eps) for r in t.secondary]
    assert ("ensemble", None) in [(r.attack, r.eps) for r in t.secondary]  # the grid mean
    assert verdict(claim_verdicts(rows, an), "SGT raises") == ["supported"]
    # a grid without 0.25 and 0.2: the claim's budget is named as missing, no verdict from elsewhere
    other = tmp_path / "other"
    rows = make_experiment(other, {("ST", "st"): [0.3] * 5, ("SGT", "sgt"): [0.5] * 5}, seeds=seeds,
                           eps=(0.1, 0.3), attacks=("fgsm", "ensemble"))
    an = analyse(rows, other, CFG)
    v = next(x for x in claim_verdicts(rows, an) if x["claim"].startswith("SGT raises"))
    assert v["verdict"] == "inconclusive" and "not on the eps grid: FGSM eps 0.25" in v["why"]


def test_run_at_chance_is_flagged_and_left_out_of_verdicts(tmp_path):
    seeds = (0, 1, 2, 3, 4)
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6, 0.62, 0.61, 0.6, 0.63],
                                      ("ASGT", "asgt"): [0.0] * 5, ("SGT", "sgt"): [0.61, 0.6, 0.62, 0.6, 0.6]},
                           seeds=seeds, clean={"ASGT": 0.08}, final_loss={"ASGT": 2.3})
    an = analyse(rows, tmp_path, CFG)
    assert set(an.flagged) == {f"asgt-seed{s}" for s in seeds}
    assert "at or below chance" in an.flagged["asgt-seed0"] and "within 10 % of ln 10" in an.flagged["asgt-seed0"]
    asgt = [r for r in an.results if "ASGT" in (r.a, r.b)]
    assert asgt and all(not r.measured and not r.eligible for r in asgt)
    v = claim_verdicts(rows, an)
    assert verdict(v, "ASGT is more robust than ST") == ["not measured here"]
    assert "Left out of every comparison as under-trained: asgt-seed0" in " ".join(findings(rows, an))


def test_no_mnist_claim_gets_a_verdict_on_other_data(tmp_path):
    seeds = (0, 1, 2, 3, 4)
    accs = {("ST", "st"): [0.3] * 5, ("SGT", "sgt"): [0.6] * 5, ("ASGT", "asgt"): [0.6] * 5}
    for name, dataset in (("cifar", "npz:/data/own_cifar_shaped.npz"), ("four", "folder:/data/4classes,size=32")):
        rows = make_experiment(tmp_path / name, accs, seeds=seeds, dataset=dataset)
        v = claim_verdicts(rows, analyse(rows, tmp_path / name, CFG))
        mnist = [x for x in v if x["setting"].startswith("MNIST")]
        assert mnist and all(x["verdict"] == "no verdict" for x in mnist)
        assert all("this experiment is on " + dataset in x["why"] for x in mnist)
        assert not any(x["verdict"] in ("supported", "contradicted") for x in v)
    rows = make_experiment(tmp_path / "c10", accs, seeds=seeds, dataset="cifar10")
    v = claim_verdicts(rows, analyse(rows, tmp_path / "c10", CFG))
    assert verdict(v, "SGT raises") == ["inconclusive"]  # CIFAR-10's claim: FGSM 0.025 is not on this grid
    assert [x["verdict"] for x in v if x["claim"].startswith("ASGT is more robust than SGA")] == ["no verdict"]


def test_user_comparisons_by_pair_or_baseline(tmp_path):
    rows = make_experiment(tmp_path, {("mine", "my-loss"): [0.5] * 5, ("theirs", "st"): [0.3] * 5,
                                      ("other", "my-other"): [0.3] * 5}, seeds=(0, 1, 2, 3, 4))
    an = analyse(rows, tmp_path, CFG, compare_pairs=["mine:theirs"])
    assert list(an.pairs) == [("mine", "theirs")] and an.pairs[("mine", "theirs")][0].direction == 1
    an = analyse(rows, tmp_path, CFG, compare_pairs="theirs")
    assert set(an.pairs) == {("mine", "theirs"), ("other", "theirs")}
    with pytest.raises(SgtlabError, match="not a label"):
        analyse(rows, tmp_path, CFG, compare_pairs=["mine:nobody"])


def test_report_has_claims_headline_table_and_provenance(tmp_path):
    make_experiment(tmp_path, {("ST", "st"): [0.5, 0.5, 0.5], ("SGT", "sgt"): [0.5, 0.5, 0.5]})
    page = build_report(tmp_path).read_text()
    assert "Claims of the studies" in page and "Headline robust accuracy" in page and "Wilson" in page
    assert "torch_version: 2.x" in page and "command: sgtlab reproduce" in page
    claims = (tmp_path / "report" / "claims.md").read_text()
    assert "inconclusive: 3 seeds, at least 5 needed" in claims and "not measured here" in claims
    head = (tmp_path / "report" / "tables" / "headline.csv").read_text()
    assert "ensemble eps 0.1" in head and "ensemble eps 0.3" in head


def test_mean_and_sd_over_seeds_are_the_sample_statistics(tmp_path):
    """'mean ± sd over seeds' uses the sample sd (n - 1), as `statistics.stdev` computes it: the
    population sd would shrink every spread the report prints by sqrt((n - 1) / n)."""
    import statistics

    from sgtlab.reporting.summary import mean_std

    vals = [0.91, 0.95, 0.9, 0.97]
    m, sd = mean_std(vals + [float("nan")])  # a missing seed is left out
    assert np.isclose(m, statistics.mean(vals)) and np.isclose(sd, statistics.stdev(vals))
    assert mean_std([0.5]) == (0.5, 0.0)
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6, 0.62]}, seeds=(0, 1))
    rows[0]["clean_accuracy"], rows[1]["clean_accuracy"] = 0.9, 0.8
    an = analyse(rows, tmp_path, CFG)
    text = " ".join(findings(rows, an))
    assert f"ST 85.0 ± {100 * statistics.stdev([0.9, 0.8]):.1f} %" in text  # 7.1, not the population 5.0


def test_publish_writes_the_page_figures_results_and_provenance_only(tmp_path):
    from sgtlab.cli import main

    root = tmp_path / "exp"
    make_experiment(root, {("ST", "st"): [0.5] * 5, ("SGT", "sgt"): [0.7] * 5}, seeds=(0, 1, 2, 3, 4))
    (root / "runs" / "st-seed0" / "checkpoint.safetensors").write_bytes(b"weights")
    dest = tmp_path / "docs" / "results" / "t"
    assert main(["report", str(root), "--publish", str(dest)]) == 0
    page = (dest / "README.md").read_text()
    assert "sgtlab reproduce --preset t" in page and f"sgtlab report results/t --publish docs/results/t" in page
    assert "## Claims of the studies" in page and "SGT raises robust accuracy over ST" in page
    assert "## Headline robust accuracy" in page and "## Per run" in page and "torch_version: 2.x" in page
    assert (dest / "results.csv").read_bytes() == (root / "results.csv").read_bytes()
    pngs = sorted(p.name for p in (dest / "figures").iterdir())
    assert "robust_accuracy.png" in pngs and all(n.endswith(".png") for n in pngs)
    assert all(f"figures/{n}" in page for n in pngs)
    assert not list(dest.rglob("*.safetensors")) and not list(dest.rglob("*per_sample*"))
    assert main(["report", str(root), "--publish", str(root / "runs" / "here")]) == 2  # one line, nothing written
    assert not (root / "runs" / "here").exists()


def test_preset_report_section_is_validated_and_reaches_the_report():
    from sgtlab.experiments.checks import check_experiment
    from sgtlab.experiments.presets import apply_overrides, load_preset

    ok = apply_overrides(load_preset("quick"), ["report.compare=[AT-PGD:ST]", "report.min_seeds=3"])
    check_experiment(ok)  # labels of the preset, an integer >= 2
    for bad, msg in (("report.compare=[ST:nobody]", "'nobody' is not a method label"),
                     ("report.min_seeds=1", "min_seeds"), ("report.margin=0", "margin"),
                     ("report.nope=1", "unknown report options")):
        with pytest.raises(SgtlabError, match=msg):
            check_experiment(apply_overrides(load_preset("quick"), [bad]))


def test_a_running_experiment_is_refused_with_the_way_to_report_its_finished_runs(tmp_path, capsys):
    """While `reproduce` holds the experiment folder, `sgtlab report FOLDER` (which writes
    FOLDER/report) is refused with one line that says how to look at the runs finished so far;
    `--out DIR` reports them without touching the folder (a run still training has no result)."""
    from sgtlab.cli import main
    from sgtlab.io import folder_lock

    root = tmp_path / "exp"
    make_experiment(root, {("ST", "st"): [0.5, 0.5, 0.5], ("SGT", "sgt"): [0.7, 0.7, 0.7]})
    (root / "runs" / "st-seed9").mkdir()  # a run still training: its folder, no result yet
    with folder_lock(root, "experiment folder"):
        assert main(["report", str(root)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is in use by another sgtlab command" in err
        assert f"report the runs finished so far into another folder: sgtlab report {root} --out DIR" in err
        assert not (root / "report").exists()
        assert main(["report", str(root), "--out", str(tmp_path / "preview")]) == 0
    per_run = (tmp_path / "preview" / "tables" / "per_run.csv").read_text()
    assert "st-seed0" in per_run and "sgt-seed2" in per_run and "st-seed9" not in per_run
    assert not (root / "report").exists()
