"""reporting.comparisons and reporting.text (issue 28's mutation round): statuses, texts and the
comparison of per-image tables written here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sgtlab.errors import SgtlabError
from sgtlab.experiments.store import run_dir
from sgtlab.inference import CrossedResult, ModelComparison, crossed_comparison, model_comparison
from sgtlab.reporting import comparisons as cmp
from sgtlab.reporting import text as T
from sgtlab.reporting.comparisons import Options, Result, p_text


def test_p_values_print_with_three_digits_or_as_a_bound():
    assert p_text(0.05123) == "= 0.0512"
    assert p_text(0.001) == "= 0.001"
    assert p_text(0.000999) == "< 0.001"
    assert p_text(math.nan) == "= nan"


def _crossed(diff: float, lo: float, hi: float, p: float = 0.01) -> CrossedResult:
    return CrossedResult(diff, 0.01, 4.0, lo, hi, p, 5, 100, 0.0, 0.0, 0.0, 0.031)


def _res(acc_a=0.5, acc_b=0.4, seeds=5, method=None, p_holm=math.nan, n_images=100, **kw) -> Result:
    return Result("A", "B", "pgd", 0.1, seeds=list(range(seeds)), n_images=n_images, acc_a=acc_a, acc_b=acc_b,
                  method=method, p_holm=p_holm, **kw)


def test_statuses_from_the_floor_to_a_verdict():
    assert not Result("A", "B", "pgd", 0.1).measured
    assert Result("A", "B", "pgd", 0.1).status() == "not measurable (no runs paired by seed with per-image results)"
    assert Result("A", "B", "pgd", 0.1).text() == Result("A", "B", "pgd", 0.1).status()
    floor = _res(0.02, 0.049, method=_crossed(-0.03, -0.05, -0.01), p_holm=0.001)
    assert floor.at_floor and not floor.eligible and not floor.significant and floor.direction == 0
    assert floor.status() == "at the floor (A 2.0 %, B 4.9 %): no information"
    ceiling = _res(0.96, 0.951, method=_crossed(0.01, 0.0, 0.02))
    assert ceiling.at_floor and ceiling.status() == "at the ceiling (A 96.0 %, B 95.1 %): no information"
    for a, b in ((0.05, 0.01), (0.02, 0.05), (0.95, 0.99), (0.99, 0.95)):
        assert not _res(a, b).at_floor, (a, b)
    assert not _res(0.02, 0.02, n_images=0).at_floor
    few = _res(seeds=1, method=None)
    assert few.status() == "inconclusive: 1 seed, at least 5 needed"
    assert _res(seeds=3, method=_crossed(0.1, 0.05, 0.15)).status() == "inconclusive: 3 seeds, at least 5 needed"
    sig = _res(method=_crossed(0.1, 0.05, 0.15), p_holm=0.049)
    assert sig.eligible and sig.significant and sig.direction == 1 and sig.status() == "A more robust than B"
    neg = _res(method=_crossed(-0.1, -0.15, -0.05), p_holm=0.01)
    assert neg.direction == -1 and neg.status() == "A less robust than B"
    assert not _res(method=_crossed(0.1, 0.05, 0.15), p_holm=0.05).significant
    eq = _res(method=_crossed(0.001, -0.019, 0.019, 0.9), p_holm=0.9)
    assert eq.equivalent and eq.status() == "no effect larger than 2 pp"
    wide = _res(method=_crossed(0.001, -0.02, 0.019, 0.9), p_holm=0.9)
    assert not wide.equivalent and wide.status() == "no significant difference"
    assert not _res(method=_crossed(0.001, -0.01, 0.01), p_holm=0.001).equivalent  # significant: not equivalent
    assert _res(method=_crossed(0.001, -0.01, 0.01), p_holm=0.9, opts=Options(margin=0.005)).status() == \
        "no significant difference"
    assert not _res(seeds=4, method=_crossed(0.1, 0.05, 0.15), p_holm=0.001).eligible
    assert _res(seeds=4, method=_crossed(0.1, 0.05, 0.15), p_holm=0.001, opts=Options(min_seeds=4)).significant
    assert not _res(method=None, p_holm=0.001).eligible


def test_texts_name_the_interval_the_test_and_what_it_rests_on():
    r = _res(method=_crossed(0.1234, 0.05, 0.2), p_holm=0.0004, clean_diff=0.012, correct_diff=-0.034)
    r.method = CrossedResult(0.1234, 0.01, 4.25, 0.05, 0.2, 0.02, 5, 100, 0, 0, 0, 0.031)
    assert r.text() == ("+12.3 pp, 95 % CI [+5.0, +20.0] (random-effects t over 5 seeds x 100 images, df 4.2), "
                        "p = 0.02, Holm < 0.001; minimal detectable effect 3.1 pp: A more robust than B "
                        "(clean accuracy +1.2 pp; robust -3.4 pp on the images both classify correctly)")
    r = _res(seeds=3, method=_crossed(0.1, 0.05, 0.15), models=[(0, ModelComparison(0.05, -0.01, 0.11, 0.1, 100)),
                                                                (1, ModelComparison(-0.02, -0.08, 0.04, 0.5, 100))])
    assert r.text().endswith("p = 0.01; minimal detectable effect 3.1 pp: inconclusive: 3 seeds, at least 5 needed; "
                             "trained models compared (not a method verdict): seed 0 +5.0 pp [-1.0, +11.0], "
                             "seed 1 -2.0 pp [-8.0, +4.0]")
    r = _res(seeds=1, models=[(3, ModelComparison(0.05, -0.01, 0.11, 0.1, 100))], clean_diff=0.5)
    assert r.text() == ("+5.0 pp (1 seed: no method-level test): inconclusive: 1 seed, at least 5 needed; trained "
                        "models compared (not a method verdict): seed 3 +5.0 pp [-1.0, +11.0] (clean accuracy +50.0 pp)")
    assert _res(seeds=1).text() == "+nan pp (1 seed: no method-level test): inconclusive: 1 seed, at least 5 needed"
    full = _res(method=_crossed(0.1, 0.05, 0.15), p_holm=0.01, models=[(0, ModelComparison(0.05, -0.01, 0.11, 0.1, 9))])
    assert "trained models compared" not in full.text()  # enough seeds: the method test speaks


def test_where_names_the_attack_and_eps_or_the_grid():
    assert _res().where() == "PGD at eps 0.1"
    r = Result("A", "B", "odd", None, grid=[8 / 255, 16 / 255], opts=Options(dataset="cifar10"))
    assert r.where() == "odd, mean over eps 8/255, 16/255 (area)"
    assert Result("A", "B", "fgsm", 8 / 255, opts=Options(dataset="cifar10")).where() == "FGSM at eps 8/255"


def _table(root, run: str, ids, cols: dict[str, list], clean=None):
    folder = run_dir(root, run)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(cols)
    lines = ["index,test_index,label,clean_pred," + ("clean_correct," if clean is not None else "") + ",".join(names)]
    for i, t in enumerate(ids):
        cells = [str(i), str(t), "0", "0"] + ([str(clean[i])] if clean is not None else [])
        cells += ["" if (v := cols[n][i]) is None else str(v) for n in names]
        lines.append(",".join(cells))
    (folder / "robustness_per_sample.csv").write_text("\n".join(lines) + "\n")
    return {"run": run, "seed": int(run.split("s")[-1]), "clean_accuracy": float(np.mean(clean)) if clean else 0.9}


def test_compare_pairs_runs_by_seed_and_images_by_test_id(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.arange(100, 112)
    ra, rb = [], []
    xa, xb, ca, cb = [], [], [], []
    for s in range(3):
        a, b = rng.integers(0, 2, 12), rng.integers(0, 2, 12)
        ka, kb = rng.integers(0, 2, 12), np.ones(12, int)
        perm = rng.permutation(12)  # run b lists its images in another order
        ra.append(_table(tmp_path, f"a-s{s}", ids, {"pgd@0.1": list(a)}, clean=list(ka)))
        rb.append(_table(tmp_path, f"b-s{s}", ids[perm], {"pgd@0.1": list(b[perm])}, clean=list(kb[perm])))
        xa.append(a), xb.append(b), ca.append(ka), cb.append(kb)
    rb.append(_table(tmp_path, "b-s9", ids, {"pgd@0.1": [1] * 12}))  # no partner: left out
    res = cmp.compare(tmp_path, ra[::-1], rb, "A", "B", "pgd", 0.1, Options())
    xa, xb = np.array(xa), np.array(xb)
    assert res.seeds == [0, 1, 2] and res.n_images == 12
    assert res.acc_a == pytest.approx(xa.mean()) and res.acc_b == pytest.approx(xb.mean())
    want = crossed_comparison(xa, xb)
    assert res.method.diff == pytest.approx(want.diff) and res.method.p == pytest.approx(want.p)
    assert [s for s, _ in res.models] == [0, 1, 2]
    assert res.models[1][1].diff == pytest.approx(model_comparison(xa[1], xb[1]).diff)
    assert res.clean_diff == pytest.approx(np.mean([ra[i]["clean_accuracy"] - rb[i]["clean_accuracy"] for i in range(3)]))
    both = [(np.array(ca[i]) > 0) for i in range(3)]
    want_c = np.mean([xa[i][both[i]].mean() - xb[i][both[i]].mean() for i in range(3)])
    assert res.correct_diff == pytest.approx(want_c)
    one = cmp.compare(tmp_path, ra[:1], rb, "A", "B", "pgd", 0.1, Options())
    assert one.method is None and len(one.models) == 1 and one.seeds == [0]
    assert not cmp.compare(tmp_path, ra, rb, "A", "B", "fgsm", 0.1, Options()).measured  # no such column
    assert not cmp.compare(tmp_path, ra, [], "A", "B", "pgd", 0.1, Options()).measured


def test_compare_over_the_grid_keeps_shared_images_run_on_by_every_attack(tmp_path):
    ids = np.arange(6)
    ra = [_table(tmp_path, f"a-s{s}", ids, {"pgd@0.1": [1, 1, 0, 1, None, 1], "pgd@0.2": [1, 0, 0, 1, 1, 1]})
          for s in range(2)]
    rb = [_table(tmp_path, f"b-s{s}", ids[:5], {"pgd@0.1": [0, 1, 0, 0, 1], "pgd@0.2": [0, 0, 0, 0, 1]})
          for s in range(2)]
    res = cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", None, Options(), grid=[0.1, 0.2])
    # image 5: not in b; image 4: a's pgd@0.1 did not run on it (NaN): both left out
    assert res.n_images == 4 and res.grid == [0.1, 0.2]
    assert res.acc_a == pytest.approx(np.mean([1, 0.5, 0, 1])) and res.acc_b == pytest.approx(np.mean([0, 0.5, 0, 0]))
    assert math.isnan(res.correct_diff)  # no clean_correct column
    assert not cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", None, Options(), grid=[0.1, 0.3]).measured
    assert not cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", None, Options(), grid=[]).measured
    disjoint = [_table(tmp_path, f"c-s{s}", ids + 50, {"pgd@0.1": [1] * 6}) for s in range(2)]
    assert cmp.compare(tmp_path, ra, disjoint, "A", "C", "pgd", 0.1, Options()).n_images == 0


def test_the_robust_difference_on_correct_images_needs_every_seed(tmp_path):
    ids = np.arange(4)
    ra = [_table(tmp_path, "a-s0", ids, {"pgd@0.1": [1, 0, 1, 1]}, clean=[1, 1, 0, 0]),
          _table(tmp_path, "a-s1", ids, {"pgd@0.1": [1, 1, 1, 1]}, clean=[1, 1, 1, 1])]
    rb = [_table(tmp_path, "b-s0", ids, {"pgd@0.1": [0, 0, 1, 1]}, clean=[1, 1, 1, 1]),
          _table(tmp_path, "b-s1", ids, {"pgd@0.1": [0, 1, 1, 1]})]  # no clean_correct
    assert math.isnan(cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", 0.1, Options()).correct_diff)
    rb[1] = _table(tmp_path, "b-s1", ids, {"pgd@0.1": [0, 1, 1, 1]}, clean=[0, 0, 0, 0])  # no image both correct
    assert math.isnan(cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", 0.1, Options()).correct_diff)
    rb[1] = _table(tmp_path, "b-s1", ids, {"pgd@0.1": [0, 1, 1, 1]}, clean=[1, 0, 0, 0])
    res = cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", 0.1, Options())
    assert res.correct_diff == pytest.approx(np.mean([0.5 - 0.0, 1.0 - 0.0]))


def test_holm_adjusts_only_the_comparisons_that_can_give_a_verdict():
    rs = [_res(method=_crossed(0.1, 0.05, 0.15, p=0.01)), _res(method=_crossed(0.1, 0.05, 0.15, p=0.02)),
          _res(seeds=2, method=_crossed(0.1, 0.05, 0.15, p=0.001)), _res(method=None)]
    out = cmp.apply_holm(rs)
    assert out is rs
    assert [r.p_holm for r in rs[:2]] == [pytest.approx(0.02), pytest.approx(0.02)]
    assert math.isnan(rs[2].p_holm) and math.isnan(rs[3].p_holm)


# -- reporting.text --------------------------------------------------------------------------------

def test_compare_specs_give_pairs_once():
    labels = ["ST", "SGT", "AT"]
    assert T.parse_compare(None, labels) == []
    assert T.parse_compare("ST", labels) == [("SGT", "ST"), ("AT", "ST")]
    assert T.parse_compare(["SGT:ST", ("AT", "ST"), "SGT:ST", "ST"], labels) == [("SGT", "ST"), ("AT", "ST")]
    assert T.parse_compare("SGT:AT", labels) == [("SGT", "AT")]
    with pytest.raises(SgtlabError, match="^baseline 'X' is not a label of these runs; labels: ST, SGT, AT$"):
        T.parse_compare("X", labels)
    with pytest.raises(SgtlabError, match="^--compare SGT:X: 'X' is not a label of these runs; labels: ST, SGT, AT$"):
        T.parse_compare(["SGT:X"], labels)
    with pytest.raises(SgtlabError, match="^--compare Y:ST: 'Y' is not"):
        T.parse_compare([("Y", "ST")], labels)
    assert T.parse_compare("a:b:c", ["a", "b:c"]) == [("a", "b:c")]


def test_grid_values_match_within_a_relative_tolerance():
    grid = [0.1, 0.3, 8 / 255]
    assert T._on_grid(grid, 0.30002) == 0.3
    assert T._on_grid(grid, 0.3002) is None
    assert T._on_grid(grid, 0.0313725) == 8 / 255
    assert T._on_grid([0.0], 1e-10) == 0.0 and T._on_grid([0.0], 1e-8) is None
    assert T._on_grid([], 0.1) is None


def test_labels_of_a_method_in_table_order():
    rows = [{"label": "B", "method": "sgt"}, {"label": "A", "method": "st"}, {"label": "C", "method": "sgt"},
            {"label": "B", "method": "sgt"}]
    assert T.labels_of(rows, "sgt") == ["B", "C"] and T.labels_of(rows, "at") == []


def test_the_checks_finding_names_flagged_and_skipped_checks():
    assert T.checks_finding([{"run": "a"}]) == ""
    flagged = T.checks_finding([{"run": "b", "check:grad": False, "check:sq": True},
                                {"run": "a", "check:grad": False, "check:x": None}])
    assert flagged.startswith("Gradient-masking checks flagged: a (grad), b (grad). Robust accuracies of these runs")
    skipped = T.checks_finding([{"run": "a", "check:sq": None, "check:g": True}, {"run": "b", "check:b": None}])
    assert skipped == "No gradient-masking check flagged a run, but some could not run (b, sq): see the checks table."
    assert T.checks_finding([{"run": "a", "check:g": True}]).startswith("No gradient-masking check flagged a run (the")


def test_claims_markdown_lists_each_verdict_with_its_reason():
    an = T.Analysis("pgd", [0.1, 8 / 255], "SETUP", [], {}, dataset="cifar10", opts=Options(min_seeds=4))
    md = T.claims_markdown([{"claim": "C1", "study": "S", "setting": "on X", "verdict": "supported", "why": "",
                             "measured": "M1"},
                            {"claim": "C2", "study": "S2", "setting": "on Y", "verdict": "no verdict", "why": "W",
                             "measured": "–"}], an)
    lines = md.splitlines()
    assert lines[0] == "## Claims of the studies" and lines[1] == "" and lines[3] == ""
    assert "the standard budgets (26/255, 8/255)" not in lines[2] and "standard budgets (0.1, 8/255)" in lines[2]
    assert "at least 4 seeds. Setup: SETUP." in lines[2]
    assert lines[4] == "- **C1** (S; on X): **supported**. Measured: M1"
    assert lines[5] == "- **C2** (S2; on Y): **no verdict** (W). Measured: –"
    assert md.endswith("–\n")


# -- analyse, findings and claim verdicts on experiments written here ------------------------------

from test_report_text import make_experiment  # noqa: E402

from sgtlab.reporting import claims as C  # noqa: E402
from sgtlab.reporting.summary import fmt_ms, mean_std  # noqa: E402

GRID = [0.1, 0.2, 0.25, 0.3]


def _keys(rs):
    return [(r.a, r.b, r.attack, r.eps) for r in rs]


def test_the_report_section_and_the_arguments_set_the_options_and_pairs(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6] * 4, ("SGT", "sgt"): [0.4] * 4, ("MINE", "mine"): [0.5] * 4},
                           seeds=(0, 1, 2, 3))
    cfg = {"attack": {"headline_eps": [0.1, 0.3]}, "report": {"min_seeds": 4, "margin": 3, "compare": "ST"}}
    an = T.analyse(rows, tmp_path, cfg)
    assert an.opts == Options(min_seeds=4, margin=0.03, dataset="mnist5k") and an.dataset == "mnist5k"
    assert list(an.pairs) == [("SGT", "ST"), ("MINE", "ST")]
    assert an.grid == GRID and an.eps == [0.1, 0.3] and an.attack == "ensemble"
    for (a, b), rs in an.pairs.items():
        assert _keys(rs) == [(a, b, "ensemble", 0.1), (a, b, "ensemble", 0.3), (a, b, "ensemble", None)]
        assert all(r.measured and r.grid == GRID and r.n_seeds == 4 for r in rs)
    assert rs[-1].acc_a == pytest.approx(np.mean([rs[0].acc_a] * 3 + [rs[1].acc_a]))  # the mean over the grid
    assert {id(r) for rs in an.pairs.values() for r in rs} <= {id(r) for r in an.results}
    an = T.analyse(rows, tmp_path, cfg, min_seeds=2, margin=1, compare_pairs=["MINE:SGT"])
    assert an.opts.min_seeds == 2 and an.opts.margin == 0.01
    assert list(an.pairs) == [("MINE", "SGT"), ("SGT", "ST")]  # then the claims' pair
    an = T.analyse(rows, tmp_path, {"attack": {"headline_eps": [0.1, 0.3]}})
    assert an.opts == Options(min_seeds=5, margin=0.02, dataset="mnist5k") and list(an.pairs) == [("SGT", "ST")]


def test_an_analysis_without_robustness_results_keeps_the_flags_and_options(tmp_path):
    rows = [{"run": "r0", "label": "ST", "method": "st", "seed": 0, "dataset": "mnist", "clean_accuracy": 0.05}]
    an = T.analyse(rows, tmp_path, {"report": {"min_seeds": 3}})
    assert an == T.Analysis(None, [], "", [], {}, flagged=an.flagged, opts=Options(3, 0.02, "mnist"), dataset="mnist")
    assert list(an.flagged) == ["r0"] and an.flagged["r0"]
    assert T.findings(rows, an) == ["No robustness results yet."]
    empty = T.analyse([], tmp_path, {})
    assert empty.attack is None and empty.opts.dataset is None


def test_a_single_run_and_a_label_whose_runs_are_all_flagged(tmp_path):
    one = make_experiment(tmp_path / "one", {("ST", "st"): [0.6]}, seeds=(0,))
    an = T.analyse(one, tmp_path / "one", {})
    assert an.attack == "ensemble" and an.opts.dataset == "mnist5k" and an.pairs == {}
    rows = make_experiment(tmp_path / "two", {("ST", "st"): [0.6] * 2, ("SGT", "sgt"): [0.4] * 2}, seeds=(0, 1),
                           clean={"ST": 0.05})
    an = T.analyse(rows, tmp_path / "two", {})
    assert sorted(an.flagged) == ["st-seed0", "st-seed1"]
    assert not any(r.measured for r in an.pairs[("SGT", "ST")])  # ST has no runs left to compare


def test_flags_need_the_folder_for_the_classes_of_unknown_data(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.3] * 2, ("SGT", "sgt"): [0.3] * 2}, seeds=(0, 1),
                           dataset="mydata", clean={"ST": 0.45, "SGT": 0.46})
    an = T.analyse(rows, tmp_path, {})
    assert sorted(an.flagged) == ["sgt-seed0", "sgt-seed1", "st-seed0", "st-seed1"]  # 2 classes: at chance


def test_a_claim_is_tested_at_its_own_attacks_then_the_standard_budgets_and_the_grid(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6] * 3, ("SGT", "sgt"): [0.4] * 3},
                           attacks=("ensemble", "fgsm", "pgd", "mifgsm"))
    an = T.analyse(rows, tmp_path, {"attack": {"headline_eps": [0.1, 0.3]}})
    raises = next(t for t in an.claims if t.claim.text.startswith("SGT raises") and "MNIST" in t.claim.families)
    assert (raises.a, raises.b, raises.missing) == ("SGT", "ST", "")
    assert _keys(raises.primary) == [("SGT", "ST", "fgsm", 0.25)]
    assert _keys(raises.secondary) == [("SGT", "ST", "pgd", 0.25), ("SGT", "ST", "mifgsm", 0.25),
                                       ("SGT", "ST", "ensemble", 0.1), ("SGT", "ST", "ensemble", 0.3),
                                       ("SGT", "ST", "ensemble", None)]
    lowers = next(t for t in an.claims if t.claim.text.startswith("SGT lowers"))
    assert _keys(lowers.primary) == [("SGT", "ST", "ensemble", 0.1), ("SGT", "ST", "ensemble", 0.3)]
    assert _keys(lowers.secondary) == [("SGT", "ST", "ensemble", None)]
    assert all(r.measured for r in raises.primary + raises.secondary + lowers.primary + lowers.secondary)
    # fgsm not run: the headline attack at that eps; not on the grid at all: said what to add
    rows = make_experiment(tmp_path / "b", {("ST", "st"): [0.6] * 3, ("SGT", "sgt"): [0.4] * 3}, eps=(0.1, 0.3))
    an = T.analyse(rows, tmp_path / "b", {})
    raises = next(t for t in an.claims if t.claim.text.startswith("SGT raises") and "MNIST" in t.claim.families)
    assert raises.primary == [] and raises.missing == "FGSM eps 0.25"
    rows = make_experiment(tmp_path / "c", {("ST", "st"): [0.6] * 3, ("SGT", "sgt"): [0.4] * 3}, eps=(0.1, 0.25, 0.3))
    an = T.analyse(rows, tmp_path / "c", {})
    raises = next(t for t in an.claims if t.claim.text.startswith("SGT raises") and "MNIST" in t.claim.families)
    assert _keys(raises.primary) == [("SGT", "ST", "ensemble", 0.25)] and raises.missing == ""


def test_findings_state_the_setup_each_pair_the_clean_accuracy_flags_and_checks(tmp_path):
    clean = {"ST": 0.98, "SGT": 0.97}
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6] * 5, ("SGT", "sgt"): [0.4] * 5}, seeds=(0, 1, 2, 3, 4),
                           clean=clean)
    rows[0]["check:grad"] = False
    rows[1]["clean_accuracy"] = 0.96  # sd over seeds
    an = T.analyse(rows, tmp_path, {"attack": {"headline_eps": [0.1, 0.3]}})
    an.flagged = {"x-seed9": "why"}  # as the flags would say
    out = T.findings(rows, an)
    n = sum(r.eligible for r in an.results)
    assert n > 1
    assert out[0] == (f"Setup of every comparison below: {an.setup}. Differences are in percentage points (pp) of robust "
                      f"accuracy, paired by seed and test image. The replicate is the training seed: each method-level "
                      f"interval is a random-effects t interval over seeds, carrying the noise of the test set that every "
                      f"seed shares (sgtlab.inference; calibrated by simulation: scripts/calibrate_verdicts.py). A verdict "
                      f"needs at least 5 seeds and neither method at the floor; p is Holm-corrected over the {n} such "
                      f"comparisons of this report. An interval inside +-2 pp says there is no larger effect.")
    rs = an.pairs[("SGT", "ST")]
    assert out[1] == "SGT vs ST. " + "; ".join(f"{r.where()}: {r.text()}" for r in rs) + "."
    st = mean_std([r["clean_accuracy"] for r in rows if r["label"] == "ST"])
    sgt = mean_std([r["clean_accuracy"] for r in rows if r["label"] == "SGT"])
    assert out[2] == f"Clean accuracy (mean ± sd over seeds): ST {fmt_ms(*st, percent=True)} %; SGT {fmt_ms(*sgt, percent=True)} %."
    assert out[3] == "Left out of every comparison as under-trained: x-seed9 (why)."
    assert out[4] == T.checks_finding(rows) and out[4].startswith("Gradient-masking checks flagged: st-seed0 (grad).")
    assert len(out) == 5
    an.flagged = {"a": "w1", "b": "w2"}
    assert T.findings(rows, an)[3] == "Left out of every comparison as under-trained: a (w1); b (w2)."
    for r in an.results:
        r.p_holm = math.nan
    one = [r for r in an.results if r.eligible][0]
    an.results = [one]
    assert "p is Holm-corrected over the 1 such comparison of this report. " in T.findings(rows, an)[0]
    an.results = []
    assert ("at the floor; no comparison of this report has that, so none gives a verdict. An interval"
            in T.findings(rows, an)[0])
    an.opts = Options(margin=0.035)
    assert T.findings(rows, an)[0].endswith("An interval inside +-3.5 pp says there is no larger effect.")
    del rows[0]["check:grad"]
    assert len(T.findings(rows, an)) == 4  # no checks: no empty line


def test_checks_findings_in_full():
    assert T.checks_finding([{"run": "a", "check:g": False}]) == (
        "Gradient-masking checks flagged: a (g). Robust accuracies of these runs may be overestimated; see the checks "
        "table (a check flags only a difference larger than its images can show: the 95 % binomial half-width it prints).")
    assert T.checks_finding([{"run": "a", "check:g": True}]) == (
        "No gradient-masking check flagged a run (the gradient-free Square attack included): the attacks behave as "
        "expected on every run.")


def test_a_baseline_compares_every_other_label_and_later_items_count_too():
    assert T.parse_compare(["A:B", "C"], ["A", "B", "C"]) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert T.parse_compare(["C", "A:B"], ["A", "B", "C"]) == [("A", "C"), ("B", "C"), ("A", "B")]


def test_claim_verdicts_say_where_a_claim_was_made_and_what_was_not_measured(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6] * 3, ("SGT", "sgt"): [0.4] * 3}, dataset="cifar100")
    an = T.analyse(rows, tmp_path, {})
    v = T.claim_verdicts(rows, an)
    asgt = [x for x in v if x["claim"] == "ASGT is more robust than SGT"]
    assert asgt == [{"study": "Guesmi et al. 2024", "claim": "ASGT is more robust than SGT", "setting": "MNIST, PGD eps 0.2",
                     "measured": "–", "verdict": "no verdict", "why": "made on MNIST; this experiment is on cifar100"}]
    lowers = [x for x in v if x["claim"].startswith("SGT lowers")]
    assert len(lowers) == 1 and lowers[0]["measured"].startswith("SGT minus ST. Primary: ")
    assert "made on MNIST / CIFAR-10" not in str(v)  # the claim also made on CIFAR-100 gets its verdict there
    raises = [x for x in v if x["claim"] == "SGT raises robust accuracy over ST"]
    assert [x["why"] for x in raises] == ["made on MNIST; this experiment is on cifar100",
                                          "made on CIFAR-10; this experiment is on cifar100"]
    sal = [x for x in v if x["setting"] == "saliency-map quality"]
    assert sal == [{"study": s, "claim": t, "setting": "saliency-map quality", "measured": "–",
                    "verdict": "not measured here", "why": "a saliency-quality claim: see the saliency sections of this report"}
                   for s, t in C.SALIENCY_CLAIMS]
    rows = make_experiment(tmp_path / "m", {("ST", "st"): [0.6] * 3, ("SGT", "sgt"): [0.4] * 3}, eps=(0.1, 0.3))
    an = T.analyse(rows, tmp_path / "m", {})
    v = T.claim_verdicts(rows, an)
    at = [x for x in v if x["claim"] == "ASGT is more robust than AT-PGD, the same training attack without the saliency term"]
    assert [(x["measured"], x["verdict"], x["why"]) for x in at] == [("–", "not measured here",
                                                                      "no ASGT, AT-PGD runs in this experiment")]
    fgsm = [x for x in v if x["claim"] == "AT-FGSM is weaker than SGT"][0]
    assert fgsm["why"] == "no AT-FGSM runs in this experiment"
    raises = [x for x in v if x["claim"] == "SGT raises robust accuracy over ST" and x["setting"].startswith("MNIST")][0]
    t = next(t for t in an.claims if t.claim.text.startswith("SGT raises") and "MNIST" in t.claim.families)
    assert raises["measured"] == ("SGT minus ST. Primary: none on this grid. Secondary: "
                                  + "; ".join(f"{r.where()}: {r.text()}" for r in t.secondary))
    assert raises["why"].endswith("not on the eps grid: FGSM eps 0.25 (add it with --set attack.eps=...)")
    assert "; not on the eps grid" in raises["why"] or raises["why"].startswith("not on the eps grid")
    lowers = [x for x in v if x["claim"].startswith("SGT lowers")][0]
    t = next(t for t in an.claims if t.claim.text.startswith("SGT lowers"))
    assert lowers["measured"] == ("SGT minus ST. Primary: " + "; ".join(f"{r.where()}: {r.text()}" for r in t.primary)
                                  + ". Secondary: " + "; ".join(f"{r.where()}: {r.text()}" for r in t.secondary))
    norob = [{**r, **{k: None for k in r if k.startswith("rob:")}} for r in rows]
    norob = [{k: val for k, val in r.items() if not k.startswith("rob:")} for r in norob]
    an = T.analyse(norob, tmp_path / "m", {})
    v = T.claim_verdicts(norob, an)
    assert [x["why"] for x in v if x["claim"].startswith("SGT lowers")] == ["no robustness runs in this experiment"]


def test_texts_scale_every_difference_to_percentage_points():
    r = _res(seeds=3, method=CrossedResult(0.1, 0.01, 4.0, 0.05, 0.15, 0.01, 3, 100, 0, 0, 0, 0.5), correct_diff=-0.5)
    assert "minimal detectable effect 50.0 pp" in r.text() and "(robust -50.0 pp on the images both" in r.text()


def test_a_text_without_model_comparisons_warns_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _res(seeds=1).text().startswith("+nan pp (1 seed")


def test_tables_without_test_ids_pair_by_their_index(tmp_path):
    def plain(run, outcome, clean):
        folder = run_dir(tmp_path, run)
        folder.mkdir(parents=True)
        lines = ["index,label,clean_pred,clean_correct,pgd@0.1"] + [f"{i},0,0,{c},{o}" for i, (o, c) in
                                                                     enumerate(zip(outcome, clean))]
        (folder / "robustness_per_sample.csv").write_text("\n".join(lines) + "\n")
        return {"run": run, "seed": int(run[-1]), "clean_accuracy": 0.9}

    ra = [plain("a-s0", [1, 0, 1], [1, 1, 0]), plain("a-s1", [1, 1, 1], [1, 1, 1])]
    rb = [plain("b-s0", [0, 0, 1], [1, 1, 1]), plain("b-s1", [0, 1, 1], [1, 0, 1])]
    res = cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", 0.1, Options())
    assert res.n_images == 3 and res.correct_diff == pytest.approx(np.mean([0.5, 0.5]))


def test_a_seed_without_outcomes_on_one_side_is_left_out(tmp_path):
    ids = np.arange(4)
    ra = [_table(tmp_path, f"a-s{s}", ids, {"pgd@0.1": [1, 0, 1, 1]}) for s in range(3)]
    rb = [_table(tmp_path, "b-s0", ids, {"pgd@0.1": [0, 0, 1, 1]}), _table(tmp_path, "b-s1", ids, {"fgsm@0.1": [0] * 4}),
          _table(tmp_path, "b-s2", ids, {"pgd@0.1": [1, 0, 0, 1]})]
    res = cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", 0.1, Options())
    assert res.seeds == [0, 2] and res.n_images == 4


def test_images_an_attack_of_either_side_did_not_run_on_are_left_out(tmp_path):
    ids = np.arange(4)
    ra = [_table(tmp_path, f"a-s{s}", ids, {"pgd@0.1": [1, 0, 1, 1]}) for s in range(2)]
    rb = [_table(tmp_path, "b-s0", ids, {"pgd@0.1": [0, None, 1, 1]}), _table(tmp_path, "b-s1", ids, {"pgd@0.1": [1] * 4})]
    res = cmp.compare(tmp_path, ra, rb, "A", "B", "pgd", 0.1, Options())
    assert res.n_images == 3 and res.acc_b == pytest.approx(np.mean([0, 1, 1, 1, 1, 1]))


def test_trained_models_are_compared_from_two_shared_images_on(tmp_path):
    for n, models in ((1, 0), (2, 2)):
        ids = np.arange(n)
        ra = [_table(tmp_path / str(n), f"a-s{s}", ids, {"pgd@0.1": [1] * n}) for s in range(2)]
        rb = [_table(tmp_path / str(n), f"b-s{s}", ids, {"pgd@0.1": [0] * n}) for s in range(2)]
        res = cmp.compare(tmp_path / str(n), ra, rb, "A", "B", "pgd", 0.1, Options())
        assert res.n_images == n and len(res.models) == models


def test_a_claim_made_on_several_families_lists_them_all(tmp_path):
    rows = make_experiment(tmp_path, {("ST", "st"): [0.6] * 3, ("SGT", "sgt"): [0.4] * 3}, dataset="svhn")
    v = T.claim_verdicts(rows, T.analyse(rows, tmp_path, {}))
    lowers = [x for x in v if x["claim"].startswith("SGT lowers")]
    assert [(x["verdict"], x["why"]) for x in lowers] == [
        ("no verdict", "made on MNIST / CIFAR-10 / CIFAR-100 / Caltech-101; this experiment is on svhn")]
