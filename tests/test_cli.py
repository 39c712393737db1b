"""The command line: help, JSON output, and bad input refused with one clear line before any work."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sgtlab.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sgtlab", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands_and_options():
    r = run_cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "evaluate" in r.stdout
    r = run_cli("train", "--help")
    for option in ("--epochs", "--batch-size", "--method", "--k", "--lam", "--resume", "--seed"):
        assert option in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-1"], "epochs must be >= 1"),
    (["--batch-size", "0"], "batch size must be >= 1"),
    (["--k", "1.5"], "k must be in (0, 1)"),
    (["--k", "0"], "k must be in (0, 1)"),
    (["--train-eps", "-0.1"], "eps must be >= 0"),
    (["--method", "magic"], "choose one of: "),
    (["--dataset", "imagenet"], "choose one of: "),
    (["--lr", "0"], "learning rate must be > 0"),
    # an option the method does not read, even typed with its default value
    (["--method", "st", "--lam", "1.0"], "method 'st' does not use lam"),
    (["--method", "sgt", "--train-eps", "0.3"], "method 'sgt' does not use train_eps"),
    (["--method", "sgt", "--random-start"], "method 'sgt' does not use random_start"),
])
def test_impossible_training_values_are_refused(tmp_path, args, message):
    r = run_cli("train", "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any work


def test_train_then_evaluate_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--train-subset", "256", "--eval-subset", "100",
                 "--json", "--no-progress"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["epoch"] == 1
    assert main(["evaluate", str(out), "--json", "--n", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy"] <= 1 and result["n"] == 200
    # on the seeded class-stratified 200 that `sgtlab attack --n 200` uses, not the first 200
    from sgtlab.data import load_dataset
    from sgtlab.data.subsets import stratified_subset
    from sgtlab.evaluate import accuracy
    from sgtlab.train.checkpoint import load_model

    test = load_dataset("mnist5k", "test")
    sub, idx = stratified_subset(test, 200, seed=0)
    assert sorted(idx.tolist()) != list(range(200))
    assert result["accuracy"] == pytest.approx(accuracy(load_model(out)[0], sub))


def test_evaluate_missing_checkpoint_is_one_line(tmp_path):
    r = run_cli("evaluate", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_allocator_tuning_takes_effect_on_glibc():
    import platform

    from sgtlab.device import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
