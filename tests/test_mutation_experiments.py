"""experiments.store and experiments.runner (issue 28's mutation round): the results table, run
rows, identity checks and the replacement rule, on folders written here."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sgtlab.errors import SgtlabError
from sgtlab.experiments import store
from sgtlab.experiments.store import _parse_row
from sgtlab.io import LinkRefused


def test_csv_cells_are_parsed_back_to_their_types():
    assert _parse_row({"a": "", "b": "True", "c": "False", "d": "-3", "e": "0.5", "f": "st", "g": None,
                       "h": "1e-3", "i": "nan", "j": "-x", "k": "12"}) == \
        {"a": None, "b": True, "c": False, "d": -3, "e": 0.5, "f": "st", "g": None, "h": 0.001,
         "j": "-x", "k": 12, "i": pytest.approx(float("nan"), nan_ok=True)}
    assert isinstance(_parse_row({"k": "12"})["k"], int) and isinstance(_parse_row({"k": "1.0"})["k"], float)


def test_the_table_keeps_one_row_per_run_in_the_given_order(tmp_path):
    assert store.read_results(tmp_path) == []
    store.record_result(tmp_path, {"run": "b", "x": 1}, ["a", "b"])
    store.record_result(tmp_path, {"run": "z", "y": "t"}, ["a", "b"])
    store.record_result(tmp_path, {"run": "a", "x": 2.5}, ["a", "b"])
    store.record_result(tmp_path, {"run": "b", "x": 3}, ["a", "b"])  # replaced, not added
    rows = store.read_results(tmp_path)
    assert rows == [{"run": "a", "x": 2.5, "y": None}, {"run": "b", "x": 3, "y": None},
                    {"run": "z", "x": None, "y": "t"}]
    assert (tmp_path / "results.csv").read_text().splitlines() == ["run,x,y", "a,2.5,", "b,3,", "z,,t"]
    assert store.csv_text([{"b": 1}, {"a": 2, "b": 3}]) == "b,a\r\n1,\r\n3,2\r\n"


def test_a_damaged_or_linked_table_is_one_line(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"run,x\n\xff\xfe,1\n")
    with pytest.raises(SgtlabError, match=r"results.csv is damaged \(UnicodeDecodeError\); delete it: it is rebuilt"):
        store.read_results(tmp_path)
    (tmp_path / "results.csv").write_text("run\n" + "a" * 200_000 + "\n")  # over csv's field limit
    with pytest.raises(SgtlabError, match=r"damaged \(Error\)"):
        store.read_results(tmp_path)
    other = tmp_path / "o"
    other.mkdir()
    os.symlink(tmp_path / "results.csv", other / "results.csv")
    with pytest.raises(LinkRefused):
        store.read_results(other)
    os.symlink(tmp_path / "nowhere.csv", tmp_path / "dangling")
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(tmp_path / "nowhere.csv", d / "results.csv")  # a dangling link is still refused
    with pytest.raises(LinkRefused):
        store.read_results(d)


def test_stored_results_become_columns():
    rob = {"clean_accuracy": 0.9, "robust_accuracy": {"pgd": {"0.1": 0.5, "0.30000": 0.2}, "fgsm": {"0.1": 0.6}}}
    assert store.robustness_columns(rob) == {"clean_accuracy": 0.9, "rob:pgd:0.1": 0.5, "rob:pgd:0.3": 0.2,
                                             "rob:fgsm:0.1": 0.6}
    assert store.checks_columns({"a": {"passed": True}, "b": {"passed": None}}) == {"check:a": True, "check:b": None}
    assert store.saliency_columns({"summary": {"grad": {"aopc": 0.1, "gini": 0.2}, "ig": {"aopc": 0.3}}}) == \
        {"sal:grad:aopc": 0.1, "sal:grad:gini": 0.2, "sal:ig:aopc": 0.3}


def test_the_final_loss_prefers_clean_ce_then_adversarial_then_total():
    assert store.final_loss({"train": {"ce": 1, "ce_adv": 2, "loss": 3}}) == 1.0
    assert store.final_loss({"train": {"ce": True, "ce_adv": 2.5, "loss": 3}}) == 2.5
    assert store.final_loss({"train": {"ce": "x", "loss": 3}}) == 3.0
    assert isinstance(store.final_loss({"train": {"loss": 3}}), float)
    assert store.final_loss({"train": {}}) is None
    assert store.final_loss({"train": [1]}) is None
    assert store.final_loss({}) is None
    assert store.final_loss(None) is None


def _run(folder: Path, **files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        name = name.replace("_", ".", 1) if name != "metrics" else "metrics.jsonl"
        (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))
    return folder


ROB = {"clean_accuracy": 0.8, "robust_accuracy": {"pgd": {"0.1": 0.4}}, "n": 50}
CFG = {"method": "sgt", "seed": 3, "dataset": "mnist", "model": "sgt-cnn", "epochs": 2}


def test_a_run_folder_is_one_row(tmp_path):
    run = _run(tmp_path / "r", config_json=CFG, robustness_json=ROB,
               checks_json={"c": {"passed": False}}, interpretability_json={"summary": {"grad": {"gini": 0.5}}},
               provenance_json={"sgtlab": "1.0", "run": "not this"},
               metrics='{"epoch": 1, "test_accuracy": 0.5}\nnot json\n[1]\n{"epoch": 2, "test_accuracy": 0.7, '
                       '"train": {"ce": 0.3}}\n{"broken\n')
    row = store.row_from_run(run)
    assert row == {"run": "not this", "label": "sgt", "method": "sgt", "seed": 3, "dataset": "mnist",
                   "model": "sgt-cnn", "epochs": 2, "clean_accuracy": 0.8, "rob:pgd:0.1": 0.4, "n_test": 50,
                   "sweep": "nested", "check:c": False, "sal:grad:gini": 0.5, "train_test_accuracy": 0.7,
                   "final_loss": 0.3, "num_classes": None, "sgtlab": "1.0", "folder": str(run)}
    assert store.row_from_run(_run(tmp_path / "s", robustness_json={**ROB, "from_scratch": True}), "nm")["sweep"] == \
        "from-scratch"
    row = store.row_from_run(_run(tmp_path / "t", config_json={}, metrics='{"test_accuracy": 0.6}\n'), "mine")
    assert row["run"] == "mine" and row["clean_accuracy"] == 0.6 and row["method"] == "?" and row["label"] == "?"
    assert "n_test" not in row and row["final_loss"] is None and row["folder"] == str(tmp_path / "t")


def test_a_run_without_an_accuracy_or_not_a_run_is_one_line(tmp_path):
    run = _run(tmp_path / "r", config_json=CFG, metrics='{"epoch": 1, "test_accuracy": null}\n')
    with pytest.raises(SgtlabError, match=f"^{run} has no accuracy to report: run `sgtlab attack {run}`"):
        store.row_from_run(run)
    with pytest.raises(SgtlabError, match="has no accuracy"):
        store.row_from_run(_run(tmp_path / "c", config_json=CFG))
    (tmp_path / "empty").mkdir()
    for p in (tmp_path / "empty", tmp_path / "missing", tmp_path / "r" / "config.json"):
        with pytest.raises(SgtlabError, match="is not a run folder .no config.json, checkpoint.safetensors"):
            store.row_from_run(p)
    for name in ("config.json", "checkpoint.safetensors", "result.json", "robustness.json", "interpretability.json"):
        d = tmp_path / f"only-{name}"
        d.mkdir()
        (d / name).write_text("{}")
        assert store.is_run(d), name
    assert not store.is_run(tmp_path / "empty")


def test_a_finished_reproduce_run_gives_its_own_row(tmp_path):
    run = _run(tmp_path / "runs" / "st-s0", result_json={"run": "st-s0", "clean_accuracy": 0.9, "seed": 0},
               config_json=CFG)
    assert store.row_from_run(run) == {"run": "st-s0", "clean_accuracy": 0.9, "seed": 0, "folder": str(run)}
    assert store.row_from_run(run, "other")["run"] == "other"
    bare = _run(tmp_path / "bare", result_json={"clean_accuracy": 0.9})
    assert store.row_from_run(bare)["run"] == "bare"


def test_damaged_or_linked_run_files_are_one_line(tmp_path):
    run = _run(tmp_path / "r", config_json="{oops", robustness_json=ROB)
    with pytest.raises(SgtlabError, match="config.json is damaged or unreadable"):
        store.row_from_run(run)
    run = _run(tmp_path / "l", robustness_json=ROB)
    os.symlink(tmp_path / "r" / "robustness.json", run / "checks.json")
    with pytest.raises(LinkRefused):
        store.row_from_run(run)
    run = _run(tmp_path / "m", robustness_json=ROB)
    os.symlink(tmp_path / "nowhere", run / "metrics.jsonl")
    with pytest.raises(LinkRefused):
        store.row_from_run(run)
    run = _run(tmp_path / "b", robustness_json=ROB)
    (run / "metrics.jsonl").write_bytes(b'{"test_accuracy": 0.5, "x": "\xff"}\n')
    assert store.row_from_run(run)["train_test_accuracy"] == 0.5  # undecodable bytes replaced
    deep = "[" * 100000 + "]" * 100000
    (run / "metrics.jsonl").write_text('{"test_accuracy": 0.25}\n' + deep + "\n")
    assert store.row_from_run(run)["train_test_accuracy"] == 0.25


def test_names_of_runs_from_folders_are_unique(tmp_path):
    a = tmp_path / "x" / "run"
    b = tmp_path / "y" / "run"
    c = tmp_path / "x" / "other"
    assert store._unique_names([a, c]) == ["run", "other"]
    assert store._unique_names([a, b, c]) == ["x/run", "y/run", "x/other"]
    assert store._unique_names([a, a]) == ["0:x/run", "1:x/run"]
    assert store._unique_names([]) == []


def test_rows_from_run_and_experiment_folders(tmp_path):
    exp = tmp_path / "exp"
    store.record_result(exp, {"run": "st-s0", "clean_accuracy": 0.5}, ["st-s0"])
    r1 = _run(tmp_path / "a" / "run", robustness_json=ROB)
    r2 = _run(tmp_path / "b" / "run", robustness_json=ROB)
    rows = store.rows_from_folders([exp, r1, r2])
    assert [r["run"] for r in rows] == ["st-s0", "a/run", "b/run"]
    assert rows[0]["folder"] == str(exp / "runs" / "st-s0")
    rows = store.rows_from_folders([exp, exp])
    assert [r["run"] for r in rows] == ["st-s0", f"st-s0 ({exp / 'runs' / 'st-s0'})"]
    (tmp_path / "bare" / "runs").mkdir(parents=True)
    with pytest.raises(SgtlabError, match="bare is an experiment folder without finished runs .no results.csv."):
        store.rows_from_folders([tmp_path / "bare"])
    (tmp_path / "bare" / "runs").rmdir()
    with pytest.raises(SgtlabError, match="is not a run folder"):
        store.rows_from_folders([tmp_path / "bare"])
    with pytest.raises(SgtlabError, match="^no runs to report$"):
        store.rows_from_folders([])
    _run(r1, config_json=CFG)
    (r1 / "runs").mkdir()
    assert store.rows_from_folders([r1])[0]["method"] == "sgt"  # a run folder with a runs/ inside is a run


def test_a_finished_result_is_replaced_only_by_the_same_request_or_with_overwrite(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    req = {"eps": [0.1], "n": 50, "data": {"data": "/a"}}
    old = lambda stored: stored.get("request")  # noqa: E731
    store.check_replace(run, "robustness.json", req, old, False, "evaluation")  # nothing there yet
    (run / "robustness.json").write_text(json.dumps({"request": req}))
    store.check_replace(run, "robustness.json", req, old, False, "evaluation")  # the same: fine
    with pytest.raises(SgtlabError, match=r"robustness.json holds a finished evaluation of another evaluation "
                                          r"\(differs in eps: \[0.1\] -> \[0.2\], n: 50 -> 60\); it is kept: pass --overwrite"):
        store.check_replace(run, "robustness.json", {**req, "n": 60, "eps": [0.2]}, old, False, "evaluation")
    with pytest.raises(SgtlabError, match=r"\(the data it names has changed since\)"):
        store.check_replace(run, "robustness.json", {**req, "data": {"data": "/b"}}, old, False, "evaluation")
    with pytest.raises(SgtlabError, match=r"differs in attack: null -> pgd\)"):
        store.check_replace(run, "robustness.json", {**req, "attack": "pgd"}, old, False, "evaluation")
    store.check_replace(run, "robustness.json", {**req, "n": 60}, old, True, "evaluation")
    (run / "robustness.json").write_text(json.dumps({"other": 1}))
    with pytest.raises(SgtlabError, match=r"\(written by an older sgtlab or another command, so it cannot be compared\)"):
        store.check_replace(run, "robustness.json", req, old, False, "saliency evaluation")
    (run / "result.json").write_text("{}")
    with pytest.raises(SgtlabError, match=r"is a finished run of `sgtlab reproduce`, whose checks.json belongs to its "
                                          r"experiment: pass --out for this attack's results"):
        store.check_replace(run, "checks.json", req, old, False, "attack")
    store.check_replace(run, "checks.json", req, old, True, "attack")
    os.symlink(tmp_path / "x", run / "link.json")
    with pytest.raises(LinkRefused):
        store.check_replace(run, "link.json", req, old, True, "attack")


def test_differences_are_listed_by_dotted_key_and_briefly():
    d = store._diffs({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}, {"a": 1, "b": {"c": 5, "d": 3}, "f": "x"})
    assert d == [("b.c", 2, 5), ("e", [1], None), ("f", None, "x")]
    assert store._diffs({"a": {"b": 1}}, {"a": 2}) == [("a", {"b": 1}, 2)]
    assert store._brief("k", "x" * 50, [1, 2]) == f"k: {'x' * 40} -> [1, 2]"
    assert store._brief("k", Path("/p"), None) == 'k: "/p" -> null'


def test_a_run_may_take_attack_results_unless_it_is_a_finished_reproduce_run(tmp_path):
    assert not store.writable_run(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    assert not store.writable_run(tmp_path / "f")
    assert store.writable_run(tmp_path)
    (tmp_path / "result.json").write_text("{}")
    assert not store.writable_run(tmp_path)
    assert store.is_complete(tmp_path.parent.parent, tmp_path.name) is False
    assert store.run_dir(tmp_path, "a") == tmp_path / "runs" / "a"
    (tmp_path / "runs" / "a").mkdir(parents=True)
    assert not store.is_complete(tmp_path, "a")
    (tmp_path / "runs" / "a" / "result.json").write_text("{}")
    assert store.is_complete(tmp_path, "a")


# -- the runner, its stages replaced by stand-ins (the real ones: tests/test_run_identity.py) -------

from sgtlab.experiments import runner  # noqa: E402
from sgtlab.experiments.presets import apply_overrides, expand, load_preset  # noqa: E402
from sgtlab.io import folder_lock, read_json  # noqa: E402

TINY = ["train.epochs=1", "train.train_subset=64", "attack.n=40", "attack.eps=[0.1]", "attack.attacks=[fgsm]",
        "attack.checks=false", "explain.methods=[]", "seeds=[0,1]",
        "methods=[{label: ST, method: st}, {label: SGT, method: sgt}]"]


@pytest.fixture
def fake(monkeypatch):
    """fit, the model loader and the evaluation stages replaced by stand-ins that record their calls."""
    import sgtlab.experiments.label_sanity as ls
    import sgtlab.train as train_pkg
    import sgtlab.train.checkpoint as ckpt

    calls: dict[str, list] = {"fit": [], "rob": [], "sal": [], "sanity": []}

    def fit(cfg, folder, resume=False, progress=True):
        calls["fit"].append((cfg.method, cfg.seed, Path(folder), resume, progress))
        return {"test_accuracy": 0.7 + cfg.seed / 100, "train": {"ce": 0.4, "loss": 0.9}}

    def rob(model, cfg, attack, folder, progress, times):
        calls["rob"].append((model, attack, Path(folder), progress))
        times["attack"] = 1.234
        return {"clean_accuracy": 0.9, "rob:fgsm:0.1": 0.5}

    def sal(model, cfg, explain, attack, folder, progress, times):
        calls["sal"].append((model, explain, attack, Path(folder)))
        times["explain"] = 0.0  # as the real stage: its key always
        return {"sal:grad:gini": 0.3}

    monkeypatch.setattr(train_pkg, "fit", fit)
    monkeypatch.setattr(ckpt, "load_model", lambda folder, dev: ("model", {"arch": {"model": "tiny", "num_classes": 7}}))
    monkeypatch.setattr(runner, "robustness_stage", rob)
    monkeypatch.setattr(runner, "interpretability_stage", sal)
    monkeypatch.setattr(runner, "provenance", lambda dev: {"sgtlab": "test", "device": dev})
    monkeypatch.setattr(runner, "device", lambda d: f"dev-{d}")
    monkeypatch.setattr(ls, "label_sanity_stage", lambda cfg, root: calls["sanity"].append((cfg, Path(root))))
    return calls


def _cfg(*more: str) -> dict:
    return apply_overrides(load_preset("quick"), [*TINY, *more])


def test_a_run_is_trained_evaluated_and_recorded_once(tmp_path, fake):
    spec = expand(_cfg())[1]
    row = runner.execute_run(spec, tmp_path)
    folder = tmp_path / "runs" / spec.name
    assert fake["fit"] == [(spec.train["method"], spec.seed, folder, True, False)]
    assert fake["rob"] == [("model", spec.attack, folder, False)]
    assert fake["sal"] == [("model", spec.explain, spec.attack, folder)]
    assert {k: row[k] for k in ("run", "label", "method", "seed", "dataset", "model", "epochs", "train_subset",
                                "config_hash", "clean_accuracy", "rob:fgsm:0.1", "sal:grad:gini", "train_test_accuracy",
                                "final_loss", "num_classes", "seconds_attack", "sgtlab", "device")} == \
        {"run": spec.name, "label": spec.label, "method": spec.train["method"], "seed": spec.seed,
         "dataset": spec.train["dataset"], "model": "tiny", "epochs": 1, "train_subset": 64,
         "config_hash": spec.config_hash(), "clean_accuracy": 0.9, "rob:fgsm:0.1": 0.5, "sal:grad:gini": 0.3,
         "train_test_accuracy": 0.7, "final_loss": 0.4, "num_classes": 7, "seconds_attack": 1.23,
         "sgtlab": "test", "device": f"dev-{spec.train['device']}"}
    assert set(row) >= {"seconds_train", "seconds_explain", "seconds"}
    assert row["seconds"] >= row["seconds_train"] >= 0 and row["seconds_explain"] >= 0
    assert read_json(folder / "result.json") == row
    assert read_json(folder / "run.json") == {"config_hash": spec.config_hash(), **json.loads(json.dumps(spec.identity()))}
    assert runner.execute_run(spec.to_dict(), tmp_path) == row  # finished: read back, nothing redone
    assert len(fake["fit"]) == 1 and len(fake["rob"]) == 1


def test_a_resumed_runs_seconds_count_the_epochs_an_earlier_command_trained(tmp_path, fake):
    """The stand-in fit trains nothing here (as when an earlier command finished the training and
    died in the evaluation): the run's training seconds are its epochs' seconds from the metrics
    log, not this command's moment; an unreadable log counts nothing."""
    spec = expand(_cfg("train.epochs=3"))[0]
    folder = tmp_path / "runs" / spec.name
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "seconds": 120.5}\n{"epoch": 2, "seconds": 80.25}\n'
                                          '{"epoch": 3, "seconds": "x"}\n\n{"epoch": 4, "seconds": 500}\n')  # 4: past the run's epochs
    row = runner.execute_run(spec, tmp_path)
    assert 200.75 <= row["seconds_train"] < 202 and row["seconds_train"] <= row["seconds"] < 203
    other = expand(_cfg("train.epochs=3"))[1]
    (tmp_path / "runs" / other.name).mkdir(parents=True)
    (tmp_path / "runs" / other.name / "metrics.jsonl").write_bytes(b"\xff{not json")
    row = runner.execute_run(other, tmp_path)
    assert 0 <= row["seconds_train"] < 1


def test_a_resumed_runs_seconds_count_the_stages_an_earlier_command_ran(tmp_path, fake, monkeypatch):
    """An earlier command finished the evaluation and died before result.json: the stages read their
    seconds back from their files, and the run's seconds are at least their sum."""
    def sal(model, cfg, explain, attack, folder, progress, times):
        times["explain"] = 300.0
        return {}

    monkeypatch.setattr(runner, "interpretability_stage", sal)
    row = runner.execute_run(expand(_cfg())[0], tmp_path)
    assert row["seconds_attack"] == 1.23 and row["seconds_explain"] == 300.0
    assert 301.23 <= row["seconds"] < 302


def test_a_run_folder_of_other_options_or_without_identity_is_refused(tmp_path, fake):
    spec = expand(_cfg())[0]
    folder = tmp_path / "runs" / spec.name
    runner.check_identity(folder, spec)  # nothing there: fine
    runner.execute_run(spec, tmp_path)
    runner.check_identity(folder, spec)  # the same options: fine
    other = expand(_cfg("train.lr=0.5", "train.momentum=0.5", "attack.n=30"))[0]
    with pytest.raises(SgtlabError, match=rf"^{folder} holds a run made with other options \(attack.n: 40 -> 30; "
                                          r"train.lr: .* -> 0.5; train.momentum: .* -> 0.5\); its results are not reused"):
        runner.execute_run(other, tmp_path)
    many = expand(_cfg(*[f"train.{k}={v}" for k, v in (("lr", 0.5), ("momentum", 0.5), ("weight_decay", 0.1),
                                                        ("batch_size", 7), ("epochs", 3), ("train_subset", 65),
                                                        ("eval_subset", 9))]))[0]
    with pytest.raises(SgtlabError) as e:
        runner.check_identity(folder, many)
    assert str(e.value).split("(", 1)[1].split(")", 1)[0].count(";") == 5  # six differences named
    ident = read_json(folder / "run.json")
    (folder / "run.json").write_text(json.dumps({**ident, "config_hash": "0" * 16}))  # same options, other hash
    with pytest.raises(SgtlabError, match=r"holds a run made with other options \(see run.json\)"):
        runner.check_identity(folder, spec)
    (folder / "run.json").unlink()
    with pytest.raises(SgtlabError, match=rf"^{folder} holds a run without run.json \(made by an older sgtlab\)"):
        runner.check_identity(folder, spec)
    (folder / "result.json").unlink()
    (folder / "checkpoint.safetensors").write_bytes(b"x")
    with pytest.raises(SgtlabError, match="holds a run without run.json"):
        runner.check_identity(folder, spec)
    (folder / "checkpoint.safetensors").unlink()
    runner.check_identity(folder, spec)


def test_an_experiment_runs_what_is_missing_and_records_every_row_in_order(tmp_path, fake):
    cfg = _cfg()
    specs = expand(cfg)
    runner.execute_run(specs[2], tmp_path)  # finished before a crash, never recorded in the table
    rows = runner.run_experiment(cfg, tmp_path, progress=False)
    assert [r["run"] for r in rows] == [s.name for s in specs]
    assert len(fake["fit"]) == 4 and sorted(f[1] for f in fake["fit"]) == [0, 0, 1, 1]
    assert fake["sanity"] == [(cfg, tmp_path)]
    assert read_json(tmp_path / "experiment.json") == json.loads(json.dumps(cfg))
    assert not (tmp_path / ".sgtlab.lock").exists()
    again = runner.run_experiment(cfg, tmp_path, progress=False)
    assert again == rows and len(fake["fit"]) == 4  # nothing redone


def test_the_experiment_folder_is_locked_unless_the_caller_holds_it(tmp_path, fake):
    cfg = _cfg("seeds=[0]")
    with folder_lock(tmp_path, "experiment folder"):
        with pytest.raises(SgtlabError, match="the experiment folder .* is in use by another sgtlab command"):
            runner.run_experiment(cfg, tmp_path, progress=False)
        assert fake["fit"] == []
        assert len(runner.run_experiment(cfg, tmp_path, progress=False, lock=False)) == 2
    bad = {**cfg, "seeds": "x"}
    with pytest.raises(SgtlabError):
        runner.run_experiment(bad, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()  # refused before the folder is made


def test_a_changed_option_is_refused_before_any_run_and_another_experiment_too(tmp_path, fake):
    cfg = _cfg("seeds=[0]")
    runner.run_experiment(cfg, tmp_path, progress=False)
    n = len(fake["fit"])
    with pytest.raises(SgtlabError, match="holds a run made with other options"):
        runner.run_experiment(_cfg("seeds=[0, 5]", "train.lr=0.5"), tmp_path, progress=False)
    assert len(fake["fit"]) == n  # not even the new seed's runs
    rows = runner.run_experiment(_cfg("seeds=[0, 5]", "description=more seeds"), tmp_path, progress=False)
    assert len(rows) == 4 and len(fake["fit"]) == n + 2  # seeds may be added
    assert read_json(tmp_path / "experiment.json")["seeds"] == [0, 5]
    runner._check_same_experiment(tmp_path, {**read_json(tmp_path / "experiment.json"), "report": {"x": 1},
                                             "minutes_2cpu": 3, "minutes_gpu": 1, "measured": "x", "methods": []})
    cfg2 = read_json(tmp_path / "experiment.json")
    with pytest.raises(SgtlabError, match=r"holds another experiment \(differs in: name, zz\); use another --out"):
        runner._check_same_experiment(tmp_path, {**cfg2, "zz": 1, "name": "other"})
    assert read_json(tmp_path / "experiment.json") == cfg2  # unchanged when refused


def test_tables_and_logs_that_are_fifos_are_named_in_the_refusal(tmp_path):
    os.mkfifo(tmp_path / "results.csv")
    with pytest.raises(SgtlabError, match=r"^the results table .*results.csv is not a regular file"):
        store.read_results(tmp_path)
    run = _run(tmp_path / "r", robustness_json=ROB)
    os.mkfifo(run / "metrics.jsonl")
    with pytest.raises(SgtlabError, match=r"^the metrics log .*metrics.jsonl is not a regular file"):
        store.row_from_run(run)


def test_cells_with_line_breaks_and_negative_integers_come_back_as_written(tmp_path):
    store.record_result(tmp_path, {"run": "a", "note": "line 1\r\nline 2", "n": -3}, ["a"])
    row = store.read_results(tmp_path)[0]
    assert row["note"] == "line 1\r\nline 2" and row["n"] == -3 and isinstance(row["n"], int)
    assert isinstance(_parse_row({"d": "-3"})["d"], int) and isinstance(_parse_row({"d": "3"})["d"], int)


def test_a_refusal_names_at_most_four_differences(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    old = {k: 1 for k in "abcde"}
    (run / "robustness.json").write_text(json.dumps({"request": old}))
    with pytest.raises(SgtlabError, match=r"\(differs in a: 1 -> 2, b: 1 -> 2, c: 1 -> 2, d: 1 -> 2\); it is kept"):
        store.check_replace(run, "robustness.json", {k: 2 for k in "abcde"}, lambda s: s["request"], False, "evaluation")


def test_a_reproduce_runs_row_keeps_its_own_run_name(tmp_path):
    run = _run(tmp_path / "folder-name", result_json={"run": "st-seed3", "clean_accuracy": 0.9})
    assert store.row_from_run(run)["run"] == "st-seed3"


def test_a_crashed_run_is_resumed_in_its_folder_with_its_options(tmp_path, fake, monkeypatch):
    import time as _time

    import sgtlab.train as train_pkg
    import sgtlab.train.checkpoint as ckpt

    spec = expand(_cfg())[1]
    folder = tmp_path / "runs" / spec.name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"config_hash": spec.config_hash(), **spec.identity()}))
    loads = []
    monkeypatch.setattr(ckpt, "load_model", lambda f, dev: loads.append((f, dev)) or
                        ("model", {"arch": {"model": "tiny", "num_classes": 7}}))
    real_fit = train_pkg.fit

    def slow_fit(cfg, f, resume=False, progress=True):
        _time.sleep(0.03)
        return real_fit(cfg, f, resume, progress)

    monkeypatch.setattr(train_pkg, "fit", slow_fit)
    t0 = _time.perf_counter()
    row = runner.execute_run(spec, tmp_path, progress=True)
    wall = _time.perf_counter() - t0
    assert loads == [(folder, f"dev-{spec.train['device']}")]
    assert fake["rob"][0][3] is True and fake["sal"][0][1] == spec.explain
    stages = sum(row[f"seconds_{k}"] for k in ("train", "attack", "explain"))  # the stand-in attack "took" 1.23 s
    assert 0.03 <= row["seconds_train"] <= row["seconds"] <= max(wall, stages) + 0.01
    assert row["seconds_explain"] <= row["seconds"] and row["seconds"] == round(row["seconds"], 2)


def test_the_stages_get_the_runs_training_config_and_progress(tmp_path, fake, monkeypatch):
    got = []
    monkeypatch.setattr(runner, "robustness_stage", lambda m, cfg, a, f, p, t: got.append(("rob", cfg.method, p)) or
                        {"clean_accuracy": 0.5})
    monkeypatch.setattr(runner, "interpretability_stage", lambda m, cfg, e, a, f, p, t: got.append(("sal", cfg.method, p))
                        or {})
    spec = expand(_cfg())[1]
    runner.execute_run(spec, tmp_path, progress=True)
    assert got == [("rob", spec.train["method"], True), ("sal", spec.train["method"], True)]


def test_the_executor_gets_the_options_and_the_bar_counts_the_runs(tmp_path, fake, monkeypatch, capsys):
    import sgtlab.experiments.executors as ex

    calls = []

    class Here:
        def map(self, fn, items, *args):
            return (fn(i, *args) for i in items)

    def get_executor(name="local", **kw):
        calls.append((name, kw))
        return Here()

    monkeypatch.setattr(ex, "get_executor", get_executor)
    cfg = _cfg("name=tiny")
    runner.execute_run(expand(cfg)[0], tmp_path)  # one of four finished before
    seen = []
    runner.run_experiment(cfg, tmp_path, executor="ray", address="host:1", workers=3, gpus=[0, 1],
                          on_run=lambda row, done, total: seen.append((row["run"], done, total)))
    assert [(d, t) for _, d, t in seen] == [(2, 4), (3, 4), (4, 4)]  # the run finished before counts
    assert [r for r, _, _ in seen] == [s.name for s in expand(cfg)[1:]]
    assert calls == [("ray", {"address": "host:1", "gpus": [0, 1]})]
    err = capsys.readouterr().err
    assert "tiny runs:  25%" in err and " 1/4 " in err and "tiny runs: 100%" in err and " 4/4 " in err
    assert "run/s" in err and "clean 0.900" in err and "5/4" not in err
    calls.clear()
    runner.run_experiment(_cfg("name=tiny", "seeds=[0, 1, 2]"), tmp_path, workers=3, gpus=[1], progress=False, lock=False)
    assert calls == [("local", {"workers": 3, "gpus": [1]})]
    assert capsys.readouterr().err == ""
    calls.clear()
    runner.run_experiment(_cfg("name=tiny", "seeds=[0, 1, 2, 4]"), tmp_path, workers=2, progress=False)
    assert calls == [("local", {"workers": 2, "gpus": None})]
    calls.clear()
    unnamed = {k: v for k, v in _cfg("seeds=[7]").items() if k != "name"}
    runner.run_experiment(unnamed, tmp_path / "a" / "b", executor="ray", address="h:2", workers=2, gpus=[3], lock=False)
    assert calls == [("ray", {"address": "h:2", "gpus": [3]})]
    assert "experiment runs: 100%" in capsys.readouterr().err
