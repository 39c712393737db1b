"""Arrays: `npz:PATH` (and `from_arrays` from Python).

The file holds `x` and `y` (split here: seeded, stratified, `test=F`, default 0.2), or
`x_train`, `y_train`, `x_test`, `y_test`. Images: uint8 N x H x W x C or N x C x H x W (C = 1 or
3), or N x H x W, or float in [0, 1] in the same layouts; labels: integers >= 0. uint8 stays uint8
(in memory), float becomes float32. Read with `allow_pickle=False`: an object array is an error.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from sgtlab.data.base import DATASETS, DatasetInfo, TensorData
from sgtlab.data.folder import default_model
from sgtlab.data.spec import parse_spec, stratified_split
from sgtlab.errors import DataError

OPTIONS = {"test": float}


def to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 / float images in N x H x W, N x H x W x C or N x C x H x W -> N x C x H x W."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        last, first = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
        if last and not first:
            x = x.transpose(0, 3, 1, 2)
        elif not first:
            raise DataError(f"{what}: images of shape {x.shape}: expected N x H x W x C or N x C x H x W "
                            f"with C = 1 or 3")
    else:
        raise DataError(f"{what}: images must have 3 or 4 dimensions, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{what}: images must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise DataError(f"{what}: float images must lie in [0, 1], got values in [{np.nanmin(x):.4g}, "
                        f"{np.nanmax(x):.4g}] (divide 0..255 images by 255, or store them as uint8)")
    return x


def to_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim > 1 and y.size == len(y):
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what}: {n} images but labels of shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{what}: labels must be integers, got {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: labels must be >= 0, got {y.min()}")
    return y.astype(np.int64)


def from_arrays(x, y, name: str = "arrays", x_test=None, y_test=None, test: float = 0.2
                ) -> dict[str, TensorData]:
    """{'train': TensorData, 'test': TensorData} from numpy arrays or tensors in the layouts above."""
    def arr(a):
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

    x = to_nchw(arr(x), name)
    y = to_labels(arr(y), len(x), name)
    if x_test is None:
        idx = stratified_split(y, test)
        parts = {s: (x[i], y[i]) for s, i in idx.items()}
    else:
        xt = to_nchw(arr(x_test), name + " (test)")
        parts = {"train": (x, y), "test": (xt, to_labels(arr(y_test), len(xt), name + " (test)"))}
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{name}: train images are {x.shape[1:]}, test images {xt.shape[1:]}")
    return {s: TensorData(torch.from_numpy(a), torch.from_numpy(b), name) for s, (a, b) in parts.items()}


def read_npz(path: Path, name: str, test: float) -> dict[str, TensorData]:
    if not path.is_file():
        raise DataError(f"{name}: no file {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return from_arrays(f["x_train"], f["y_train"], name, f["x_test"], f["y_test"])
            if {"x", "y"} <= keys:
                return from_arrays(f["x"], f["y"], name, test=test)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{name}: {path} is not a readable .npz file ({e})") from None
    except ValueError as e:  # object arrays (pickles) are refused by allow_pickle=False
        raise DataError(f"{name}: {path}: {e}") from None
    raise DataError(f"{name}: {path} holds {', '.join(sorted(keys)) or 'nothing'}; it needs arrays 'x' and 'y' "
                    f"(or x_train, y_train, x_test, y_test)")


def resolve(name: str) -> DatasetInfo:
    path, opts = parse_spec(name, OPTIONS)
    splits = read_npz(path, name, opts.get("test", 0.2))
    train = splits["train"]
    x = train.pixels.float() / (255.0 if train.pixels.dtype == torch.uint8 else 1.0)
    dims = (0, 2, 3)
    mean = tuple(round(v, 4) for v in x.mean(dims).tolist()) if len(x) else (0.5,) * x.shape[1]
    std = tuple(round(max(v, 1e-3), 4) for v in x.std(dims).tolist()) if len(x) > 1 else (0.25,) * x.shape[1]
    num_classes = int(max(int(d.y.max()) + 1 if len(d.y) else 0 for d in splits.values()))
    c, h, w = train.shape

    def load(split: str = "train", data_dir=None, download: bool = True) -> TensorData:
        return splits[split]

    return DatasetInfo(name, load, (c, h, w), max(num_classes, 2), mean, std, default_model(c, max(h, w)),
                       f"arrays from {path}: {len(train)} train / {len(splits['test'])} test images")


DATASETS.register_prefix("npz", resolve)
