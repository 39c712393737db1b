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
import time

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
# a step no loop reaches, so a broken loop fails a test instead of "interrupting" pytest: not None
# (a loop that lost its step counter), not -1 (a counter that counts down)
NO_CRASH = -10**9
CRASH_AT_STEP = [NO_CRASH]


@register_method("test-record")
def _record(model, x, y, cfg, ctx):
    """Test only: records the batch and the weights; loss 2 * sum(w) (+ 0 * the forward)."""
    m = ctx.module
    if ctx.step == CRASH_AT_STEP[0]:
        raise KeyboardInterrupt  # an interrupted run
    RECORD.append({"epoch": ctx.epoch, "step": ctx.step, "wrapped": model is not m, "x": x.clone(), "y": y.clone(), "idx": ctx.idx.clone(),
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



# -- the loop's contract: out=None, resume, metrics.jsonl, progress, ranks ------------------------------

def _cfg(**kw):
    return TrainConfig(**{"dataset": "test-rgb8", "method": "test-record", "batch_size": BATCH, "device": "cpu",
                          "seed": 0, "epochs": 2, "lr": 0.1, "momentum": 0.0, **kw})


def _weights(out):
    from sgtlab.train.checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(out)
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, meta


def _fresh_model(cfg):
    from sgtlab.train.loop import make_model

    torch.manual_seed(cfg.seed)
    return make_model(cfg)


def test_out_none_writes_nothing_and_trains_like_a_run_folder(tmp_path, monkeypatch):
    """train_model(out=None) leaves the working folder empty, returns the last epoch's record and
    ends with the weights of the same run trained into a folder."""
    from sgtlab.train.loop import train_model

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = _cfg()
    model, arch = _fresh_model(cfg)
    RECORD.clear()
    last = train_model(model, arch, _load("train"), _load("test"), cfg, None, progress=False)
    assert list(cwd.iterdir()) == []
    assert len(RECORD) == 2 * cfg.epochs and [r["epoch"] for r in RECORD] == [0, 0, 1, 1]
    assert last["epoch"] == 2 and last["lr"] == 0.1 and 0 <= last["test_accuracy"] <= 1
    fit(cfg, tmp_path / "run", progress=False)
    saved, _ = _weights(tmp_path / "run")
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {k: v for k, v in rows[-1].items() if k != "seconds"} == {k: v for k, v in last.items() if k != "seconds"}
    # no test data: no accuracy
    model, arch = _fresh_model(cfg)
    assert train_model(model, arch, _load("train"), None, cfg, None, progress=False)["test_accuracy"] is None


def test_an_epoch_of_one_step_logs_that_steps_loss(tmp_path):
    """The epoch's mean over one step is that step's loss 2 * sum(w), not half of it."""
    RECORD.clear()
    fit(_cfg(epochs=1, train_subset=BATCH), tmp_path / "run", progress=False)
    assert len(RECORD) == 1
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    want = 2 * sum(float(p.double().sum()) for p in RECORD[0]["w"])
    assert row["train"]["loss"] == pytest.approx(want, abs=1e-4) and abs(want) > 1e-2


def test_metrics_records_lr_mean_loss_steps_and_subset_accuracy(tmp_path):
    """One metrics.jsonl line per epoch: lr from the schedule, train loss = mean over the epoch's
    steps of the loss 2 * sum(w) (recorded weights), test accuracy of the final weights on
    eval_subset class-stratified test images (by hand); only the first train_subset images are trained on; the step
    counter runs on over epochs."""
    from sgtlab.data.subsets import stratified_indices
    from sgtlab.models import build_model

    RECORD.clear()
    cfg = _cfg(epochs=3, schedule="cosine", train_subset=10, eval_subset=5)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    fit(cfg, out, progress=False)
    elapsed = time.perf_counter() - t0
    rec = list(RECORD)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    from sgtlab.train.resolve import fill_defaults

    assert json.loads((out / "config.json").read_text()) == fill_defaults(cfg).to_dict()  # values written out
    assert not any(r["wrapped"] for r in rec)
    assert sorted({i for r in rec for i in r["idx"].tolist()}) == list(range(10))
    assert [r["step"] for r in rec] == list(range(6))
    for e, row in enumerate(rows):
        assert row["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * e / 3)) / 2)
        losses = [2 * sum(float(p.double().sum()) for p in r["w"]) for r in rec if r["epoch"] == e]
        assert len(losses) == 2 and row["train"]["loss"] == pytest.approx(sum(losses) / 2, abs=1e-4)
        assert isinstance(row["seconds"], float) and 0 <= row["seconds"] == round(row["seconds"], 3)  # in ms
        assert all(v == round(v, 6) for v in row["train"].values())  # logged to 6 decimals
    assert sum(r["seconds"] for r in rows) <= elapsed + 1e-3
    saved, meta = _weights(out)
    assert meta["epoch"] == 3 and meta["arch"]["dataset"] == "test-rgb8" and meta["arch"]["input_size"] == [8, 8]
    model = build_model("test-tiny-cnn", 3, 4, [0.5] * 3, [0.25] * 3)
    model.load_state_dict(saved)
    test = _load("test")
    idx = torch.from_numpy(stratified_indices(test.y, 5, seed=0))
    assert sorted(idx.tolist()) != list(range(5))  # not the first 5
    with torch.no_grad():
        acc = (model(test.x[idx]).argmax(1) == test.y[idx]).float().mean().item()
    assert rows[-1]["test_accuracy"] == pytest.approx(acc) and meta["test_accuracy"] == pytest.approx(acc)


def test_resume_ends_like_an_uninterrupted_run_and_refuses_other_settings(tmp_path):
    """A run stopped in epoch 3 and resumed to 3 epochs has the weights and metric lines of a
    3-epoch run (step lr); an existing folder without resume, or with other settings, is refused."""
    from sgtlab.errors import CheckpointError, SgtlabError

    full = tmp_path / "full"
    fit(_cfg(epochs=4, schedule="step", momentum=0.9), full, progress=False)
    part = tmp_path / "part"
    CRASH_AT_STEP[0] = 5  # in the third epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(_cfg(epochs=4, schedule="step", momentum=0.9), part, progress=False)
    finally:
        CRASH_AT_STEP[0] = NO_CRASH
    # a torn line and a line of a later epoch (written after the checkpoint by a crashed run)
    with open(part / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "lr": 1}\n{"epo')
    with pytest.raises(SgtlabError, match="already holds a run"):
        fit(_cfg(epochs=4, schedule="step", momentum=0.9), part, progress=False)
    with pytest.raises(CheckpointError, match=r"other settings \(lr\)"):
        fit(_cfg(epochs=4, schedule="step", momentum=0.9, lr=0.2), part, resume=True, progress=False)
    RECORD.clear()
    fit(_cfg(epochs=4, schedule="step", momentum=0.9), part, resume=True, progress=False)
    assert [r["epoch"] for r in RECORD] == [2, 2, 3, 3] and [r["step"] for r in RECORD] == list(range(4, 8))
    a, _ = _weights(full)
    b, meta = _weights(part)
    assert meta["epoch"] == 4 and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows_a = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_b] == [1, 2, 3, 4] and [r["lr"] for r in rows_b] == [r["lr"] for r in rows_a]
    assert [r["train"]["loss"] for r in rows_b] == pytest.approx([r["train"]["loss"] for r in rows_a], abs=1e-4)


def test_read_metrics_keeps_whole_records_up_to_the_checkpoint_epoch(tmp_path):
    from sgtlab.train.loop import read_metrics

    assert read_metrics(tmp_path / "missing.jsonl", 3) == []
    p = tmp_path / "m.jsonl"
    p.write_text('{"epoch": 1}\n{"epo\n[1, 2]\n{"epoch": "2"}\n{"epoch": 2}\n{"epoch": 3}\n')
    assert read_metrics(p, 2) == [{"epoch": 1}, {"epoch": 2}]


def test_progress_prints_one_line_per_epoch_and_default_run_has_no_tensorboard(tmp_path, capsys):
    """progress (the default) prints an epoch summary per epoch to stdout; progress=False nothing;
    tensorboard is off by default (the folder holds no event files)."""
    from sgtlab.train.loop import train_model

    fit(_cfg(), tmp_path / "a")
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "epoch 2/2" in printed
    for run in ("a",):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for r in rows:
            assert f"loss {r['train']['loss']:.4f}" in printed and f"test acc {r['test_accuracy']:.4f}" in printed
    fit(_cfg(), tmp_path / "b", progress=False)
    assert capsys.readouterr() == ("", "")  # no summary, no progress bar
    model, arch = _fresh_model(_cfg())
    train_model(model, arch, _load("train"), None, _cfg(epochs=1), tmp_path / "c")
    assert "epoch 1/1" in capsys.readouterr().out
    for run in ("a", "b", "c"):
        assert not any("tfevents" in f.name for f in (tmp_path / run).rglob("*")), run


def test_random_labels_are_the_seeded_permutation(tmp_path):
    """random_labels trains on the labels permuted by a generator seeded with --seed (the
    data set's own labels otherwise), the same for every epoch."""
    data = _load()
    rec, _ = train(tmp_path / "plain", epochs=1)
    assert all(torch.equal(r["y"], data.y[r["idx"]]) for r in rec)
    for seed in (0, 3):
        RECORD.clear()
        fit(_cfg(random_labels=True, seed=seed), tmp_path / f"rl{seed}", progress=False)
        perm = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(seed))
        assert all(torch.equal(r["y"], data.y[perm][r["idx"]]) for r in RECORD), seed


def test_data_dir_and_verify_reach_the_loader(tmp_path):
    seen = []

    def load(split="train", data_dir=None, download=True, verify=True):
        seen.append((split, data_dir, verify))
        return _load(split)

    register_dataset(DatasetInfo("test-rgb8-dir", load, (3, 8, 8), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                                 "test-tiny-cnn", "test only"))
    fit(_cfg(dataset="test-rgb8-dir", data_dir=str(tmp_path / "d"), verify=False, epochs=1), tmp_path / "r",
        progress=False)
    assert sorted(seen) == [("test", str(tmp_path / "d"), False), ("train", str(tmp_path / "d"), False)]
    seen.clear()  # verify (the default): the loader's own default, True
    fit(_cfg(dataset="test-rgb8-dir", epochs=1), tmp_path / "r2", progress=False)
    assert sorted(seen) == [("test", None, True), ("train", None, True)]


class _FakeDist:
    """The DistContext surface the loop uses, for one rank of `world` (no process group)."""

    def __init__(self, rank, world):
        self.rank, self.world_size, self.device = rank, world, torch.device("cpu")

    def wrap(self, model):
        return nn.Sequential(model)  # stands for DistributedDataParallel(model)

    def all_finite(self, value):
        return bool(torch.isfinite(value).all())

    def mean(self, values):
        return values

    def merge_state(self, state, before):
        self.merged = getattr(self, "merged", []) + [(state, before)]

    def barrier(self):
        pass


@pytest.mark.parametrize("rank", [0, 1])
def test_ranks_weight_unequal_last_shares_and_only_rank0_writes(tmp_path, rank):
    """Under DDP (gradients averaged over ranks) a rank's mean loss is weighted by
    share * world / global batch, so the sum is the global batch mean: 11 images, global batch 6,
    2 ranks: shares 3, 3 then 3 / 2 of 5 -> weights 1, 1.2 / 0.8 (loss 2 sum(w): step -lr 2 weight).
    Only rank 0 writes the folder."""
    from sgtlab.train.loop import train_model

    cfg = _cfg(epochs=1)
    model, arch = _fresh_model(cfg)
    RECORD.clear()
    out = tmp_path / "run"
    train_model(model, arch, _load().subset(11), None, cfg, out, progress=False, dist=_FakeDist(rank, 2))
    assert out.exists() == (rank == 0)
    rec = list(RECORD)
    assert all(r["wrapped"] for r in rec)
    assert [len(r["idx"]) for r in rec] == [3, 3 if rank == 0 else 2]
    after = [r["w"] for r in rec[1:]] + [[p.detach() for p in model.parameters()]]
    for r, w1 in zip(rec, after):
        weight = len(r["idx"]) * 2 / (6 if r["step"] == 0 else 5)
        for p0, p1 in zip(r["w"], w1):
            assert torch.allclose(p1, p0 - 0.1 * 2 * weight, atol=1e-6)


def test_a_last_global_batch_smaller_than_the_ranks_is_skipped(tmp_path):
    """7 images, global batch 6, 2 ranks: the last global batch (1 image) would leave rank 1
    empty: both ranks skip it; the step counter still counts it."""
    from sgtlab.train.loop import train_model

    cfg = _cfg(epochs=2)
    for rank in (0, 1):
        model, arch = _fresh_model(cfg)
        RECORD.clear()
        train_model(model, arch, _load().subset(7), None, cfg, None, progress=False, dist=_FakeDist(rank, 2))
        assert [(r["epoch"], r["step"], len(r["idx"])) for r in RECORD] == [(0, 0, 3), (1, 2, 3)]


@register_method("test-nan")
def _nan_in_second_epoch(model, x, y, cfg, ctx):
    m = ctx.module
    loss = 2 * sum(p.sum() for p in m.parameters()) + 0 * model(x).sum()
    return (loss * float("nan") if ctx.epoch == 1 and ctx.step == 3 else loss), {}


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    from sgtlab.errors import TrainingDiverged

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="epoch 2") as err:
        fit(_cfg(method="test-nan", epochs=3), out, progress=False)
    # the message says only what is true: which checkpoint is kept, or that none was written
    assert f"the last good checkpoint (epoch 1) is kept in {out}" in str(err.value)
    _, meta = _weights(out)
    assert meta["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    with pytest.raises(TrainingDiverged, match="epoch 1") as err:
        fit(_cfg(method="test-nan-always", epochs=2), tmp_path / "first", progress=False)
    assert "no checkpoint was written (it diverged in the first epoch)" in str(err.value)
    assert not (tmp_path / "first" / "checkpoint.safetensors").exists()



def test_bf16_on_cpu_and_tensorboard_without_a_folder_are_refused_and_tensorboard_logs(tmp_path):
    from sgtlab.errors import SgtlabError
    from sgtlab.train.loop import train_model

    model, arch = _fresh_model(_cfg())
    with pytest.raises(SgtlabError, match="CUDA"):
        train_model(model, arch, _load(), None, _cfg(amp="bf16"), None, progress=False)
    with pytest.raises(SgtlabError, match="run folder"):
        train_model(model, arch, _load(), None, _cfg(), None, progress=False, tensorboard=True)
    assert not (tmp_path / "run").exists()
    fit(_cfg(epochs=1), tmp_path / "run", progress=False, tensorboard=True)
    assert any("tfevents" in f.name for f in (tmp_path / "run" / "tensorboard").iterdir())


INIT_CFGS = []


def _init_seen(n, cfg, device):
    INIT_CFGS.append(cfg)
    return {"seen": torch.zeros(n, device=device)}


STEP_CFGS: list = []


@register_method("test-state", init_state=_init_seen)
def _count_visits(model, x, y, cfg, ctx):
    """Test only: per-sample state counts the visits of each training image."""
    STEP_CFGS.append(cfg)
    assert ctx.state["seen"].shape == (N_TRAIN,)
    ctx.state["seen"][ctx.idx] += 1
    return 2 * sum(p.sum() for p in ctx.module.parameters()) + 0 * model(x).sum(), {}


def test_method_state_is_per_sample_checkpointed_and_resumed(tmp_path):
    """A method's state (one entry per training image) sees each image once per epoch, is saved
    with the checkpoint and restored on resume (a resumed run ends with the full run's tensors)."""
    from sgtlab.train.checkpoint import read_checkpoint

    INIT_CFGS.clear(), STEP_CFGS.clear()
    fit(_cfg(method="test-state", epochs=3), tmp_path / "full", progress=False)
    own = _cfg(method="test-state", epochs=3).method_cfg  # the method's own settings, at set-up and each step
    assert own is not None and INIT_CFGS == [own] and len(STEP_CFGS) > 0 and all(c == own for c in STEP_CFGS)
    fit(_cfg(method="test-state", epochs=2), tmp_path / "part", progress=False)
    fit(_cfg(method="test-state", epochs=3), tmp_path / "part", resume=True, progress=False)
    a, _ = read_checkpoint(tmp_path / "full")
    b, _ = read_checkpoint(tmp_path / "part")
    seen = [k for k in a if "seen" in k]
    assert len(seen) == 1 and torch.equal(a[seen[0]], torch.full((N_TRAIN,), 3.0))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_every_rank_refuses_or_resumes_an_existing_run_folder(tmp_path):
    """Rank 1 (which writes nothing) still reads the run folder: it refuses a finished run
    without resume and, with resume, starts from the checkpoint's weights (1 of 1 epochs: no step) and returns the stored last record."""
    from sgtlab.errors import SgtlabError
    from sgtlab.train.loop import train_model

    cfg = _cfg(epochs=1)
    out = tmp_path / "run"
    model, arch = _fresh_model(cfg)
    train_model(model, arch, _load(), None, cfg, out, progress=False, dist=_FakeDist(0, 2))
    saved, _ = _weights(out)
    model, arch = _fresh_model(cfg)
    with pytest.raises(SgtlabError, match="already holds a run"):
        train_model(model, arch, _load(), None, cfg, out, progress=False, dist=_FakeDist(1, 2))
    RECORD.clear()
    last = train_model(model, arch, _load(), None, cfg, out, resume=True, progress=False, dist=_FakeDist(1, 2))
    assert last == json.loads((out / "metrics.jsonl").read_text())  # the run's record, read back
    assert RECORD == [] and all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    (out / "metrics.jsonl").unlink()  # a finished run whose metric lines were lost: nothing to run, no record
    assert train_model(model, arch, _load(), None, cfg, out, resume=True, progress=False, dist=_FakeDist(1, 2)) == {}



@register_model("test-sized")
def _sized(in_channels=3, num_classes=4, input_size=None):
    """Test only: a linear model whose size depends on the image size."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size[0] * input_size[1], num_classes))


def test_make_model_builds_for_the_data_sets_image_size_and_fit_passes_dist(tmp_path):
    """The model gets the data set's channels, classes and image size (H, W); arch records them.
    fit hands `dist` to the loop: a rank other than 0 writes nothing."""
    from sgtlab.train.loop import make_model

    model, arch = make_model(_cfg(model="test-sized"))
    assert model.body[1].in_features == 3 * 8 * 8 and model.body[1].out_features == 4
    assert arch == dict(model="test-sized", in_channels=3, num_classes=4, mean=[0.5] * 3, std=[0.25] * 3,
                        dataset="test-rgb8", input_size=[8, 8])
    RECORD.clear()
    fit(_cfg(epochs=1), tmp_path / "r1", progress=False, dist=_FakeDist(1, 2))
    assert not (tmp_path / "r1").exists() and [len(r["idx"]) for r in RECORD] == [3, 3]



def test_a_fresh_run_starts_a_new_metrics_log(tmp_path):
    """A folder without a checkpoint (a run that crashed in its first epoch) but with old metric
    lines: the new run's metrics.jsonl holds its own epochs only."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1, "lr": 9.0}\n')
    fit(_cfg(), out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["lr"]) for r in rows] == [(1, 0.1), (2, 0.1)]



@register_method("test-nan-always")
def _nan_always(model, x, y, cfg, ctx):
    RECORD.append({"step": ctx.step})
    return 0 * model(x).sum() + float("nan"), {}


def test_the_finiteness_check_runs_every_nan_check_every_steps(tmp_path):
    """A loss that is NaN from the first step stops training at the first check: after
    NAN_CHECK_EVERY steps in a long epoch (40 one-image batches), at the epoch's end in a short one."""
    from sgtlab.errors import TrainingDiverged
    from sgtlab.train.loop import NAN_CHECK_EVERY, train_model

    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g), "test-rgb8")
    for n, steps_done in ((40, NAN_CHECK_EVERY), (12, 12)):
        model, arch = _fresh_model(_cfg())
        RECORD.clear()
        with pytest.raises(TrainingDiverged, match="nothing was saved"):
            train_model(model, arch, data.subset(n), None, _cfg(method="test-nan-always", batch_size=1), None,
                        progress=False)
        assert len(RECORD) == steps_done


def test_rank_1_does_not_take_rank_0s_folder_lock_and_out_none_prints_progress(tmp_path, capsys):
    """Only rank 0 locks the run folder: rank 1 trains while the folder is locked (by rank 0 under
    torchrun). Without a folder the summary is still printed by default."""
    from sgtlab.errors import SgtlabError
    from sgtlab.io import folder_lock
    from sgtlab.train.loop import train_model

    out = tmp_path / "run"
    with folder_lock(out, "run folder"):
        model, arch = _fresh_model(_cfg(epochs=1))
        assert train_model(model, arch, _load(), None, _cfg(epochs=1), out, progress=False,
                           dist=_FakeDist(1, 2))["epoch"] == 1
        with pytest.raises(SgtlabError, match="run folder"):  # rank 0 itself: refused while another holds it
            fit(_cfg(epochs=1), out, progress=False)
    capsys.readouterr()
    model, arch = _fresh_model(_cfg(epochs=1))
    train_model(model, arch, _load(), None, _cfg(epochs=1), None)
    assert "epoch 1/1" in capsys.readouterr().out


def test_batches_are_reshuffled_each_epoch_from_the_seed(tmp_path):
    """Every epoch visits each image once in a shuffled order, a new one each epoch, drawn from
    --seed (another seed: another order; the same seed: the same)."""
    def orders(seed, name):
        RECORD.clear()
        fit(_cfg(seed=seed, epochs=2), tmp_path / name, progress=False)
        return [torch.cat([r["idx"] for r in RECORD if r["epoch"] == e]).tolist() for e in (0, 1)]

    a = orders(0, "a")
    assert all(sorted(o) == list(range(N_TRAIN)) for o in a)
    assert a[0] != list(range(N_TRAIN)) and a[0] != a[1]
    assert orders(3, "b") != a and orders(0, "c") == a



def test_ddp_last_batch_of_one_image_per_rank_is_trained_and_state_merge_gets_the_epoch_start(tmp_path):
    """8 images, global batch 6, 2 ranks: the last global batch (2 images) gives each rank one, so it
    is trained. A method's state is merged at each epoch's end with a copy of its value at the start."""
    from sgtlab.train.loop import train_model

    cfg = _cfg(epochs=1)
    model, arch = _fresh_model(cfg)
    RECORD.clear()
    train_model(model, arch, _load().subset(8), None, cfg, None, progress=False, dist=_FakeDist(1, 2))
    assert [len(r["idx"]) for r in RECORD] == [3, 1]
    dist = _FakeDist(0, 2)
    cfg = _cfg(method="test-state", epochs=2)
    model, arch = _fresh_model(cfg)
    train_model(model, arch, _load(), None, cfg, None, progress=False, dist=dist)
    assert len(dist.merged) == 2
    for e, (state, before) in enumerate(dist.merged):  # rank 0 visits 3 + 3 images per epoch
        assert before["seen"] is not state["seen"] and before["seen"].sum() == 6 * e


def test_under_ddp_the_finiteness_check_is_collective(tmp_path):
    """Under DDP every rank stops when any rank's loss is non-finite (`dist.all_finite` is a
    collective): a rank whose own loss is finite stops too when another rank's is not."""
    from sgtlab.errors import TrainingDiverged
    from sgtlab.train.loop import train_model

    class OtherRankDiverged(_FakeDist):
        def all_finite(self, value):
            return False  # another rank saw NaN

    model, arch = _fresh_model(_cfg(epochs=1))
    RECORD.clear()
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train_model(model, arch, _load(), None, _cfg(epochs=1), None, progress=False, dist=OtherRankDiverged(1, 2))
    assert len(RECORD) >= 1 and all(torch.isfinite(torch.stack([p.sum() for p in r["w"]])).all() for r in RECORD)


@pytest.mark.parametrize("rank", [0, 1])
def test_cuda_graphs_asked_for_under_ddp_are_refused_once_with_a_warning(rank):
    """Under DDP the model is DDP's (not graphed) and rank 0 alone says so; without the option no
    warning."""
    import warnings as w

    from sgtlab.errors import SgtlabWarning
    from sgtlab.train.loop import train_model

    for graphs in (True, False):
        cfg = _cfg(epochs=1, cuda_graphs=graphs)
        model, arch = _fresh_model(cfg)
        RECORD.clear()
        with w.catch_warnings(record=True) as seen:
            w.simplefilter("always")
            train_model(model, arch, _load(), None, cfg, None, progress=False, dist=_FakeDist(rank, 2))
        said = [str(x.message) for x in seen if issubclass(x.category, SgtlabWarning)]
        assert said == (["CUDA graphs not used: not with several processes (DDP); running the model as it is"]
                        if graphs and rank == 0 else [])
        assert RECORD and all(r["wrapped"] for r in RECORD)


def test_cuda_graphs_on_a_cpu_train_the_plain_model_and_may_change_on_resume(tmp_path):
    """On a CPU the option changes nothing but a warning (the step gets the model itself), and like
    the device it may differ when a run is resumed."""
    from sgtlab.errors import SgtlabWarning

    with pytest.warns(SgtlabWarning, match="not on a CUDA device"):
        rec, _ = train(tmp_path, epochs=1, cuda_graphs=True)
    assert rec and not any(r["wrapped"] for r in rec)
    RECORD.clear()
    fit(_cfg(epochs=2, cuda_graphs=False), tmp_path / "run", resume=True, progress=False)
    assert [r["epoch"] for r in RECORD] == [1, 1]
