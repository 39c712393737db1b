"""Run identity and paired test subsets: a finished run is never reused under other options; every
run of an experiment sees the same seeded, class-stratified test images; config.json holds the
values the run used."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from sgtlab.data.subsets import class_quota, stratified_indices
from sgtlab.errors import SgtlabError
from sgtlab.experiments.presets import apply_overrides, expand, load_preset
from sgtlab.experiments.runner import read_results, run_experiment
from sgtlab.train.methods import MethodConfig
from sgtlab.train.resolve import METHOD_OPTIONS

TINY = ["train.epochs=1", "train.train_subset=64", "attack.n=40", "attack.eps=[0.1]", "attack.attacks=[fgsm]",
        "attack.checks=false", "explain.methods=[]", "seeds=[0,1]",
        "methods=[{label: ST, method: st}, {label: SGT, method: sgt}]"]

# one changed value per method option; a new option must be added here (the test says so)
CHANGED = {"k": 0.3, "lam": 0.5, "saliency": "signed", "saliency_target": "pred", "mask_fill": "fixed",
           "mask_low": 0.1, "mask_high": 0.9, "train_eps": 0.2, "train_steps": 4, "train_alpha": 0.05,
           "fgsm_alpha": 0.2, "eps_warmup": 0.5, "random_start": False, "clean_loss": True, "q0": 0.2, "gamma": 0.02, "q_min": 0.01,
           "q_max": 0.8, "warmup_epochs": 2, "eps_irr": 0.5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("identity")
    cfg = apply_overrides(load_preset("quick"), TINY)
    run_experiment(cfg, out, progress=False)
    return cfg, out


def test_changing_any_method_option_never_reuses_the_finished_run(tiny):
    cfg, out = tiny
    assert set(CHANGED) == {f.name for f in dataclasses.fields(MethodConfig)}, "add the new option to CHANGED"
    before = (out / "results.csv").read_text()
    stamp = (out / "runs" / "sgt-seed0" / "result.json").stat().st_mtime_ns
    for option, value in CHANGED.items():
        changed = apply_overrides(cfg, [f"methods.1.{option}={json.dumps(value)}"])
        # an option SGT reads changes the run's identity; one it does not read is refused as such
        match = rf"method_cfg\.{option}: " if option in METHOD_OPTIONS["sgt"] else rf"does not use {option}"
        with pytest.raises(SgtlabError, match=match):
            run_experiment(changed, out, progress=False)
    # a changed training option too
    with pytest.raises(SgtlabError, match=r"train\.lr: "):
        run_experiment(apply_overrides(cfg, ["train.lr=0.01"]), out, progress=False)
    assert (out / "results.csv").read_text() == before
    assert (out / "runs" / "sgt-seed0" / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "experiment.json").read_text())["methods"][1].get("k") is None  # not rewritten
    # the same options again: every run is reused, nothing is redone
    rows = run_experiment(cfg, out, progress=False)
    assert len(rows) == 4 and (out / "runs" / "sgt-seed0" / "result.json").stat().st_mtime_ns == stamp


def test_every_run_sees_the_same_stratified_subset(tiny):
    _, out = tiny
    rows = read_results(out)
    assert len({r["test_subset"] for r in rows}) == 1 and all(r["n_test"] == 40 for r in rows)
    ids = [np.loadtxt(out / "runs" / r["run"] / "robustness_per_sample.csv", delimiter=",", skiprows=1,
                      usecols=1) for r in rows]
    assert all(np.array_equal(ids[0], i) for i in ids[1:])
    from sgtlab.data import load_dataset

    y = load_dataset("mnist5k", "test").y.numpy()
    np.testing.assert_array_equal(np.bincount(y[ids[0].astype(int)], minlength=10), [4] * 10)  # 40 of 10 classes


def test_config_json_holds_resolved_values(tiny):
    _, out = tiny
    saved = json.loads((out / "runs" / "sgt-seed0" / "config.json").read_text())
    assert saved["model"] == "sgt-cnn" and saved["method_cfg"]["k"] == 0.5
    spec = expand(apply_overrides(load_preset("quick"), []))
    by = {s.train["method"]: s.train for s in spec}
    assert by["asgt"]["method_cfg"]["train_alpha"] == pytest.approx(2.5 * 0.3 / 3)
    assert by["at-fgsm"]["method_cfg"]["fgsm_alpha"] == pytest.approx(1.25 * 0.3)
    assert by["scaat"]["method_cfg"]["train_alpha"] == pytest.approx(2.5 * 1.0 / 3)
    assert spec[0].attack["headline_eps"] == [0.1, 0.3]


def test_stratified_indices_are_seeded_and_proportional():
    rng = np.random.default_rng(1)
    y = rng.choice(5, size=2000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    a, b, c = stratified_indices(y, 300, 0), stratified_indices(y, 300, 0), stratified_indices(y, 300, 1)
    assert np.array_equal(a, b) and not np.array_equal(np.sort(a), np.sort(c))
    assert len(set(a.tolist())) == 300
    counts = np.bincount(y[a], minlength=5)
    expect = 300 * np.bincount(y, minlength=5) / len(y)
    assert np.all(np.abs(counts - expect) < 1)  # largest remainders: within one image of proportional
    assert class_quota(np.array([3, 3, 3]), 4).sum() == 4
    assert sorted(stratified_indices(y[:10], None, 0).tolist()) == list(range(10))


def test_budgets_fall_back_by_image_kind():
    from sgtlab.data.budgets import budgets, budgets_for_shape

    assert budgets("mnist5k").headline_eps == (0.1, 0.3) and budgets("cifar10").train_eps == pytest.approx(8 / 255)
    assert budgets_for_shape((1, 28, 28)).train_eps == 0.3 and budgets_for_shape((3, 96, 96)).train_eps == 8 / 255
    cifar = expand(load_preset("paper-cifar10"))[0]
    assert max(cifar.attack["eps"]) < 0.05 and cifar.explain["eps"] == pytest.approx(8 / 255)
