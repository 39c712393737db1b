"""The headline suite (`sgtlab.evaluate.headline_suite`): at each headline eps every image gets the
same attacks, the expensive ones only where no cheaper attack has fooled the image (which changes no
image's outcome), and the gradient-masking checks run on a class-stratified subset without touching
the headline.

`Lottery` (zero gradient; class 1 iff pixel 0 exceeds 0.75) makes the outcomes exact: at eps 0.3 an
image at 0.5 is fooled by a PGD run only through its random start (1 in 12), by Square surely (it
tries both signs of the whole 2 x 2 image), and an image at 0.4 by nothing (0.7 < 0.75)."""
from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sgtlab.attacks import PGD
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.headline_suite import check_suite, headline_suite, suite_eps
from sgtlab.evaluate.robustness import robustness_sweep
from test_science_attacks import Lottery

pytest.importorskip("pyautoattack")

NULL = {"null": PGD(steps=1, alpha=1e-6, random_start=False)}  # fools nothing on Lottery (zero gradient)


def _lottery_images(n_half: int = 60):
    """n_half images at 0.5 (foolable), n_half at 0.4 (not), 4 at 0.9 (misclassified clean), shuffled."""
    values = torch.tensor([0.5] * n_half + [0.4] * n_half + [0.9] * 4)
    values = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(1))]
    x = values.reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    return x, torch.zeros(len(values), dtype=torch.long), values


def test_skipping_fooled_images_changes_no_images_outcome():
    """The suite on the images the sweep left robust vs the suite on every image (a sweep that fools
    nothing): per image the restarts' outcome is the same wherever both ran (each image's random
    starts are drawn for the whole set), and the headline (the sweep's PGD and the suite) is the
    same for every image."""
    x, y, values = _lottery_images()
    eps = [0.1, 0.3]
    kw = dict(restarts=4, square_queries=40, seed=5)
    skip = robustness_sweep(Lottery(), (x, y), ["pgd", "ensemble"], eps, progress=False, seed=5)
    fooled_by_pgd = ~skip.robust("pgd", 0.3) & (values == 0.5)
    assert 0 < int(fooled_by_pgd.sum()) < 30  # the sweep's start fooled some (1 in 12), not most
    headline_suite(Lottery(), (x, y), skip, eps, **kw)
    every = robustness_sweep(Lottery(), (x, y), NULL, eps, progress=False, seed=5)
    headline_suite(Lottery(), (x, y), every, eps, **kw)

    for e in eps:
        ran_skip = skip.folded_ran[f"suite:pgd-restarts@{e:g}"]
        ran_all = every.folded_ran[f"suite:pgd-restarts@{e:g}"]
        assert ran_all.tolist() == (values != 0.9).tolist()  # every clean-correct image
        assert (ran_skip == (skip.robust("pgd", e) & (values != 0.9))).all()  # not what PGD fooled
        r_skip = skip.folded[f"suite:pgd-restarts@{e:g}"][1]
        r_all = every.folded[f"suite:pgd-restarts@{e:g}"][1]
        assert (r_skip[ran_skip] == r_all[ran_skip]).all()  # same starts, same outcome
        # the headline: the sweep's PGD and the suite, per image, whether or not fooled images were skipped
        expected = skip.robust("pgd", e) & every.robust("ensemble", e)
        assert skip.robust("ensemble", e).tolist() == expected.tolist()
    # at 0.3 every 0.5-image falls (Square, if no start did), no 0.4-image does; at 0.1 nothing can
    assert skip.robust("ensemble", 0.3).tolist() == (values == 0.4).tolist()
    assert skip.robust("ensemble", 0.1).tolist() == (values != 0.9).tolist()
    assert skip.folded_ran["suite:square@0.3"].sum() < every.folded_ran["suite:square@0.3"].sum()


def test_the_table_says_on_how_many_images_each_attack_and_suite_member_ran():
    """`RobustnessResult.table` (what `sgtlab attack` prints) ends with the images each attack ran
    on per eps: the sweep's nested counts and the suite's members at their budgets ("-" elsewhere)."""
    x, y, values = _lottery_images()
    eps = [0.1, 0.2, 0.3]
    res = robustness_sweep(Lottery(), (x, y), ["pgd"], eps, progress=False, seed=5)
    summary = headline_suite(Lottery(), (x, y), res, [0.1, 0.3], restarts=1, square_queries=20, seed=5)
    counts = res.images_attacked()
    assert counts["pgd"] == res.info["images_attacked"]["pgd"]
    assert counts["pgd"]["0.1"] == int((values != 0.9).sum())  # every clean-correct image at the first eps
    for member in ("pgd-restarts", "square"):
        assert counts[f"suite:{member}"] == {e: summary["images"][e][member] for e in ("0.1", "0.3")}
    lines = res.table().splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("images attacked"))
    rows = {line.split()[0]: line.split()[1:] for line in lines[at + 1:]}
    assert lines[at].split()[2:] == ["0.1", "0.2", "0.3"]
    assert rows["pgd"] == [str(counts["pgd"][f"{e:g}"]) for e in eps]
    assert rows["suite:square"] == [str(counts["suite:square"]["0.1"]), "-", str(counts["suite:square"]["0.3"])]
    assert int(rows["suite:square"][2]) < int(rows["suite:square"][0])  # fewer left robust at the larger budget
    bare = robustness_sweep(Lottery(), (x, y), ["pgd"], eps, progress=False, seed=5)
    bare.info.pop("images_attacked")
    assert "images attacked" not in bare.table()  # results stored before the counts: the table as it was


def test_skipping_changes_no_outcome_on_a_trained_model(trained_model, mnist5k_test):
    """The same comparison on the small trained CNN, PGD restarts only (Square's reference code draws
    its random stripes for a batch at once, so its per-image result depends on the batch, as with
    any batch size): each image where both ran gets the same verdict, and the headline is the same."""
    data = (mnist5k_test.x[:96], mnist5k_test.y[:96])
    skip = robustness_sweep(trained_model, data, ["fgsm", "pgd"], [0.1, 0.3], progress=False)
    headline_suite(trained_model, data, skip, [0.1, 0.3], restarts=2, square_queries=0)
    every = robustness_sweep(trained_model, data, NULL, [0.1, 0.3], progress=False)
    headline_suite(trained_model, data, every, [0.1, 0.3], restarts=2, square_queries=0)
    for e in (0.1, 0.3):
        col = f"suite:pgd-restarts@{e:g}"
        both = skip.folded_ran[col] & every.folded_ran[col]
        assert (skip.folded[col][1][both] == every.folded[col][1][both]).all()
        sweep = skip.robust("fgsm", e) & skip.robust("pgd", e)
        assert skip.robust("ensemble", e).tolist() == (sweep & every.robust("ensemble", e)).tolist()
    assert int(skip.folded_ran["suite:pgd-restarts@0.1"].sum()) > 30  # a real comparison


def test_every_headline_image_gets_every_suite_attack_or_was_fooled_before(trained_model, mnist5k_test, tmp_path):
    """On a real model, from the saved files: at each headline eps each member ran on exactly the
    images that no cheaper attack had fooled there (the sweep's, at that eps or a smaller one, the
    members before it, the suite at a smaller headline eps), the counts in robustness.json are those
    images, and the ensemble is the worst case over every column at that eps."""
    data = (mnist5k_test.x[:64], mnist5k_test.y[:64])
    res = robustness_sweep(trained_model, data, ["fgsm", "pgd"], [0.05, 0.1, 0.3], progress=False)
    info = headline_suite(trained_model, data, res, [0.1, 0.3], restarts=2, square_queries=30)
    assert res.attacks[-1] == "ensemble"  # made: the sweep had none
    res.save(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "robustness_per_sample.csv")))
    stored = json.loads((tmp_path / "robustness.json").read_text())
    assert stored["suite"]["eps"] == [0.1, 0.3] and list(stored["suite"]["attacks"]) == ["pgd-restarts", "square"]
    fooled_before = {i: False for i in range(len(rows))}  # by the suite at a smaller headline eps
    for e in ("0.1", "0.3"):
        counts = {"pgd-restarts": 0, "square": 0}
        for i, r in enumerate(rows):
            alive = r["clean_correct"] == "1" and r[f"fgsm@{e}"] == "1" and r[f"pgd@{e}"] == "1" \
                and not fooled_before[i]
            for member in ("pgd-restarts", "square"):
                value = r[f"suite:{member}@{e}"]
                assert (value != "") == alive, (i, e, member)  # ran iff not fooled by a cheaper attack
                counts[member] += value != ""
                alive = alive and value == "1"
            fooled_before[i] = fooled_before[i] or (r[f"suite:pgd-restarts@{e}"] == "0"
                                                    or r[f"suite:square@{e}"] == "0")
            assert int(r[f"ensemble@{e}"]) == alive
        assert stored["suite"]["images"][e] == {"n": 64, **counts} == info["images"][e]
        for member in counts:
            assert stored["folded"][f"suite:{member}@{e}"]["n"] == counts[member]
    assert stored["robust_accuracy"]["ensemble"]["0.3"] <= stored["robust_accuracy"]["pgd"]["0.3"]


def test_on_threshold_the_restarts_fool_what_reaches_the_edge_and_square_adds_nothing(capfd):
    """`Threshold` (class 1 iff the mean pixel exceeds 0.9; every gradient attack ends at x + eps):
    a sweep with a weak attack (one step of 0.001) fools nothing; the suite at 0.3 (grid 0.2, 0.3)
    fools 0.89 with its restarts, and Square, run on the three others, cannot fool any (no image in
    their balls has a larger mean). The ensemble counts 0.89 fooled from 0.3 on; the weak attack's
    own numbers stay."""
    from test_science_attacks import Threshold

    x = torch.tensor([0.89, 0.45, 0.3, 0.2]).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    y = torch.zeros(4, dtype=torch.long)
    weak = {"weak": PGD(steps=1, alpha=0.001, random_start=False), "ensemble": "ensemble"}
    res = robustness_sweep(Threshold(), (x, y), weak, [0.2, 0.3], progress=False)
    info = headline_suite(Threshold(), (x, y), res, [0.3], restarts=2, square_queries=30)
    assert info["images"] == {"0.3": {"n": 4, "pgd-restarts": 4, "square": 3}}
    assert res.folded["suite:pgd-restarts@0.3"][1].tolist() == [False, True, True, True]
    assert res.folded_ran["suite:square@0.3"].tolist() == [False, True, True, True]
    assert res.folded["suite:square@0.3"][2] == "30 queries"
    assert res.first_fooled["ensemble"].tolist() == [0.3, math.inf, math.inf, math.inf]
    assert res.first_fooled["weak"].tolist() == [math.inf] * 4
    assert res.to_dict()["folded"]["suite:square@0.3"] == {"eps": 0.3, "n": 3, "of": 4, "fooled": 0,
                                                          "note": "30 queries"}
    assert capfd.readouterr().err == ""  # no progress bar by default


@pytest.mark.parametrize("from_scratch", [False, True])
def test_add_ensemble_and_folds_that_ran_on_some_images(from_scratch, tmp_path):
    """A sweep without an ensemble gets one (the worst case over its attacks and what was folded
    before); a fold with `ran` counts only the images it ran on (the others: blank in the CSV)."""
    from sgtlab.evaluate.robustness import RobustnessResult

    inf = math.inf
    first = {"pgd": torch.tensor([0.1, inf, inf, inf], dtype=torch.float64),
             "fgsm": torch.tensor([inf, 0.3, inf, inf], dtype=torch.float64)}
    outcomes = {a: torch.stack([f > 0.1, f > 0.3], 1) for a, f in first.items()} if from_scratch else None
    y = torch.zeros(4, dtype=torch.long)
    r = RobustnessResult(["pgd", "fgsm"], [0.1, 0.3], y, y.clone(), first, outcomes=outcomes)
    # sample 3: "not robust" where it did not run, which must not count
    r.fold("suite:x", 0.3, torch.tensor([True, True, False, False]), ran=torch.tensor([True, True, True, False]))
    r.add_ensemble()
    assert r.attacks == ["pgd", "fgsm", "ensemble"]
    assert r.robust("ensemble", 0.1).tolist() == [False, True, True, True]
    assert r.robust("ensemble", 0.3).tolist() == [False, False, False, True]
    r.add_ensemble()  # once is enough: nothing changes
    assert r.robust("ensemble", 0.3).tolist() == [False, False, False, True]
    r.save(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "robustness_per_sample.csv")))
    assert [row["suite:x@0.3"] for row in rows] == ["1", "1", "0", ""]
    with pytest.raises(SgtlabError, match="cannot fold"):
        r.fold("suite:y", 0.3, torch.ones(4, dtype=torch.bool), ran=torch.ones(3, dtype=torch.bool))


def test_the_suite_refuses_other_images_and_eps_off_the_grid():
    x, y, _ = _lottery_images(4)
    res = robustness_sweep(Lottery(), (x, y), NULL, [0.1, 0.3], progress=False)
    with pytest.raises(SgtlabError, match="not on the sweep's grid"):
        headline_suite(Lottery(), (x, y), res, [0.2])
    with pytest.raises(SgtlabError, match="the images of the sweep"):
        headline_suite(Lottery(), (x[:5], y[:5]), res, [0.3])
    assert suite_eps([0.05, 0.1, 0.3], [0.1, 0.3]) == [0.1, 0.3]
    assert suite_eps([0.05, 0.2], [0.1, 0.3]) == [0.2]  # none on the grid: its largest, as the report
    assert check_suite(True) == {"restarts": 5, "square_queries": 300} and check_suite(False) is None
    assert check_suite({"square_queries": 0}) == {"restarts": 5, "square_queries": 0}


def test_autoattack_joins_the_suite_on_every_headline_image(trained_model, mnist5k_test):
    """`autoattack=True`: AutoAttack-standard at each headline eps on every image the cheaper attacks
    left (at budgets where APGD-CE fools the ST model at once: on images it cannot fool, APGD-T,
    FAB-T and Square 5000 take minutes)."""
    data = (mnist5k_test.x[:24], mnist5k_test.y[:24])
    res = robustness_sweep(trained_model, data, ["fgsm", "ensemble"], [0.2, 0.3], progress=False)
    fgsm = {e: res.robust("fgsm", e).clone() for e in (0.2, 0.3)}
    info = headline_suite(trained_model, data, res, [0.2, 0.3], restarts=0, square_queries=0, autoattack=True)
    assert list(info["attacks"]) == ["autoattack"]
    ran2, ran3 = (res.folded_ran[f"suite:autoattack@{e}"] for e in ("0.2", "0.3"))
    fooled2 = ran2 & ~res.folded["suite:autoattack@0.2"][1]
    assert ran2.tolist() == fgsm[0.2].tolist()
    assert ran3.tolist() == (fgsm[0.3] & ~fooled2).tolist()  # nested: fooled at 0.2 is fooled at 0.3
    assert int(fooled2.sum()) > 0
    for e in (0.2, 0.3):
        assert (res.robust("ensemble", e) <= fgsm[e]).all()
    assert res.robust_accuracy["ensemble"][0.3] <= res.robust_accuracy["fgsm"][0.3]


def test_the_cli_and_the_api_run_the_suite_when_asked(trained_run, trained_model, mnist5k_test, tmp_path, capsys):
    import sgtlab
    from sgtlab.cli import main

    out = tmp_path / "att"
    assert main(["attack", str(trained_run), "--attacks", "fgsm,pgd", "--eps", "0.05,0.1,0.3", "--n", "24", "--suite",
                 "--json", "--out", str(out), "--device", "cpu"]) == 0
    obj = json.loads(capsys.readouterr().out)
    stored = json.loads((out / "robustness.json").read_text())
    assert stored["suite"]["eps"] == [0.1, 0.3] and list(stored["suite"]["attacks"]) == ["pgd-restarts", "square"]
    assert obj["robust_accuracy"]["ensemble"]["0.3"] <= obj["robust_accuracy"]["pgd"]["0.3"]
    data = (mnist5k_test.x[:24], mnist5k_test.y[:24])
    res = sgtlab.robustness(trained_model, data, [0.1, 0.3], ["pgd"], suite={"restarts": 1, "square_queries": 20})
    assert res.info["suite"]["images"]["0.1"]["n"] == 24 and "ensemble" in res.robust_accuracy
    assert not sgtlab.robustness(trained_model, data, [0.1, 0.3], ["pgd"]).folded  # off by default
    with pytest.raises(SgtlabError, match="unknown suite options: bad"):
        sgtlab.robustness(trained_model, data, [0.1], ["pgd"], suite={"bad": 1})


# --- the runner's robustness stage --------------------------------------------------------------

def _cfg():
    return SimpleNamespace(dataset="mnist5k", data_dir=None, verify=True, seed=0)


def test_the_checks_subset_is_class_stratified():
    """The attack subset is stratified; its first m images are not. The checks take a seeded
    stratified m-subset of it: each class its share of m (largest remainders), up to one image."""
    from sgtlab.experiments.stages import checks_subset, test_data

    data, _ = test_data(_cfg(), 300, 0)
    sub, at = checks_subset(data, 100, 0)
    assert len(set(at.tolist())) == 100 and torch.equal(sub.y, data.y[torch.from_numpy(at)])
    share = np.bincount(data.y.numpy(), minlength=10) * 100 / 300
    counts = np.bincount(sub.y.numpy(), minlength=10)
    assert counts.sum() == 100 and np.abs(counts - share).max() < 1
    first = np.bincount(data.y[:100].numpy(), minlength=10)
    assert np.abs(first - share).max() >= 1  # what it replaces: the first 100 are not stratified
    again, at2 = checks_subset(data, 100, 0)
    assert at2.tolist() == at.tolist()  # seeded: every run of an experiment checks the same images


def test_the_checks_do_not_change_the_headline(trained_model, tmp_path):
    """The robustness stage with and without the gradient-masking checks: the same per-image table
    and accuracies (the checks write checks.json and nothing into the headline), every image got the
    suite, and the checks ran on their stratified subset."""
    from sgtlab.experiments.stages import robustness_stage, stored_seconds

    attack = {"attacks": ["fgsm", "pgd", "ensemble"], "eps": [0.1, 0.3], "headline_eps": [0.1, 0.3], "n": 40,
              "suite": {"restarts": 1, "square_queries": 20}}
    cols = {}
    for checks in (False, {"n": 16, "square_queries": 20}):
        folder = tmp_path / str(bool(checks))
        folder.mkdir()
        cols[bool(checks)] = robustness_stage(trained_model, _cfg(), {**attack, "checks": checks}, folder, False, {})
    with_checks, without = (tmp_path / "True", tmp_path / "False")
    table = "robustness_per_sample.csv"
    assert (with_checks / table).read_text() == (without / table).read_text()
    assert {k: v for k, v in cols[True].items() if not k.startswith("check:")} == cols[False]
    stored = json.loads((with_checks / "robustness.json").read_text())
    assert stored["checks_subset"]["n"] == 16 and stored["checks_subset"]["stratified"]
    assert not any(c.startswith("checks:") for c in stored.get("folded", {}))
    checks = json.loads((with_checks / "checks.json").read_text())
    assert all(c["n"] == 16 for c in checks.values())
    assert set(stored["suite"]["images"]) == {"0.1", "0.3"}
    assert all(math.isfinite(v) for k, v in cols[False].items() if k.startswith("rob:"))
    # a resumed run finds the stage done: the same columns, and the seconds the first command spent
    times = {}
    assert robustness_stage(None, _cfg(), {**attack, "checks": False}, without, False, times) == cols[False]
    assert times == stored_seconds(json.loads((without / "robustness.json").read_text()), ("attack", "suite", "checks"))
    assert times["attack"] > 0 and times["suite"] > 0 and times["checks"] == 0


def test_a_done_saliency_stage_gives_its_stored_seconds_and_a_malformed_one_zero(tmp_path):
    from sgtlab.experiments.stages import interpretability_stage

    explain = {"methods": ["grad"]}
    for seconds, want in (({"explain": 12.5}, 12.5), ({"explain": -1}, 0.0), ({"explain": True}, 0.0),
                          ({"explain": float("nan")}, 0.0), ("12", 0.0), (None, 0.0)):
        (tmp_path / "interpretability.json").write_text(json.dumps(
            {"summary": {"grad": {"gini_mean": 0.3}}, "seconds": seconds}))
        times = {}
        assert interpretability_stage(None, _cfg(), explain, {}, tmp_path, False, times) == {"sal:grad:gini_mean": 0.3}
        assert times == {"explain": want}


def test_the_reports_derived_ensemble_leaves_the_checks_columns_out(tmp_path):
    """A folder without a stored ensemble (older, or a plain sweep): the report derives it as the
    worst case over the attack columns at that eps, not over the gradient-masking checks' columns
    (folders of before the suite have them) and over the suite's where they ran (blank elsewhere)."""
    from sgtlab.reporting.data import outcomes

    (tmp_path / "robustness_per_sample.csv").write_text(
        "index,pgd@0.3,checks:square@0.3,suite:square@0.3\n0,1,0,1\n1,1,,0\n2,0,1,\n3,1,1,1\n")
    ids, robust = outcomes(tmp_path.parent, {"run": "x", "folder": str(tmp_path)}, "ensemble", 0.3)
    assert robust.tolist() == [1, 0, 0, 1]

