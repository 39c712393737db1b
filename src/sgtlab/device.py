"""Device choice shared by every command: --device auto|cpu|cuda."""
from __future__ import annotations

import torch

from sgtlab.errors import SgtlabError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SgtlabError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise SgtlabError(f"unknown device {name!r}; choose one of: auto, cpu, cuda")
    return torch.device(name)
