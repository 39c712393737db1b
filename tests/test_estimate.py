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
        "attack.checks=false", "explain.n=16", "explain.methods=[grad]",
        # metrics whose cost grows with n: the sanity checks and captum's metrics cost the same for any
        # n above their own caps (sanity_n, captum_n), which a 5-second preview cannot extrapolate
        "explain.metrics=[entropy,gini,aopc,masked_accuracy,low_saliency]"]


def test_schedule_starts_runs_in_order_on_the_first_free_slot():
    assert schedule([3, 1, 1, 1], 2) == 3
    assert schedule([1, 1, 1], 1) == 3
    assert schedule([], 4) == 0


@pytest.mark.slow
def test_estimate_of_a_tiny_preset_is_within_a_factor_1_5_of_its_real_time(tmp_path):
    cfg = apply_overrides(load_preset("quick"), TINY)
    # Under `pytest -n 2` the other worker's load can change between the few timed steps and the
    # real run; a projection that is right holds on a try where both see the same load, so up to
    # three (estimate, real run) pairs are taken and one must agree within a factor 1.5.
    tries = []
    for attempt in range(3):
        est = estimate_experiment(cfg, workers=1)
        text = format_estimate(est)
        assert "st-seed0" in text and "projected" in text and len(est.runs) == 2
        t0 = time.perf_counter()
        run_experiment(cfg, tmp_path / f"exp{attempt}", progress=False, workers=1)
        real = time.perf_counter() - t0
        tries.append((est.makespan_s, real, text))
        if 1 / 1.5 <= est.makespan_s / real <= 1.5:
            return
    pytest.fail(f"no projection within a factor 1.5 of the real time in 3 tries: {tries}")


# --- GPU worker planning, with the devices faked -------------------------------------------------------

GIB = 1 << 30


def test_plan_fits_runs_to_each_gpus_free_memory_and_spreads_them():
    from sgtlab.experiments.executors import CUDA_CONTEXT_BYTES, HEADROOM, plan_gpu_workers

    need = int(2 * GIB * HEADROOM) + CUDA_CONTEXT_BYTES  # 3.25 GiB per run
    plan = plan_gpu_workers(2 * GIB, devices=[(20 * GIB, 80 * GIB), (7 * GIB, 80 * GIB)], cores=64)
    assert plan.count(0) == 20 * GIB // need == 6 and plan.count(1) == 2
    assert plan[:4] == [0, 1, 0, 1]  # dealt in turn: the first runs go to different GPUs
    # at most one run per CPU core, still spread
    assert plan_gpu_workers(2 * GIB, devices=[(80 * GIB, 80 * GIB)] * 4, cores=6) == [0, 1, 2, 3, 0, 1]
    # a run bigger than any free memory still gets one slot, alone
    assert plan_gpu_workers(100 * GIB, devices=[(20 * GIB, 80 * GIB)], cores=8) == [0]
    assert plan_gpu_workers(GIB, devices=[], cores=8) == []


def test_gpu_slots_from_faked_devices_and_measured_memory(monkeypatch):
    import torch

    from sgtlab.experiments import executors

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ((40 * GIB, 80 * GIB), (10 * GIB, 24 * GIB))[i])
    monkeypatch.setattr(executors, "_cores", lambda: 32)
    measured = []

    def measure(t):
        measured.append(t["method"])
        return {"st": GIB, "asgt": 3 * GIB}[t["method"]]

    trains = [{"method": m, "seed": s, "method_cfg": {}} for m in ("st", "asgt") for s in (0, 1)]
    plan = executors.gpu_slots("auto", trains, measure=measure)
    assert measured == ["st", "asgt"]  # once per setup, not per seed
    need = int(3 * GIB * executors.HEADROOM) + executors.CUDA_CONTEXT_BYTES  # the hungriest setup decides
    assert plan.count(0) == 40 * GIB // need and plan.count(1) == 10 * GIB // need
    assert executors.gpu_slots("3", trains, measure=measure) == [0, 1, 0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert executors.gpu_slots("auto", trains, measure=measure) is None


def test_local_executor_gives_each_worker_its_planned_gpu():
    from sgtlab.experiments.executors import LocalExecutor

    ex = LocalExecutor(workers=1, gpus=[1, 0])
    assert ex.workers == 2
    assert sorted(ex.map(_visible_gpu, range(2))) == ["0", "1"]


def _visible_gpu(_item):
    import os
    import time

    time.sleep(0.5)  # every worker gets a task
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_the_robust_pilot_is_fooled_nowhere_so_no_attack_stops_early():
    """Adversarially trained runs' evaluation is timed on the pilot as a model that nothing fools:
    its own predictions as labels, every eps shrunk. Every image then gets every attack step; with
    the true labels and budgets, the barely trained pilot lets the attacks stop early (the
    estimate said 3.3 min for asgt-mnist's robust runs' evaluation; they took 6.3-6.7)."""
    import torch
    from torch import nn

    from sgtlab.data import TensorData
    from sgtlab.evaluate.robustness import robustness_sweep
    from sgtlab.experiments.estimate import ROBUST_SHRINK, robust_pilot
    from sgtlab.experiments.stages import attack_plan

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.images = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), 0

        def forward(self, x):
            self.images += len(x)
            return self.net(x)

    torch.manual_seed(0)
    model = Counting()
    data = TensorData(torch.rand(24, 1, 28, 28), torch.randint(0, 10, (24,)))
    attack = {"attacks": ["fgsm", "pgd"], "eps": [0.1, 0.3], "steps": 3, "n": 24}
    shrunk, pilot = robust_pilot(model, attack, data)
    assert shrunk["eps"] == pytest.approx([ROBUST_SHRINK * 0.1, ROBUST_SHRINK * 0.3])
    assert shrunk["headline_eps"] == pytest.approx(shrunk["eps"])  # MNIST's standard budgets, shrunk alike
    assert shrunk["n"] == 24 and attack["eps"] == [0.1, 0.3]  # the preset's own section is untouched
    counts = {}
    for name, (att, d) in {"plain": (attack, data), "robust": (shrunk, pilot)}.items():
        model.images = 0
        res = robustness_sweep(model, d, attack_plan(att), att["eps"], seed=0, progress=False)
        counts[name] = model.images
        if name == "robust":
            assert res.clean_accuracy == 1.0
            assert all(torch.isinf(f).all() for f in res.first_fooled.values())
    # fgsm: 1 gradient step, pgd: 3, at 2 eps, on all 24 images, plus the clean forwards
    assert counts["robust"] >= 24 * 2 * (1 + 3) > counts["plain"]
