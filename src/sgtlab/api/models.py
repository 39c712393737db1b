"""`sgtlab.load_model` and the lists of registered names (plug-ins included)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sgtlab.errors import SgtlabError


def load_model(run_or_checkpoint: str | Path, model: nn.Module | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run folder (or its checkpoint.safetensors), in eval mode on `device`.

    A registered model (built in or a plug-in) is rebuilt from the checkpoint; a model you defined
    yourself and trained with `sgtlab.fit` is given as `model` (a fresh instance of its class), and
    the weights are loaded into it."""
    from sgtlab.device import resolve_device
    from sgtlab.train import checkpoint as ckpt

    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if model is None:
        return ckpt.load_model(run_or_checkpoint, dev)[0]
    if not isinstance(model, nn.Module):
        raise SgtlabError(f"model must be a torch.nn.Module to load the weights into, got {type(model).__name__}")
    tensors, _ = ckpt.read_checkpoint(run_or_checkpoint)
    ckpt.load_weights(model, tensors, str(run_or_checkpoint))
    return model.to(dev).eval()


def list_models() -> list[str]:
    """Registered model names (`sgtlab train --model`)."""
    from sgtlab.models import MODELS

    return MODELS.names()


def list_datasets() -> list[str]:
    """Registered data set names (`sgtlab train --dataset`)."""
    from sgtlab.data import DATASETS

    return DATASETS.names()


def list_methods() -> list[str]:
    """Training method names (`sgtlab.fit(method=...)`, `sgtlab train --method`)."""
    from sgtlab.train.methods import METHODS

    return METHODS.names()


def list_attacks() -> list[str]:
    """Attack names (`sgtlab.robustness(attacks=...)`, `sgtlab attack --attacks`)."""
    from sgtlab.attacks import ATTACKS

    return ATTACKS.names()
