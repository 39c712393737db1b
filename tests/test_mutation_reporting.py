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
