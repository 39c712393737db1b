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
from sgtlab.validate import MAX_CLASSES

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
    if x.size and not np.isfinite(x).all():
        raise DataError(f"{what}: float images hold NaN or infinite values; store finite values in [0, 1] "
                        f"(or uint8 0..255)")
    if x.size and not (x.min() >= 0 and x.max() <= 1):
        raise DataError(f"{what}: float images must lie in [0, 1], got values in [{x.min():.4g}, "
                        f"{x.max():.4g}] (divide 0..255 images by 255, or store them as uint8)")
    return x


def to_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim > 1 and y.size == len(y):
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what}: {n} images but labels of shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{what}: labels must be integers, got {y.dtype}")
    # checked before any conversion or allocation by label: uint64 2**64-1 would wrap to -1, and a
    # label of 2**40 would ask for a model of 2**40 classes
    if len(y) and (y.min() < 0 or y.max() >= MAX_CLASSES):
        raise DataError(f"{what}: labels must be integers in 0..{MAX_CLASSES - 1}, got {y.min()}..{y.max()}")
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


def _check_members(path: Path, name: str) -> None:
    """Each array's header agrees with the bytes its member holds, before numpy allocates what the
    header says (a lying header of 10**12 values would be an 'out of memory', not a damaged file)."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    # by content, not by name: np.load reads a member `x` with the magic as an array too
                    if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                        continue
                    f.seek(0)
                    version = np.lib.format.read_magic(f)
                    # numpy's public readers (its private `_read_array_header` is gone in numpy 2)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise ValueError(f"an .npy member of format version {version[0]}.{version[1]}")
                    shape, _, dtype = read(f)
                    body = info.file_size - f.tell()
                if dtype.hasobject:
                    continue  # refused, with its own message, by allow_pickle=False
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared != body:
                    raise DataError(f"{name}: {path}: array {info.filename.removesuffix('.npy')!r} declares shape {shape} "
                                    f"({declared} bytes) but holds {body} bytes; the file is damaged")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"{name}: {path} is not a readable .npz file ({' '.join(str(e).split())[:150]})") from None


def read_npz(path: Path, name: str, test: float) -> dict[str, TensorData]:
    if not path.is_file():
        raise DataError(f"{name}: no file {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise DataError(f"{name}: cannot read {path} ({e.strerror})") from None
    if magic[:2] != b"PK":
        raise DataError(f"{name}: {path} is not a .npz file (no zip header); save it with numpy.savez")
    _check_members(path, name)
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
        what = ("holds an object array (pickled Python objects), which sgtlab never loads; store numeric "
                "arrays" if "pickle" in str(e) else f"holds an array numpy cannot read ({e})")
        raise DataError(f"{name}: {path} {what}") from None
    raise DataError(f"{name}: {path} holds {', '.join(sorted(keys)) or 'nothing'}; it needs arrays 'x' and 'y' "
                    f"(or x_train, y_train, x_test, y_test)")


def _mean_std(px: torch.Tensor, block: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel mean and std in [0, 1] units, `block` images at a time: uint8 images stay uint8 (a
    float copy of the whole split would cost 4x its memory)."""
    c = px.shape[1]
    if len(px) < 2:
        return (0.5,) * c, (0.25,) * c
    scale = 255.0 if px.dtype == torch.uint8 else 1.0
    s1, s2, count = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, len(px), block):
        b = px[i:i + block].to(torch.float64) / scale
        s1 += b.sum((0, 2, 3))
        s2 += (b * b).sum((0, 2, 3))
        count += b.numel() // c
    m = s1 / count
    var = (s2 / count - m * m).clamp_min(0) * count / max(count - 1, 1)
    return (tuple(round(float(v), 4) for v in m), tuple(round(max(float(v), 1e-3), 4) for v in var.sqrt()))


def resolve(name: str) -> DatasetInfo:
    path, opts = parse_spec(name, OPTIONS)
    splits = read_npz(path, name, opts.get("test", 0.2))
    for split, d in splits.items():
        if len(d.y) == 0:
            raise DataError(f"{name}: the {split} split is empty (each class needs two images or more for a test "
                            f"split to be made); add images, or store x_train, y_train, x_test, y_test")
    train = splits["train"]
    mean, std = _mean_std(train.pixels)
    num_classes = int(max(int(d.y.max()) + 1 if len(d.y) else 0 for d in splits.values()))
    c, h, w = train.shape

    def load(split: str = "train", data_dir=None, download: bool = True) -> TensorData:
        return splits[split]

    return DatasetInfo(name, load, (c, h, w), max(num_classes, 2), mean, std, default_model(c, max(h, w)),
                       f"arrays from {path}: {len(train)} train / {len(splits['test'])} test images")


DATASETS.register_prefix("npz", resolve, OPTIONS)
