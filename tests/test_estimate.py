"""Measured time estimates (`sgtlab reproduce --dry-run/--estimate`) against real run times."""
from __future__ import annotations

import time

import pytest

from sgtlab.experiments.estimate import estimate_experiment, format_estimate, schedule
from sgtlab.experiments.presets import apply_overrides, load_preset
from sgtlab.experiments.runner import run_experiment

TINY = ["seeds=[0]", "train.train_subset=256", "train.epochs=1", "train.eval_subset=200",
        "methods=[{label: ST, method: st}, {label: SGT, method: sgt, k: 0.5}]",
        "attack.n=64", "attack.eps=[0.1,0.3]", "attack.attacks=[fgsm,pgd]", "attack.steps=3",
        "attack.checks=false", "explain.n=16", "explain.methods=[grad]"]


def test_schedule_starts_runs_in_order_on_the_first_free_slot():
    assert schedule([3, 1, 1, 1], 2) == 3
    assert schedule([1, 1, 1], 1) == 3
    assert schedule([], 4) == 0


@pytest.mark.slow
def test_estimate_of_a_tiny_preset_is_within_a_factor_1_5_of_its_real_time(tmp_path):
    cfg = apply_overrides(load_preset("quick"), TINY)
    est = estimate_experiment(cfg, workers=1)
    text = format_estimate(est)
    assert "st-seed0" in text and "projected" in text and len(est.runs) == 2
    t0 = time.perf_counter()
    run_experiment(cfg, tmp_path / "exp", progress=False, report=False, workers=1)
    real = time.perf_counter() - t0
    ratio = est.makespan_s / real
    assert 1 / 1.5 <= ratio <= 1.5, (est.makespan_s, real, text)
