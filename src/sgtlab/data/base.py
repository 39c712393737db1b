"""The data set type, the data set registry and where data files are looked for."""
from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sgtlab.data.spec import with_absolute_path
from sgtlab.errors import DataError, SgtlabError
from sgtlab.registry import Registry


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [0, 1]; a float tensor is returned as it is."""
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255.0)
    return pixels


class TensorData:
    """A split: images N x C x H x W and int64 labels `y` (N).

    The images are stored as given: float32 in [0, 1] (MNIST-size data, as always), or uint8
    0..255, in memory or memory-mapped from a cache file (CIFAR, image folders, PCAM: a quarter
    of the memory, and data larger than memory stays on disk). `x` is always float in [0, 1]:
    for uint8 storage it converts on access, so take it on subsets (`subset(n).x`); whole-split
    consumers go by batches (`batch(idx, device)`, `TensorLoader`), which convert on the device.

    `extras` holds per-sample tensors that travel with the images (e.g. Decoy-MNIST's
    patch and digit masks, N x H x W bool)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, name: str = "",
                 extras: dict[str, torch.Tensor] | None = None):
        self.pixels, self.y, self.name, self.extras = x, y, name, dict(extras or {})
        if self.pixels.ndim != 4:
            raise DataError(f"{name}: images must be N x C x H x W, got shape {tuple(self.pixels.shape)}")
        if self.pixels.dtype != torch.uint8 and not self.pixels.is_floating_point():
            raise DataError(f"{name}: images must be uint8 or float, got {self.pixels.dtype}")
        if self.y.ndim != 1 or len(self.y) != len(self.pixels):
            raise DataError(f"{name}: {len(self.pixels)} images but labels of shape {tuple(self.y.shape)}")

    @property
    def x(self) -> torch.Tensor:
        """The images as float in [0, 1] (a conversion, the size of the float form, for uint8 storage)."""
        return to_float(self.pixels)

    @x.setter
    def x(self, value: torch.Tensor) -> None:
        self.pixels = value

    @property
    def shape(self) -> tuple[int, int, int]:
        """C x H x W of one image."""
        return tuple(self.pixels.shape[1:])

    def batch(self, idx, device: str | torch.device | None = None) -> torch.Tensor:
        """Images `idx` (a slice or an index tensor) as float in [0, 1] on `device`: uint8 goes to the
        device as uint8 (a quarter of the transfer) and is converted there."""
        x = self.pixels[idx]
        if device is not None:
            x = x.to(device, non_blocking=True)
        return to_float(x)

    def __len__(self) -> int:
        return len(self.pixels)

    def __repr__(self) -> str:
        return f"TensorData({self.name!r}, {len(self)} x {self.shape}, {self.pixels.dtype})"

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in label order, from the data set this split was read from (folder names
        for image folders, the published names for MNIST, CIFAR, ...); () for data without names."""
        info = DATASETS.known(self.name)
        return info.classes if info is not None else ()

    def subset(self, n: int | None) -> "TensorData":
        """The first `n` samples (all when n is None)."""
        if n is None or n >= len(self):
            return self
        return TensorData(self.pixels[:n], self.y[:n], self.name, {k: v[:n] for k, v in self.extras.items()})


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[..., TensorData]  # (split, data_dir, download[, verify]) -> TensorData
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]  # per-channel statistics for the model's normalisation layer
    std: tuple[float, ...]
    default_model: str
    description: str
    classes: tuple[str, ...] = ()  # the class names, label order; () where the data does not name them


class DatasetRegistry(Registry[DatasetInfo]):
    """Named data sets, plus prefixes (`folder:PATH`, `npz:PATH`) whose info is built from the
    files on first use (and kept for the process)."""

    def __init__(self):
        super().__init__("data set", group="sgtlab.datasets")
        self._prefixes: dict[str, Callable[[str], DatasetInfo]] = {}
        self._options: dict[str, dict[str, type]] = {}
        self._resolved: dict[str, DatasetInfo] = {}

    def add_entry_point(self, name: str, obj) -> None:
        """A plug-in's data set (entry-point group `sgtlab.datasets`): a DatasetInfo, under its own name."""
        if not isinstance(obj, DatasetInfo):
            raise SgtlabError(f"entry point {name!r} in {self.group} must be a DatasetInfo, got {type(obj).__name__}")
        if obj.name not in self._items:
            self.register(obj.name)(obj)

    def register_prefix(self, prefix: str, resolve: Callable[[str], DatasetInfo],
                        options: dict[str, type] | None = None) -> None:
        """`resolve(name)` builds the DatasetInfo of `prefix:REST` (raising DataError when it can't);
        `options`: the trailing `,key=value` items REST may end with (`data.spec.parse_spec`)."""
        self._prefixes[prefix] = resolve
        self._options[prefix] = dict(options or {})

    def absolute(self, name: str) -> str:
        """`name` with the path of a `prefix:PATH` name made absolute; a registered name as it is."""
        prefix = self.prefix_of(name) if isinstance(name, str) else None
        return name if prefix is None else with_absolute_path(name, self._options[prefix])

    def prefix_of(self, name: str) -> str | None:
        head = name.split(":", 1)[0] if ":" in name else None
        return head if head in self._prefixes else None

    def get(self, name: str) -> DatasetInfo:
        prefix = self.prefix_of(name) if isinstance(name, str) else None
        if prefix is None:
            try:
                return super().get(name)
            except SgtlabError:
                raise SgtlabError(f"unknown data set {name!r}; choose one of: {', '.join(self.names())}, "
                                  f"or {', '.join(p + ':PATH' for p in sorted(self._prefixes))}") from None
        if name not in self._resolved:
            self._resolved[name] = self._prefixes[prefix](name)
        return self._resolved[name]

    def known(self, name: str) -> DatasetInfo | None:
        """The info of a registered name or of a `prefix:PATH` already read; None otherwise (no files read)."""
        if self.prefix_of(name) is not None:
            return self._resolved.get(name)
        return super().get(name) if name in self.names() else None

    def forget(self, name: str) -> None:
        """Drop a resolved `prefix:PATH` info (after its files changed)."""
        self._resolved.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and self.prefix_of(name) is not None)


DATASETS: DatasetRegistry = DatasetRegistry()


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    DATASETS.register(info.name)(info)
    return info


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, verify: bool = True) -> TensorData:
    """A split of a named data set (or `folder:PATH`, `npz:PATH`). `verify=False` skips the md5
    comparison with the official release (for files one made oneself); parsing stays as strict."""
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    loader = DATASETS.get(name).loader
    kw = dict(split=split, data_dir=data_dir, download=download)
    if not verify and _takes(loader, "verify"):
        kw["verify"] = False
    return loader(**kw)


def _takes(fn, arg: str) -> bool:
    try:
        return arg in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


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
        raise DataError(f"{path} is corrupt: md5 {got}, expected {expected}; delete it and download it again "
                        f"(files you made yourself in the same format: pass --no-verify)")
