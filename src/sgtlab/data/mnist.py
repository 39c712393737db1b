"""MNIST and Fashion-MNIST from the four original IDX .gz files (md5-checked)."""
from __future__ import annotations

import gzip
import math
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from sgtlab.data.base import DatasetInfo, TensorData, check_md5, data_root, register_dataset
from sgtlab.data.download import download_file
from sgtlab.errors import DataError

FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
_IDX_DTYPE = {0x08: np.uint8}


MAX_IDX_BYTES = 64 << 20  # decompressed: the largest original file (train images) is 47 MB


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (big-endian header: 0, 0, dtype code, ndim, then dims)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(MAX_IDX_BYTES + 1)  # bounded: a gzip bomb stops here
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an IDX .gz file; remove it and put the file there") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); delete it and download it again") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, what: str = "IDX data") -> np.ndarray:
    """The array in an (uncompressed) IDX byte string; anything else is a DataError."""
    if len(raw) > MAX_IDX_BYTES:
        raise DataError(f"{what}: more than {MAX_IDX_BYTES} bytes once decompressed; not an MNIST-style file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise DataError(f"{what} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataError(f"{what}: the header promises {ndim} dimensions but the file ends after {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = math.prod(dims)  # Python integers: no overflow
    if len(raw) - offset != size:
        raise DataError(f"{what}: header says shape {dims} but holds {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def find_files(name: str, split: str, data_dir, download: bool, verify: bool = True) -> list[Path]:
    """Locate (and, if allowed and online, download) the two files of a split."""
    root = data_root(data_dir)
    folder = root / name if (root / name).is_dir() else root  # accept both DIR/mnist and DIR itself
    paths = [folder / f for f in FILES[split]]
    missing = [p for p in paths if not p.exists()]
    if missing and download:
        target = root / name
        for p in missing:
            try:
                download_file([m + p.name for m in MIRRORS[name]], target / p.name, MD5[name][p.name])
            except DataError as e:
                raise DataError(
                    f"{name}: missing {', '.join(q.name for q in missing)} in {folder} and the download failed "
                    f"(offline?). Put the original IDX .gz files in {target} (or point --data-dir / "
                    f"SGTLAB_DATA at a folder holding them). Detail: {e}") from None
        paths = [target / f for f in FILES[split]]
    elif missing:
        raise DataError(f"{name}: missing {', '.join(p.name for p in missing)} in {folder}; put the original "
                        f"IDX .gz files there, or pass --data-dir / set SGTLAB_DATA")
    if verify:
        for p in paths:
            check_md5(p, MD5[name][p.name])
    return paths


def load_idx_dataset(name: str, split: str = "train", data_dir=None, download: bool = True,
                     verify: bool = True) -> TensorData:
    img_path, lbl_path = find_files(name, split, data_dir, download, verify)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    check_idx_pair(name, images, labels)
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorData(x, y, name)


def check_idx_pair(name: str, images: np.ndarray, labels: np.ndarray, shape=(28, 28), classes: int = 10) -> None:
    """Images N x 28 x 28 and N labels in 0..classes-1, or a DataError."""
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{name}: images {images.shape} and labels {labels.shape} do not match")
    if images.shape[1:] != shape:
        raise DataError(f"{name}: images are {images.shape[1]} x {images.shape[2]} pixels, expected "
                        f"{shape[0]} x {shape[1]}")
    if len(labels) and int(labels.max()) >= classes:
        raise DataError(f"{name}: labels must be 0..{classes - 1}, got {int(labels.max())}")


DIGITS = tuple("0123456789")
# Fashion-MNIST's labels 0-9 (Xiao et al. 2017, the data set's README)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
register_dataset(DatasetInfo(
    "mnist", partial(load_idx_dataset, "mnist"), (1, 28, 28), 10, (0.1307,), (0.3081,), "sgt-cnn",
    "MNIST, 60k/10k handwritten digits (IDX files)", DIGITS))
register_dataset(DatasetInfo(
    "fashion-mnist", partial(load_idx_dataset, "fashion-mnist"), (1, 28, 28), 10, (0.2860,), (0.3530,), "sgt-cnn",
    "Fashion-MNIST, 60k/10k clothing images (IDX files)", FASHION_CLASSES))
