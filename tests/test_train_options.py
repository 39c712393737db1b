"""The training loop applies its options, checked against closed forms of the updates, and the
runner resumes stage by stage.

A test-only method records every batch and the weights before each step; its loss is linear in the
weights, 2 * sum(w), so every gradient is 2 (plus weight decay) and an optimizer step has a closed
form: SGD with momentum mu and lr_t: buf_t = mu buf_{t-1} + g_t, w -= lr_t buf_t; Adam (Kingma &
Ba, torch's L2 form): m, v moments, w -= lr_t m_hat / (sqrt(v_hat) + 1e-8). lr_t follows the
schedule's formula: cosine lr (1 + cos(pi e / E)) / 2; step x0.1 at 50 % and 75 % of the epochs.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sgtlab.data.base import DatasetInfo, TensorData, register_dataset
from sgtlab.models import register_model
from sgtlab.train import TrainConfig, fit, register_method

N_TRAIN, BATCH = 12, 6  # 2 steps per epoch


def _load(split="train", data_dir=None, download=True):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = N_TRAIN if split == "train" else 8
    return TensorData(torch.rand(n, 3, 8, 8, generator=g) * 0.8 + 0.2, torch.randint(0, 4, (n,), generator=g),
                      "test-rgb8")


register_dataset(DatasetInfo("test-rgb8", _load, (3, 8, 8), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                             "test-tiny-cnn", "test only: 12 + 8 random 3 x 8 x 8 images"))


@register_model("test-tiny-cnn")
def _tiny(in_channels=3, num_classes=4):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 16, num_classes))


RECORD: list[dict] = []


@register_method("test-record")
def _record(model, x, y, cfg, ctx):
    """Test only: records the batch and the weights; loss 2 * sum(w) (+ 0 * the forward)."""
    m = ctx.module
    RECORD.append({"epoch": ctx.epoch, "x": x.clone(), "idx": ctx.idx.clone(),
                   "x_channels_last": x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
                   "w_channels_last": m.body[2].weight.is_contiguous(memory_format=torch.channels_last)
                   and not m.body[2].weight.is_contiguous(),
                   "w": [p.detach().clone() for p in m.parameters()]})
    loss = 2 * sum(p.sum() for p in m.parameters()) + 0 * model(x).sum()
    return loss, {}


def train(tmp_path, **kw):
    RECORD.clear()
    cfg = TrainConfig(dataset="test-rgb8", method="test-record", batch_size=BATCH, device="cpu", seed=0,
                      **{"epochs": 3, "lr": 0.1, "momentum": 0.0, **kw})
    out = tmp_path / "run"
    fit(cfg, out, progress=False)
    from sgtlab.train.checkpoint import read_checkpoint

    tensors, _ = read_checkpoint(out)
    final = [v for k, v in tensors.items() if k.startswith("model.")]
    return list(RECORD), final


def steps(rec, final):
    """(w_before, w_after, epoch) for every step."""
    ws = [r["w"] for r in rec] + [None]
    return [(rec[i]["w"], ws[i + 1], rec[i]["epoch"]) for i in range(len(rec) - 1)]


def lr_formula(schedule, lr, e, epochs):
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * e / epochs)) / 2
    if schedule == "step":
        return lr * {0: 1.0, 1: 1.0, 2: 0.1, 3: 0.01}[e] if epochs == 4 else None
    return lr


@pytest.mark.parametrize("schedule,epochs,momentum,wd", [("cosine", 3, 0.0, 0.0), ("step", 4, 0.9, 0.0),
                                                          ("constant", 2, 0.0, 0.5)])
def test_sgd_steps_follow_the_schedule_momentum_and_weight_decay(tmp_path, schedule, epochs, momentum, wd):
    rec, _ = train(tmp_path, epochs=epochs, schedule=schedule, momentum=momentum, weight_decay=wd)
    assert len(rec) == 2 * epochs
    buf = None
    for w0, w1, e in steps(rec, None):
        lr = lr_formula(schedule, 0.1, e, epochs)
        g = [2 + wd * p for p in w0]
        buf = g if buf is None else [momentum * b + gi for b, gi in zip(buf, g)]
        for p0, p1, b in zip(w0, w1, buf):
            assert torch.allclose(p1, p0 - lr * b, atol=1e-6), (schedule, e)


@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_adam_steps_are_adam(tmp_path, wd):
    rec, _ = train(tmp_path, optimizer="adam", lr=0.01, weight_decay=wd, epochs=2)
    m = v = None
    for t, (w0, w1, _) in enumerate(steps(rec, None), start=1):
        g = [2 + wd * p for p in w0]
        m = [0.1 * gi for gi in g] if m is None else [0.9 * a + 0.1 * gi for a, gi in zip(m, g)]
        v = [0.001 * gi ** 2 for gi in g] if v is None else [0.999 * a + 0.001 * gi ** 2 for a, gi in zip(v, g)]
        for p0, p1, a, b in zip(w0, w1, m, v):
            expect = p0 - 0.01 * (a / (1 - 0.9 ** t)) / ((b / (1 - 0.999 ** t)).sqrt() + 1e-8)
            assert torch.allclose(p1, expect, atol=1e-6), t


def test_batches_are_augmented_only_when_asked(tmp_path):
    """Each augmented image is one of the 81 x 2 crops (zero padding 4) / flips of its original, and
    not every one is the identity crop; without --augment the batch is the data."""
    data = _load()
    rec, _ = train(tmp_path, epochs=1)
    assert all(torch.equal(r["x"], data.x[r["idx"]]) for r in rec)
    rec, _ = train(tmp_path / "aug", epochs=1, augment=True)
    padded = torch.nn.functional.pad(data.x, (4, 4, 4, 4))
    changed = 0
    for r in rec:
        for xa, i in zip(r["x"], r["idx"].tolist()):
            crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
            assert any(torch.equal(xa, c) or torch.equal(xa, c.flip(-1)) for c in crops)
            changed += not torch.equal(xa, data.x[i])
    assert changed >= N_TRAIN // 2


@pytest.mark.parametrize("on", [False, True])
def test_channels_last_option(tmp_path, on):
    rec, _ = train(tmp_path, epochs=1, channels_last=on)
    assert all(r["x_channels_last"] == on and r["w_channels_last"] == on for r in rec)


# -- the runner: each stage is skipped when its output exists -----------------------------------------

def _spec():
    from sgtlab.experiments.presets import RunSpec

    tc = TrainConfig(dataset="test-rgb8", method="st", epochs=1, batch_size=BATCH, lr=0.05, device="cpu", seed=0)
    return RunSpec("st-seed0", "ST", 0, tc.to_dict(), {"attacks": ["fgsm"], "eps": [0.05], "n": 8},
                   {"methods": ["grad"], "metrics": ["entropy"], "n": 8})


def test_runner_resumes_stage_by_stage(tmp_path):
    """After a crash past each stage, a rerun reuses that stage's stored output (sentinels planted
    in the files show it was read, not recomputed) and computes only what is missing."""
    from sgtlab.experiments.runner import execute_run, run_dir

    spec = _spec()
    row = execute_run(spec, tmp_path)
    folder = run_dir(tmp_path, spec.name)
    assert row["train_test_accuracy"] is not None and "rob:fgsm:0.05" in row and any(k.startswith("sal:grad:") for k in row)
    # "crash" before result.json, with every stage's output present: plant sentinels
    (folder / "result.json").unlink()
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    metrics[-1]["test_accuracy"] = 0.123
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    rob = json.loads((folder / "robustness.json").read_text())
    rob["clean_accuracy"], rob["robust_accuracy"]["fgsm"]["0.05"] = 0.456, 0.321
    (folder / "robustness.json").write_text(json.dumps(rob))
    sal = json.loads((folder / "interpretability.json").read_text())
    key = next(iter(sal["summary"]["grad"]))  # e.g. entropy_mean
    sal["summary"]["grad"][key] = 7.89
    (folder / "interpretability.json").write_text(json.dumps(sal))
    again = execute_run(spec, tmp_path)
    assert again["train_test_accuracy"] == 0.123
    assert again["clean_accuracy"] == 0.456 and again["rob:fgsm:0.05"] == 0.321
    assert again[f"sal:grad:{key}"] == 7.89
    # a missing stage output is recomputed (the others still reused)
    (folder / "result.json").unlink()
    (folder / "robustness.json").unlink()
    third = execute_run(spec, tmp_path)
    assert third["clean_accuracy"] == row["clean_accuracy"] and third["rob:fgsm:0.05"] == row["rob:fgsm:0.05"]
    assert third[f"sal:grad:{key}"] == 7.89 and third["train_test_accuracy"] == 0.123
    # a finished run is not touched at all
    assert execute_run(spec, tmp_path) == json.loads((folder / "result.json").read_text())


@pytest.mark.parametrize("epochs", [4, 5, 7, 10])
def test_step_schedule_milestones_are_floors_of_half_and_three_quarters(epochs):
    """lr x0.1 from epoch floor(E/2) and again from floor(3E/4) (odd E: the floors matter)."""
    from sgtlab.train.loop import lr_at

    cfg = TrainConfig(dataset="test-rgb8", method="st", epochs=epochs, lr=0.2, schedule="step")
    for e in range(epochs):
        passed = (e >= epochs // 2) + (e >= (3 * epochs) // 4)
        assert lr_at(cfg, e) == pytest.approx(0.2 * 0.1 ** passed)
    assert lr_at(TrainConfig(dataset="test-rgb8", method="st", epochs=epochs, lr=0.2, schedule="cosine"),
                 epochs // 2) == pytest.approx(0.1 * (1 + math.cos(math.pi * (epochs // 2) / epochs)))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimizer_starts_at_the_configured_lr(optimizer):
    from sgtlab.train.loop import make_optimizer

    cfg = TrainConfig(dataset="test-rgb8", method="st", optimizer=optimizer, lr=0.037, momentum=0.5,
                      weight_decay=0.01)
    opt = make_optimizer(cfg, _tiny())
    group = opt.param_groups[0]
    assert group["lr"] == 0.037 and group["weight_decay"] == 0.01
    assert optimizer == "adam" or group["momentum"] == 0.5
