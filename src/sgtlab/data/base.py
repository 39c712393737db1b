"""The in-memory data set type, the data set registry and where data files are looked for."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sgtlab.errors import DataError
from sgtlab.registry import Registry


@dataclass
class TensorData:
    """A whole split in memory: `x` float32 in [0, 1], N x C x H x W; `y` int64, N.

    `extras` holds per-sample tensors that travel with the images (e.g. Decoy-MNIST's
    patch and digit masks, N x H x W bool)."""

    x: torch.Tensor
    y: torch.Tensor
    name: str = ""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.x.ndim != 4:
            raise DataError(f"{self.name}: images must be N x C x H x W, got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(f"{self.name}: {len(self.x)} images but labels of shape {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, n: int | None) -> "TensorData":
        """The first `n` samples (all when n is None)."""
        if n is None or n >= len(self):
            return self
        return TensorData(self.x[:n], self.y[:n], self.name, {k: v[:n] for k, v in self.extras.items()})


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[..., TensorData]  # (split, data_dir, download) -> TensorData
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]  # per-channel statistics for the model's normalisation layer
    std: tuple[float, ...]
    default_model: str
    description: str


DATASETS: Registry[DatasetInfo] = Registry("data set")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    DATASETS.register(info.name)(info)
    return info


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> TensorData:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS.get(name).loader(split=split, data_dir=data_dir, download=download)


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """`--data-dir`, else $SGTLAB_DATA, else ~/.cache/sgtlab/data."""
    if data_dir is not None:
        root, what = Path(data_dir).expanduser(), "--data-dir"
    elif os.environ.get("SGTLAB_DATA"):
        root, what = Path(os.environ["SGTLAB_DATA"]).expanduser(), "$SGTLAB_DATA"
    else:
        return Path.home() / ".cache" / "sgtlab" / "data"
    if root.exists() and not root.is_dir():
        raise DataError(f"{what} {root} is a file; give the folder that holds the data files")
    return root


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except IsADirectoryError:
        raise DataError(f"{path} is a folder where a data file should be; remove it and put the file there") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    return h.hexdigest()


def check_md5(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    got = md5sum(path)
    if got != expected:
        raise DataError(f"{path} is corrupt: md5 {got}, expected {expected}; delete it and download it again")
