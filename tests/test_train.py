"""The training loop: determinism, resume, divergence, checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from sgtlab.errors import CheckpointError, SgtlabError, TrainingDiverged
from sgtlab.train import TrainConfig, fit, register_method
from sgtlab.train.checkpoint import load_model, read_checkpoint


def small_cfg(**kw) -> TrainConfig:
    base = dict(dataset="mnist5k", method="st", epochs=2, batch_size=64, lr=0.05, seed=1, device="cpu",
                train_subset=512, eval_subset=200)
    base.update(kw)
    return TrainConfig(**base)


def weights(run):
    tensors, _ = read_checkpoint(run)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_same_seed_same_weights_and_seed_matters(tmp_path):
    fit(small_cfg(epochs=1), tmp_path / "a", progress=False)
    fit(small_cfg(epochs=1), tmp_path / "b", progress=False)
    fit(small_cfg(epochs=1, seed=2), tmp_path / "c", progress=False)
    a, b, c = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_ends_with_the_same_weights(tmp_path):
    fit(small_cfg(epochs=3), tmp_path / "full", progress=False)
    fit(small_cfg(epochs=1), tmp_path / "cut", progress=False)  # "interrupted" after epoch 1
    with pytest.raises(SgtlabError, match="--resume"):
        fit(small_cfg(epochs=3), tmp_path / "cut", progress=False)
    fit(small_cfg(epochs=3), tmp_path / "cut", resume=True, progress=False)
    full, cut = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_with_other_settings_is_refused(tmp_path):
    fit(small_cfg(epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match="lr"):
        fit(small_cfg(epochs=2, lr=0.1), tmp_path / "r", resume=True, progress=False)


def test_resume_drops_metric_lines_past_the_checkpoint(tmp_path):
    out = tmp_path / "r"
    fit(small_cfg(epochs=1), out, progress=False)
    with open(out / "metrics.jsonl", "a") as f:  # a crash after the log line of epoch 2, before its checkpoint
        f.write(json.dumps({"epoch": 2, "test_accuracy": 0.0}) + "\n{torn")
    fit(small_cfg(epochs=2), out, resume=True, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["test_accuracy"] > 0


@register_method("test-nan-in-epoch-2")
def _nan_method(model, x, y, cfg, ctx):
    """Test only: a loss that becomes NaN in the second epoch."""
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if ctx.epoch == 1:
        loss = loss * float("nan")
    return loss, {}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        fit(small_cfg(method="test-nan-in-epoch-2", epochs=3), out, progress=False)
    tensors, meta = read_checkpoint(out)
    assert meta["epoch"] == 1
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_training_learns(trained_run):
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_accuracy"] > 0.9
    assert rows[-1]["train"]["loss"] < rows[0]["train"]["loss"]


def test_checkpoint_errors(tmp_path, trained_run):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path)
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="not 'alexnet-mnist'"):
        load_model(trained_run, expect_model="alexnet-mnist")


def test_checkpoint_of_another_architecture_does_not_load(tmp_path, trained_run):
    from sgtlab.models import build_model
    from sgtlab.train.checkpoint import load_weights

    tensors, _ = read_checkpoint(trained_run)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_weights(build_model("alexnet-mnist"), tensors)


def test_cosine_and_step_schedules():
    from sgtlab.train.loop import lr_at

    cfg = small_cfg(epochs=4, lr=1.0, schedule="cosine")
    assert [round(lr_at(cfg, e), 4) for e in range(4)] == [1.0, 0.8536, 0.5, 0.1464]
    cfg = small_cfg(epochs=4, lr=1.0, schedule="step")
    assert [round(lr_at(cfg, e), 4) for e in range(4)] == [1.0, 1.0, 0.1, 0.01]
