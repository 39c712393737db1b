"""Checkpoints: one safetensors file per run holding the weights (`model.*`), and, for resuming,
the optimizer tensors (`optim.*`), RNG states (`rng.*`) and method state (`method.*`); everything
else (config, epoch, optimizer hyper-parameters) is JSON in the file's metadata. No pickle anywhere,
so loading a checkpoint never runs code. Written atomically: a crash keeps the previous one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sgtlab.errors import CheckpointError
from sgtlab.io import atomic_path

CHECKPOINT = "checkpoint.safetensors"
META_KEY = "sgtlab"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = resolve_checkpoint(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable sgtlab checkpoint ({e})") from None
    return tensors, meta


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
    """Restore optimizer and RNG state; return the method state."""
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
    if expect_model is not None and expect_model != arch["model"]:
        raise CheckpointError(f"{path} holds a {arch['model']!r} model, not {expect_model!r}")
    model = build_model(arch["model"], arch["in_channels"], arch["num_classes"], arch["mean"], arch["std"])
    load_weights(model, tensors, str(path))
    return model.to(device).eval(), meta
