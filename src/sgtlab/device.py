"""Device choice shared by every command (--device auto|cpu|cuda), the one way to find a model's
device (`model_device`) and the one eval-mode context (`eval_mode`)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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


def eval_batch_size(batch_size: int | None, device: torch.device | str) -> int:
    """Images per model call in evaluation (attacks, saliency metrics): `batch_size` when given,
    else a default for the device. On a CPU the cost per image grows with the batch once the
    activations leave the caches (an sgt-cnn attack step: 0.37 ms per image at 128, 0.62 ms at
    500; a forward: 0.25 ms at 128, 0.35 ms at 2048), so CPU batches stay small; a GPU wants large ones."""
    if batch_size is None:
        return 1024 if torch.device(device).type == "cuda" else 128
    if batch_size < 1:
        raise SgtlabError(f"batch size must be >= 1, got {batch_size}")
    return int(batch_size)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks in the process instead of handing them back to the
    kernel; True when it took effect (Linux with glibc), else a no-op.

    PyTorch's CPU tensors come from malloc. By default glibc serves large blocks with fresh mmap'd
    pages and trims the heap's free top, so every step of an attack or a training loop, which frees
    and re-allocates activations of ~10-40 MB, page-faults in zeroed memory anew: an MNIST-5k
    sweep (FGSM, PGD-10, MI-FGSM, 6 eps, 500 images, one thread) took 19.9 s with 5.4 s in the
    kernel, and 14.3 s with 0.3 s after this. Both limits are set: setting one alone switches off
    glibc's adaptive threshold and is slower than the default. The price: the process holds on to
    its peak memory. Called by the command line, its worker processes and Ray tasks, not on import."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB: the largest mmap threshold glibc accepts on 64-bit systems
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def model_device(model) -> torch.device:
    """The device of a model's first parameter, else of its first buffer, else the CPU (a model
    without parameters, e.g. a fixed preprocessing wrapper, still has a device to run on)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model) -> Iterator:
    """Eval mode for the duration of the block; afterwards every submodule gets back its *own* mode
    (not the root's), so a batch-norm frozen by `.eval()` inside a training model stays frozen."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
