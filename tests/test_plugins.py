"""Plug-ins: a model, a data set and a training method defined outside sgtlab, loaded with --import or
from an installed package's entry points, used by train, attack, explain and report."""
from __future__ import annotations

import csv
import json
import sys

import pytest

from sgtlab import plugins
from sgtlab.cli import main

from plugin_module import plugin_source

EXPLAIN = ["--methods", "grad", "--metrics", "entropy,gini,aopc,masked_accuracy,low_saliency", "--n", "12",
           "--aopc-steps", "4", "--qs", "0,0.5,1", "--pgd-qs", "0,1", "--pgd-steps", "2", "--no-progress"]


def _train_attack_explain(tmp_path, prefix, imports, capsys, methods, explain=EXPLAIN):
    """train (plug-in data set, model and method) + attack + explain, each a command on the same run folder."""
    runs = []
    for method in methods:
        run = tmp_path / "runs" / method
        assert main([*imports, "train", "--dataset", f"{prefix}-bars", "--method", method, "--epochs", "2",
                     "--batch-size", "16", "--lr", "0.1", "--device", "cpu", "--out", str(run), "--no-progress"]) == 0
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["method"] == method and cfg["dataset"] == f"{prefix}-bars"
        assert main([*imports, "attack", str(run), "--attacks", "fgsm,pgd", "--eps", "0.1,0.3", "--device", "cpu"]) == 0
        assert main([*imports, "explain", str(run), "--device", "cpu", *explain]) == 0
        for f in ("checkpoint.safetensors", "metrics.jsonl", "robustness.json", "robustness_per_sample.csv",
                  "interpretability.json"):
            assert (run / f).exists(), f  # one run layout, as reproduce writes it
        runs.append(run)
    capsys.readouterr()
    return runs


def _check_report(out, methods, figures=("robust_accuracy", "clean_accuracy", "saliency_grid", "masked_accuracy",
                                          "aopc", "low_saliency", "entropy")):
    html = (out / "report.html").read_text()
    for m in methods:
        assert m in html
    for fig in figures:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000, fig
    rows = list(csv.DictReader(open(out / "tables" / "accuracy.csv")))
    assert [r["method"] for r in rows] == methods
    assert (out / "tables" / "saliency_quality.csv").exists()


def test_import_option_every_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "mylab_plugin.py").write_text(plugin_source("imp", register=True))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "")  # restored (removed) at teardown, so no later test imports the plug-in
    runs = _train_attack_explain(tmp_path, "imp", ["--import", "mylab_plugin"], capsys, ["imp-smooth", "st"])
    # --import after the command name works too, and report takes it
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "rep"), "--import", "mylab_plugin"]) == 0
    _check_report(tmp_path / "rep", ["imp-smooth", "st"])
    import os

    assert "mylab_plugin" in os.environ[plugins.ENV]  # worker processes (reproduce --workers) import it too


def test_import_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(plugins.ENV, "")  # restored (removed) at teardown, so no later test imports the plug-in
    assert main(["--import", "no_such_plugin_module", "train", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such_plugin_module" in err and "\n" not in err
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('oops')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--import", "broken_plugin", "train", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken_plugin" in err and "RuntimeError: oops" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_entry_points_of_an_installed_package(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "eplab").mkdir(parents=True)
    (site / "eplab" / "__init__.py").write_text(plugin_source("ep", register=False))
    info = site / "eplab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: eplab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sgtlab.models]\nep-tiny = eplab:TinyBN\n\n[sgtlab.datasets]\n"
                                           "ep-bars = eplab:BARS\n\n[sgtlab.methods]\nep-smooth = eplab:smooth_ce\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(plugins.ENV, "")  # restored (removed) at teardown, so no later test imports the plug-in
    plugins.reset()  # entry points are read once per process: read them again with the package installed
    import sgtlab

    assert {"ep-tiny"} <= set(sgtlab.list_models()) and "ep-bars" in sgtlab.list_datasets()
    assert "ep-smooth" in sgtlab.list_methods()
    quick = ["--methods", "grad", "--metrics", "entropy", "--n", "8", "--no-progress"]
    runs = _train_attack_explain(tmp_path, "ep", [], capsys, ["ep-smooth"], explain=quick)
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "rep")]) == 0
    _check_report(tmp_path / "rep", ["ep-smooth"], ("robust_accuracy", "saliency_grid", "entropy"))
    # the plug-in model loads by name, as a built-in one does
    model = sgtlab.load_model(runs[0])
    assert type(model[1]).__name__ == "TinyBN" and not model.training
    sys.modules.pop("eplab", None)


def test_attack_and_explain_leave_finished_reproduce_runs_alone(tmp_path, capsys):
    run = tmp_path / "runs" / "st-s0"
    run.mkdir(parents=True)
    (run / "result.json").write_text("{}")  # a finished `reproduce` run
    assert main(["attack", str(run), "--eps", "0.1"]) == 2
    assert "pass --out" in capsys.readouterr().err
    assert main(["explain", str(run)]) == 2
    assert "give --out" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["result.json"]
