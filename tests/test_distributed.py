"""`sgtlab train` under torchrun (2 processes, gloo on CPU) against one process.

Why a test-only model: the registry's models all have dropout (sgt-cnn, alexnet-mnist) or
batch-norm (resnet18-cifar). Dropout masks are drawn per rank, and batch-norm statistics are taken
per rank's share, so with those models 2 processes cannot end with one process's weights. The
small convolutional net below has neither, so any difference beyond float rounding is a bug of
the distributed path (sharding, gradient averaging, the weighting of an odd last batch, resume).
For SGT the masked pixels' random fill is drawn per rank too, so the SGT run uses a fixed fill
range of width 1e-7: the fill differs by less than that, the rest (saliency pass on the
un-wrapped module, top-k mask, two forwards through DDP, KL) is exercised as is.

This file is also the entry script torchrun launches: run as a program it registers the test
model and method, then runs the `sgtlab` command line (the same `main` as `python -m sgtlab`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.models import MODELS, register_model
from sgtlab.train import METHODS, MethodConfig, TrainConfig, fit, register_method
from sgtlab.train.checkpoint import read_checkpoint

MODEL = "test-ddp-cnn"
COUNTING = "test-ddp-count"

if MODEL not in MODELS:
    @register_model(MODEL)
    def _plain_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
        """No dropout, no batch-norm: per-rank randomness and statistics do not enter the weights."""
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(8 * 13 * 13, num_classes))

if COUNTING not in METHODS:
    def _count_init(n, cfg, device):
        return {"seen": torch.zeros(n, device=device)}

    @register_method(COUNTING, init_state=_count_init)
    def _counting_st(model, x, y, cfg, ctx):
        """Test only: ST, plus per-sample state (as SCAAT keeps): how often each sample was trained on."""
        ctx.state["seen"].index_add_(0, ctx.idx, torch.ones_like(ctx.idx, dtype=torch.float32))
        return METHODS.get("st").fn(model, x, y, cfg, ctx)

NAN_ON_RANK1 = "test-ddp-nan-on-rank1"
if NAN_ON_RANK1 not in METHODS:
    @register_method(NAN_ON_RANK1)
    def _nan_on_rank1(model, x, y, cfg, ctx):
        """Test only: ST whose loss becomes NaN on rank 1 only, in the last step of epoch 2 (step 7 with
        4 steps an epoch), the step of a finiteness check: rank 0's own losses are all finite then."""
        import torch.distributed as torch_dist

        loss = F.cross_entropy(model(x), y)
        if ctx.step == 7 and torch_dist.is_initialized() and torch_dist.get_rank() == 1:
            loss = loss * float("nan")
        return loss, {}

# 251 images, global batch 64: the last batch of 59 splits 30/29 over two ranks (exercises the
# weighting of unequal shares)
BASE = dict(dataset="mnist5k", model=MODEL, epochs=2, batch_size=64, lr=0.05, seed=3, device="cpu",
            train_subset=251, eval_subset=100)
SGT_OPTS = dict(k=0.5, mask_fill="fixed", mask_low=0.0, mask_high=1e-7)
ATOL = 1e-5  # float rounding of the 2-rank gradient average after 8 SGD steps (measured: ~2e-7)


def cli_args(cfg: dict, mcfg: dict) -> list[str]:
    args = []
    for k, v in {**cfg, **mcfg}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def torchrun(out: Path, cfg: dict, mcfg: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, "train", "--out", str(out), "--no-progress", *cli_args(cfg, mcfg), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def one_process(out: Path, cfg: dict, mcfg: dict) -> Path:
    # One thread, as each torchrun rank has (OMP_NUM_THREADS=1): on some CPUs (AVX-512) the thread
    # count changes the order of float sums inside a convolution, and 8 SGD steps amplify that
    # rounding to ~1e-5 even between two single-process runs, which would hide a real DDP bug.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(TrainConfig(**cfg, method_cfg=MethodConfig(**mcfg)), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(run)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sgt_two_processes_end_with_the_weights_of_one(tmp_path):
    method = "sgt"
    if method not in METHODS:
        pytest.skip(f"method {method} not built yet")
    cfg, mcfg = {**BASE, "method": method}, SGT_OPTS
    r = torchrun(tmp_path / "ddp", cfg, mcfg, "--json")
    ref = one_process(tmp_path / "one", cfg, mcfg)
    diff = max_diff(weights(tmp_path / "ddp"), weights(ref))
    assert diff < ATOL, f"2 ranks vs 1 process: max |dw| = {diff:.2e}"
    # the tolerance tells runs apart: one process with each rank's batch (32) ends elsewhere
    other = one_process(tmp_path / "half", {**cfg, "batch_size": 32}, mcfg)
    assert max_diff(weights(other), weights(ref)) > 100 * ATOL
    # only rank 0 wrote: one checkpoint, one metrics line per epoch, one JSON line on stdout
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["checkpoint.safetensors", "config.json",
                                                                    "metrics.jsonl", "provenance.json"]
    assert epochs_logged(tmp_path / "ddp") == [1, 2]
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 2
    assert list(tmp_path.glob("**/*.tmp*")) == []


def test_st_resumed_under_torchrun_ends_with_the_weights_of_one_process(tmp_path):
    """ST for 1 epoch on 2 ranks, then `--resume` to epoch 2 on 2 ranks: the weights of an
    uninterrupted single-process ST run; one checkpoint; and the per-sample state that each rank
    updated only for its own samples was merged (every sample counted once per epoch) before rank 0
    saved it. (The method is ST plus a counter that does not touch the loss.)"""
    cfg = {**BASE, "method": COUNTING}
    out = tmp_path / "ddp"
    torchrun(out, {**cfg, "epochs": 1}, {})
    tensors, meta = read_checkpoint(out)
    assert meta["epoch"] == 1 and torch.equal(tensors["method.seen"], torch.ones(251))
    torchrun(out, cfg, {}, "--resume")
    tensors, meta = read_checkpoint(out)
    assert meta["epoch"] == 2 and torch.equal(tensors["method.seen"], torch.full((251,), 2.0))
    assert epochs_logged(out) == [1, 2]
    ref = one_process(tmp_path / "one", {**cfg, "method": "st"}, {})
    diff = max_diff(weights(out), weights(ref))
    assert diff < ATOL, f"resumed 2 ranks vs 1 process: max |dw| = {diff:.2e}"
    other = one_process(tmp_path / "half", {**cfg, "method": "st", "batch_size": 32}, {})
    assert max_diff(weights(other), weights(ref)) > 100 * ATOL
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.safetensors", "config.json", "metrics.jsonl",
                                                     "provenance.json"]


def _merge_on_rank(rank: int, init: str, out: str) -> None:
    import torch.distributed as torch_dist

    from sgtlab.distributed import DistContext

    torch_dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        before = {"q": torch.arange(6, dtype=torch.float32) / 10, "steps": torch.tensor([0]),
                  "flag": torch.zeros(6, dtype=torch.bool), "synced": torch.zeros(3), "clash": torch.zeros(1)}
        state = {k: v.clone() for k, v in before.items()}
        mine = torch.arange(rank, 6, 2)       # this rank's samples
        state["q"][mine] = 0.7 + 0.01 * mine  # changed on one rank only (and q[4] set to its old value)
        state["q"][4] = before["q"][4] if rank == 0 else state["q"][4]
        state["steps"] += 3                   # changed identically on both ranks
        state["flag"][mine[:1]] = True
        state["synced"] += torch.tensor(1 / 3)  # state a method already keeps equal on all ranks: exact
        state["clash"] += 1.0 + 2 * rank      # changed differently on both (no method should): the mean
        DistContext(rank, 2, torch.device("cpu")).merge_state(state, before)
        torch.save(state, f"{out}/rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_merge_state_takes_each_entry_from_the_rank_that_changed_it(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children reuse this process's imports (a spawned interpreter would re-import torch)
    mp.start_processes(_merge_on_rank, args=(f"file://{tmp_path}/store", str(tmp_path)), nprocs=2,
                       start_method="fork")
    expect_q = torch.tensor([0.70, 0.71, 0.72, 0.73, 0.4, 0.75])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(got["q"], expect_q, rtol=0, atol=1e-7) and got["q"].dtype == torch.float32
        assert torch.equal(got["steps"], torch.tensor([3]))
        assert torch.equal(got["flag"], torch.tensor([True, True, False, False, False, False]))
        assert torch.equal(got["synced"], torch.full((3,), 1 / 3)) and torch.equal(got["clash"], torch.tensor([2.0]))


def _fit_on_rank(rank: int, init: str, cfg: dict, out: str) -> None:
    import torch.distributed as torch_dist

    from sgtlab.distributed import DistContext
    from sgtlab.errors import TrainingDiverged

    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        fit(TrainConfig(**cfg), out, progress=False, dist=DistContext(rank, 2, torch.device("cpu")))
    except TrainingDiverged as e:
        Path(out, f"diverged-rank{rank}").write_text(str(e))  # the test reads which ranks stopped
    finally:
        torch_dist.destroy_process_group()


def test_a_last_batch_smaller_than_the_ranks_is_skipped_on_every_rank(tmp_path):
    """129 images, batch 64: the last global batch holds 1 image, so one rank would get none (a NaN
    mean loss, or ranks out of step). Both ranks skip it: training stays finite and in step."""
    import torch.multiprocessing as mp

    cfg = {**BASE, "method": COUNTING, "train_subset": 129}
    mp.start_processes(_fit_on_rank, args=(f"file://{tmp_path}/store", cfg, str(tmp_path / "run")), nprocs=2,
                       start_method="fork")  # fork: no re-import of torch; the test model is registered
    tensors, meta = read_checkpoint(tmp_path / "run")
    assert meta["epoch"] == 2 and epochs_logged(tmp_path / "run") == [1, 2]
    assert tensors["method.seen"].sum() == 2 * 128  # each epoch every image but the last one of the order
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    cfg = {**BASE, "method": NAN_ON_RANK1, "epochs": 3}
    out = tmp_path / "run"
    mp.start_processes(_fit_on_rank, args=(f"file://{tmp_path}/store", cfg, str(out)), nprocs=2, start_method="fork")
    msgs = [(out / f"diverged-rank{r}").read_text() for r in (0, 1)]  # both stopped (none left waiting)
    assert all("epoch 2" in m for m in msgs)
    tensors, meta = read_checkpoint(out)
    assert meta["epoch"] == 1 and epochs_logged(out) == [1]
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


if __name__ == "__main__":  # the program torchrun starts on each rank
    from sgtlab.cli import main

    raise SystemExit(main(sys.argv[1:]))
