"""The training loop: data, model, optimizer and a method; metrics per epoch in `metrics.jsonl`,
a checkpoint every epoch, `resume=True` continues where an interrupted run stopped and ends with
the same weights as an uninterrupted run (on CPU)."""
from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sgtlab.data import DATASETS, TensorLoader, dataset_info, load_dataset
from sgtlab.data.subsets import stratified_or_all
from sgtlab.device import resolve_device
from sgtlab.errors import CheckpointError, SgtlabError, SgtlabWarning, TrainingDiverged
from sgtlab.evaluate import accuracy
from sgtlab.experiments.provenance import provenance
from sgtlab.fast.graphs import graphed
from sgtlab.io import folder_lock, write_json_atomic, write_text_atomic
from sgtlab.models import build_model
from sgtlab.train import checkpoint as ckpt
from sgtlab.train.config import TrainConfig
from sgtlab.train.methods import METHODS, StepContext

METRICS = "metrics.jsonl"
CONFIG = "config.json"
PROVENANCE = "provenance.json"  # sgtlab, git commit, torch, device, threads, date, command of the (last) start
NAN_CHECK_EVERY = 25  # steps between finiteness checks (each one is a host sync)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":  # x0.1 at 50 % and 75 % of training
        return cfg.lr * 0.1 ** sum(epoch >= m for m in (cfg.epochs // 2, (3 * cfg.epochs) // 4))
    return cfg.lr


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise SgtlabError(f"unknown optimizer {cfg.optimizer!r}; choose one of: adam, sgd")


def make_model(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    info = dataset_info(cfg.dataset)
    arch = dict(model=cfg.model or info.default_model, in_channels=info.shape[0], num_classes=info.num_classes,
                mean=list(info.mean), std=list(info.std), dataset=cfg.dataset, input_size=list(info.shape[1:]))
    model = build_model(arch["model"], arch["in_channels"], arch["num_classes"], arch["mean"], arch["std"],
                        arch["input_size"])
    imports = plugin_imports()
    if imports:  # a later command on the run that lacks them says "add --import ..." (it never imports them)
        arch["imports"] = imports
    return model, arch


def plugin_imports() -> list[str]:
    """The --import modules of this process (plug-ins that may register the run's model, data or method)."""
    import os

    from sgtlab.plugins import ENV

    return [n for n in os.environ.get(ENV, "").split(",") if n]


def _absolute_data(cfg: TrainConfig) -> None:
    """The data's paths made absolute in place (`folder:imgs` -> `folder:/home/me/imgs`, --data-dir):
    a run read from another folder then finds the same images, not whatever a relative path finds."""
    cfg.dataset = DATASETS.absolute(cfg.dataset)
    if cfg.data_dir:
        cfg.data_dir = str(Path(cfg.data_dir).expanduser().resolve())


def read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    """Epoch records up to a checkpoint's epoch (lines written after it, by a crashed run, are dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a torn last line
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= upto_epoch:
            rows.append(row)
    return rows


def fit(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
        dist=None, tensorboard: bool = False) -> dict[str, Any]:
    """Train one run of a registered model on a registered data set into the folder `out`; return
    the last epoch's metrics.

    `dist` (optional) is a `sgtlab.distributed.DistContext` when running under torchrun. The run
    folder is locked (rank 0) while training, so two commands never train one run at once."""
    cfg.validate()
    # the data source and the model source; `train_model` is the loop (also behind `sgtlab.fit`)
    train = load_dataset(cfg.dataset, "train", cfg.data_dir, verify=cfg.verify).subset(cfg.train_subset)
    test = stratified_or_all(load_dataset(cfg.dataset, "test", cfg.data_dir, verify=cfg.verify), cfg.eval_subset)
    torch.manual_seed(cfg.seed)  # same seed -> same initial weights
    model, arch = make_model(cfg)
    return train_model(model, arch, train, test, cfg, out, resume=resume, progress=progress, dist=dist,
                       tensorboard=tensorboard)


def train_model(model: nn.Module, arch: dict[str, Any], train, test, cfg: TrainConfig, out: str | Path | None,
                *, resume: bool = False, progress: bool = True, dist=None, tensorboard: bool = False
                ) -> dict[str, Any]:
    """The training loop on given data (`TensorData`; `test` may be None) and a given model.
    `arch` goes into the checkpoint (how to rebuild the model). `out=None`: nothing is written.
    The run folder is locked (rank 0) while training, so two commands never train one run at once."""
    if cfg.random_labels:  # before any rank splits the data: every rank sees the same permutation
        from sgtlab.data.random_labels import with_random_labels

        train = with_random_labels(train, cfg.seed)
    if out is None or (dist is not None and dist.rank != 0):
        return _train(model, arch, train, test, cfg, out, resume, progress, dist, tensorboard)
    with folder_lock(out, "run folder"):
        return _train(model, arch, train, test, cfg, out, resume, progress, dist, tensorboard)


def _train(model, arch, train, test, cfg: TrainConfig, out, resume: bool, progress: bool, dist,
           tensorboard: bool) -> dict[str, Any]:
    from sgtlab.train.resolve import fill_defaults

    cfg = fill_defaults(cfg)  # config.json and the checkpoint say the values used (k: 0.5, not null)
    _absolute_data(cfg)  # and the data they name, from any folder
    if isinstance(arch.get("dataset"), str):
        arch = {**arch, "dataset": DATASETS.absolute(arch["dataset"])}
    out = Path(out) if out is not None else None
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    is_main = rank == 0
    device = dist.device if dist else resolve_device(cfg.device)
    if cfg.amp == "bf16" and device.type != "cuda":
        raise SgtlabError("--amp bf16 needs a CUDA device; CPU training runs in float32")
    method = METHODS.get(cfg.method)
    augment = None
    if cfg.augment:
        from sgtlab.data.augment import crop_flip as augment
    if tensorboard and out is None:
        raise SgtlabError("tensorboard logging writes into the run folder: give out=FOLDER too")
    if tensorboard:
        from sgtlab.tracking import require_tensorboard

        require_tensorboard()  # before any work
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    state = method.init_state(len(train), cfg.method_cfg, device) if method.init_state else {}

    start_epoch, history = 0, []
    ckpt_path = out / ckpt.CHECKPOINT if out is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        if not resume:
            raise SgtlabError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        tensors, meta = ckpt.read_checkpoint(ckpt_path)
        try:
            if isinstance(meta["config"].get("method_cfg"), dict):  # made before the eps warm-up: trained without
                meta["config"]["method_cfg"].setdefault("eps_warmup", 0.0)
            saved = fill_defaults(TrainConfig.from_dict(meta["config"]))  # runs that saved k: null
            _absolute_data(saved)  # runs that saved the paths as typed
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{ckpt_path} holds no usable training config ({type(e).__name__}); "
                                  f"delete it to start the run over") from None
        # may change on resume
        saved.epochs, saved.device, saved.amp, saved.cuda_graphs = cfg.epochs, cfg.device, cfg.amp, cfg.cuda_graphs
        saved.verify = cfg.verify
        if saved.to_dict() != cfg.to_dict():
            diff = sorted(k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v)
            raise CheckpointError(f"{out} was trained with other settings ({', '.join(diff)}); "
                                  f"use another --out or the same options")
        ckpt.load_weights(model, tensors, str(ckpt_path))
        loaded = ckpt.restore_training_state(tensors, meta, optimizer)
        state.update({k: v.to(device) for k, v in loaded.items()})
        start_epoch = ckpt.resume_epoch(meta, cfg.epochs, ckpt_path)  # refused when out of range
        history = read_metrics(out / METRICS, start_epoch)
    if is_main and out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / CONFIG, cfg.to_dict())
        write_json_atomic(out / PROVENANCE, provenance(device))
        if history or start_epoch == 0:
            write_text_atomic(out / METRICS, "".join(json.dumps(r) + "\n" for r in history))
    tracker = None
    if tensorboard and is_main:
        from sgtlab.tracking import Tracker

        tracker = Tracker(out)

    # the training forwards and, through `_shared.attack_model`, the methods' inner attacks; the
    # saliency passes keep `ctx.module` (their shared prefix runs its layers by hand)
    net = dist.wrap(model) if dist else graphed(model, device, cfg.cuda_graphs)
    if dist and cfg.cuda_graphs and is_main:
        warnings.warn("CUDA graphs not used: not with several processes (DDP); running the model as it is",
                      SgtlabWarning)
    loader = TensorLoader(train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=False, augment=augment,
                          device=device, rank=rank, world_size=world)
    amp_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.amp == "bf16" else nullcontext
    step = start_epoch * len(loader)
    total_steps = cfg.epochs * len(loader)  # the methods' schedules (eps warm-up) read it with the global step
    # DDP: a last global batch smaller than the number of ranks would leave a rank without samples
    # (and a NaN mean loss): every rank skips it (a choice; one process trains on it)
    skip_last = world > 1 and len(train) - (len(loader) - 1) * cfg.batch_size < world
    last_i = len(loader) - 1 - skip_last
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loader.set_epoch(epoch)
        if dist:
            # DDP: each rank its own random stream (dropout, mask fill, attack starts), a function of
            # (seed, epoch, rank), so ranks are not correlated and a resumed run repeats the same draws
            # (the checkpoint holds rank 0's RNG state only)
            from sgtlab.distributed import rank_seed

            torch.manual_seed(rank_seed(cfg.seed, epoch, rank))
            state_before = {k: v.clone() for k, v in state.items()}
        net.train()
        sums: dict[str, torch.Tensor] = {}
        n_steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs} {cfg.method}", leave=False,
                   disable=not (progress and is_main))
        for i, (x, y, idx) in enumerate(bar):
            if i > last_i:
                step += 1
                continue
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            weight = 1.0
            if world > 1:
                # DDP averages the ranks' gradients; with shares of unequal size (an odd last batch)
                # weight each rank's mean loss by its share, so the result is the global batch mean
                weight = x.shape[0] * world / min(cfg.batch_size, len(train) - i * cfg.batch_size)
            ctx = StepContext(idx=idx, epoch=epoch, step=step, state=state, module=model, total_steps=total_steps)
            with amp_ctx():
                loss, parts = method.fn(net, x, y, cfg.method_cfg, ctx)
            optimizer.zero_grad(set_to_none=True)
            (loss * weight if weight != 1.0 else loss).backward()
            optimizer.step()
            step += 1
            n_steps += 1
            for k, v in {"loss": loss.detach(), **parts}.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
            if (i + 1) % NAN_CHECK_EVERY == 0 or i == last_i:
                # under DDP the check is collective: every rank stops at the same step
                if not (dist.all_finite(sums["loss"]) if dist else torch.isfinite(sums["loss"])):
                    # say only what is true: a checkpoint exists only after a finished epoch
                    kept = (f"the last good checkpoint (epoch {epoch}) is kept in {out}" if epoch > 0 else
                            "no checkpoint was written (it diverged in the first epoch)")
                    kept = kept if out is not None else "nothing was saved (no run folder)"
                    raise TrainingDiverged(
                        f"the loss became {'non-finite' if dist else sums['loss'].item()} in epoch {epoch + 1} "
                        f"(step {step}); training stopped; {kept}. Lower --lr?")
                bar.set_postfix(loss=f"{sums['loss'].item() / (i + 1):.4f}")
        means = {k: v / max(n_steps, 1) for k, v in sums.items()}
        if dist:
            means = dist.mean(means)
            if state:  # each rank updated only its own samples' entries: merge before rank 0 saves
                dist.merge_state(state, state_before)
        test_acc = accuracy(model, test) if test is not None else None
        record = {"epoch": epoch + 1, "lr": lr, "train": {k: round(v.item(), 6) for k, v in means.items()},
                  "test_accuracy": test_acc, "seconds": round(time.perf_counter() - t0, 3)}
        if is_main and out is not None:
            # checkpoint first, then the metrics line: a crash in between only loses a log line
            ckpt.save_checkpoint(ckpt_path, model, {"config": cfg.to_dict(), "arch": arch, "epoch": epoch + 1,
                                                    "test_accuracy": test_acc}, optimizer, state)
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
        history.append(record)
        if tracker is not None:
            tracker.epoch(record)
        if progress and is_main:
            parts_txt = " ".join(f"{k} {v:.4f}" for k, v in record["train"].items())
            acc_txt = f"  test acc {test_acc:.4f}" if test_acc is not None else ""
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  {parts_txt}{acc_txt}  ({record['seconds']:.1f}s)")
    if tracker is not None:
        tracker.close()
    if dist:
        dist.barrier()
    if is_main and history:
        _say_if_at_chance(history[-1], arch, cfg, out)
    return history[-1] if history else {}


def _say_if_at_chance(record: dict[str, Any], arch: dict[str, Any], cfg: TrainConfig, out) -> None:
    """A run that ends at or below chance accuracy (1 / classes) says so (a warning; the report
    flags it too, `sgtlab.reporting.flags`): most often a budget or learning rate too large."""
    acc, classes = record.get("test_accuracy"), arch.get("num_classes")
    if acc is None or not classes or acc > 1 / classes:
        return
    eps = (f", train_eps {cfg.method_cfg.train_eps:.6g}" if "train_eps" in
           (_uses(cfg.method) or ()) else "")
    where = f" ({out})" if out is not None else ""
    warnings.warn(f"the run{where} ended at {acc:.1%} test accuracy, at or below chance (1/{classes} = "
                  f"{1 / classes:.1%}): it learned nothing; check the learning rate (lr {cfg.lr:g}){eps}, the "
                  f"epochs and the labels", SgtlabWarning, stacklevel=3)


def _uses(method: str):
    from sgtlab.train.resolve import method_options

    try:
        return method_options(method)
    except SgtlabError:
        return None
