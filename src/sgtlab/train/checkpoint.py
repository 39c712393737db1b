"""Checkpoints: one safetensors file per run holding the weights (`model.*`), and, for resuming,
the optimizer tensors (`optim.*`), RNG states (`rng.*`) and method state (`method.*`); everything
else (config, epoch, optimizer hyper-parameters) is JSON in the file's metadata. No pickle anywhere,
so loading a checkpoint never runs code. Written atomically: a crash keeps the previous one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sgtlab.errors import CheckpointError, SgtlabError
from sgtlab.io import WriteError, atomic_path, write_failed
from sgtlab.validate import MAX_CLASSES, check_plain, one_line

CHECKPOINT = "checkpoint.safetensors"
META_KEY = "sgtlab"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
        if p.is_symlink():  # in a run folder: sgtlab writes it there, and does not follow links it writes
            raise CheckpointError(f"{p} is a symbolic link; sgtlab does not follow links in run folders (it would "
                                  f"overwrite the file it points to on --resume): remove the link, or give the "
                                  f"checkpoint file itself")
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected a run folder holding {CHECKPOINT}, or the file)")
    return p


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, state_meta = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                state_meta.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": state_meta}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None,
                    method_state: dict[str, torch.Tensor] | None = None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda{i}"] = s
    for k, v in (method_state or {}).items():
        tensors[f"method.{k}"] = v.detach().cpu().contiguous()
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    except SafetensorError as e:  # safetensors reports a full disk or a refused write this way
        raise WriteError(write_failed(Path(path), one_line(e))) from None


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = resolve_checkpoint(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RecursionError, MemoryError) as e:
        raise CheckpointError(f"{path} is not a readable sgtlab checkpoint ({one_line(e)[:200]})") from None
    check_meta(meta, path)
    return tensors, meta


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's checked metadata alone (config, arch, epoch), without reading its tensors."""
    path = resolve_checkpoint(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RecursionError, MemoryError) as e:
        raise CheckpointError(f"{path} is not a readable sgtlab checkpoint ({one_line(e)[:200]})") from None
    return check_meta(meta, path)


MAX_META_VALUES = 200_000
MAX_CHANNELS = 64
MAX_INPUT_SIZE = 1024  # pixels a side: the largest image folders decode (folder: size=)
MAX_EPOCHS = 100_000


def check_meta(meta: Any, path: str | Path) -> dict[str, Any]:
    """The metadata a checkpoint must hold, with sane types and sizes: a damaged or hand-made one
    is a CheckpointError, never a crash (or a model of a billion channels) later on."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path} has damaged metadata ({what}); it is not a usable sgtlab checkpoint: "
                               f"delete it (a run then starts over) or use another one")

    try:
        check_plain(meta, "metadata", max_nodes=MAX_META_VALUES, max_depth=8)
    except SgtlabError as e:
        raise bad(str(e)[:200]) from None
    if not isinstance(meta, dict):
        raise bad(f"a {type(meta).__name__}, not a mapping")
    arch = meta.get("arch")
    if not isinstance(arch, dict):
        raise bad("no 'arch' mapping")
    if not isinstance(arch.get("model"), str):
        raise bad("arch.model is not a name")
    if arch.get("dataset") is not None and not isinstance(arch["dataset"], str):
        raise bad("arch.dataset is not a name")
    for key, hi in (("in_channels", MAX_CHANNELS), ("num_classes", MAX_CLASSES)):
        v = arch.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            raise bad(f"arch.{key} must be an integer in 1..{hi}, got {v!r}"[:120])
    # a model given as an object to sgtlab.fit normalises inside itself: no mean/std recorded
    for key in () if arch.get("user_model") is True else ("mean", "std"):
        v = arch.get(key)
        if (not isinstance(v, list) or len(v) != arch["in_channels"]
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            raise bad(f"arch.{key} must be {arch['in_channels']} numbers, got {v!r}"[:120])
    if arch.get("user_model") is not True and not all(x > 0 for x in arch["std"]):
        raise bad("arch.std must be > 0")
    size = arch.get("input_size")  # absent in checkpoints older than image folders
    if size is not None and (not isinstance(size, list) or len(size) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIZE for v in size)):
        raise bad(f"arch.input_size must be [H, W] with 1..{MAX_INPUT_SIZE}, got {size!r}"[:120])
    if "config" in meta and not isinstance(meta["config"], dict):
        raise bad("config is not a mapping")
    if "epoch" in meta:
        e = meta["epoch"]
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= MAX_EPOCHS:
            raise bad(f"epoch must be an integer in 0..{MAX_EPOCHS}, got {e!r}"[:120])
    opt = meta.get("optimizer")
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get("param_groups"), list)
                                and all(isinstance(g, dict) for g in opt["param_groups"])
                                and isinstance(opt.get("scalars", {}), dict)):
        raise bad("the optimizer state is not a mapping with a list of param_groups")
    for g in (opt or {}).get("param_groups", []):
        why = _bad_hyper(g)
        if why:
            raise bad(f"the optimizer's {why}"[:120])
    return meta


# what an optimizer's hyper-parameter may be: (low, high, high included); a checkpoint with another
# value (momentum -5, lr NaN) is damaged, not something to resume with
_HYPER = {"lr": (0.0, math.inf, True), "momentum": (0.0, 1.0, False), "dampening": (0.0, 1.0, True),
          "weight_decay": (0.0, math.inf, True), "eps": (0.0, 1.0, True)}


def _bad_hyper(group: dict) -> str | None:
    for key, (lo, hi, closed) in _HYPER.items():
        if key not in group:
            continue
        v = group[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo \
                or (v > hi if closed else v >= hi):
            return f"{key} must be a finite number in [{lo:g}, {hi:g}{']' if closed else ')'}, got {v!r}"
    betas = group.get("betas")
    if betas is not None and not (isinstance(betas, list) and len(betas) == 2 and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        return f"betas must be two numbers in [0, 1), got {betas!r}"
    return None


def resume_epoch(meta: dict[str, Any], epochs: int, path: str | Path) -> int:
    """The epoch a checkpoint was saved after, checked against the run's length: an epoch beyond
    the one its own config planned is damage; one beyond --epochs needs more --epochs."""
    e = meta.get("epoch")
    planned = (meta.get("config") or {}).get("epochs")
    if not isinstance(e, int) or isinstance(e, bool) or e < 1 or (isinstance(planned, int) and e > planned):
        raise CheckpointError(f"{path} records epoch {e!r} of a {planned!r}-epoch run, which no run writes: the "
                              f"file is damaged; delete it to start the run over")
    if e > epochs:
        raise CheckpointError(f"{path} is at epoch {e}, past --epochs {epochs}; pass --epochs {e} or more to "
                              f"continue it, or use another --out")
    return e


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing, unexpected = own.keys() - sd.keys(), sd.keys() - own.keys()
    bad_shape = [k for k in own.keys() & sd.keys() if own[k].shape != sd[k].shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"{source} does not fit the model: {len(missing)} missing, {len(unexpected)} unexpected and "
            f"{len(bad_shape)} mis-shaped tensors (a checkpoint of another architecture?)")
    model.load_state_dict(sd)


def restore_training_state(tensors: dict[str, torch.Tensor], meta: dict, optimizer: torch.optim.Optimizer
                           ) -> dict[str, torch.Tensor]:
    """Restore optimizer and RNG state; return the method state. A damaged state is a CheckpointError."""
    try:
        return _restore_training_state(tensors, meta, optimizer)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"cannot resume: the checkpoint's optimizer or RNG state is damaged "
                              f"({type(e).__name__}: {one_line(e)[:150]}); delete the checkpoint to start the run "
                              f"over") from None


def _restore_training_state(tensors: dict[str, torch.Tensor], meta: dict, optimizer: torch.optim.Optimizer
                            ) -> dict[str, torch.Tensor]:
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return {k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")}


def load_model(path: str | Path, device: str | torch.device = "cpu", expect_model: str | None = None
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint was trained with, load its weights, put it in eval mode."""
    from sgtlab.models import build_model

    tensors, meta = read_checkpoint(path)
    arch = meta["arch"]
    if arch.get("user_model"):  # its class is not rebuilt by name (no Normalize, maybe not registered)
        raise CheckpointError(f"{path} holds a model you defined ({arch['model']} from {arch.get('module')}), "
                              f"not a registered one: in Python, sgtlab.load_model({str(path)!r}, "
                              f"model={arch['model']}(...)); for the commands, register it in a plug-in "
                              f"(--import MODULE) and train it by name")
    if expect_model is not None and expect_model != arch["model"]:
        raise CheckpointError(f"{path} holds a {arch['model']!r} model, not {expect_model!r}")
    model = build_model(arch["model"], arch["in_channels"], arch["num_classes"], arch["mean"], arch["std"],
                        arch.get("input_size"))  # absent in older checkpoints: the model's own size
    load_weights(model, tensors, str(path))
    return model.to(device).eval(), meta
