"""Decoy-MNIST (Ross, Hughes & Doshi-Velez 2017, "Right for the right reasons").

A 4x4 gray patch in a random corner of each image. In training its gray level codes the class,
255 - 25*y (as in the authors' code), so it is a perfect shortcut; in test it codes a random
class (uniform over 0..9, so it matches the label 10 % of the time, as in the original).
A model that learned the shortcut loses test accuracy.

Choices the paper leaves open, fixed here: the corner and the test code are drawn from a torch
generator seeded with DECOY_SEED and the split (fixed data, like the MNIST-5k split); the patch
sits in the outermost 4x4 pixels of a corner, where MNIST digits (centred in the middle 20x20)
almost never reach; `digit_mask` is original pixel > DIGIT_THRESHOLD, outside the patch.

extras: `patch_mask`, `digit_mask` (N x H x W bool) for localisation metrics, and
`patch_class` (N, int64) the class the patch codes, for shortcut-reliance metrics.
"""
from __future__ import annotations

from functools import partial

import torch

from sgtlab.data.base import DatasetInfo, TensorData, load_dataset, register_dataset
from sgtlab.data.mnist import DIGITS
from sgtlab.errors import DataError

PATCH = 4
DECOY_SEED = 0
DIGIT_THRESHOLD = 0.1  # ~25/255: the stroke and its anti-aliased rim, not the faint background noise
_SPLIT_OFFSET = {"train": 0, "test": 1}


def patch_value(code: torch.Tensor) -> torch.Tensor:
    """Gray level in [0, 1] of the patch coding class `code`: (255 - 25 * code) / 255."""
    return (255.0 - 25.0 * code.float()) / 255.0


def corner_masks(h: int, w: int, size: int = PATCH) -> torch.Tensor:
    """4 x H x W bool: top-left, top-right, bottom-left, bottom-right size x size squares."""
    m = torch.zeros(4, h, w, dtype=torch.bool)
    m[0, :size, :size] = True
    m[1, :size, w - size:] = True
    m[2, h - size:, :size] = True
    m[3, h - size:, w - size:] = True
    return m


def add_decoy(base: TensorData, split: str, seed: int = DECOY_SEED, name: str = "decoy") -> TensorData:
    """Return a copy of `base` (single-channel images) with the decoy patches and the masks."""
    n, c, h, w = base.x.shape
    if c != 1 or h < 2 * PATCH or w < 2 * PATCH:
        raise DataError(f"{name}: needs single-channel images of at least {2 * PATCH}x{2 * PATCH}, "
                        f"got {c}x{h}x{w}")
    g = torch.Generator().manual_seed(seed * 2 + _SPLIT_OFFSET[split])
    corner = torch.randint(0, 4, (n,), generator=g)
    code = base.y.clone() if split == "train" else torch.randint(0, 10, (n,), generator=g)
    patch = corner_masks(h, w)[corner]  # N x H x W
    img = base.x[:, 0]
    x = torch.where(patch, patch_value(code)[:, None, None], img).unsqueeze(1)
    digit = (img > DIGIT_THRESHOLD) & ~patch
    extras = {**base.extras, "patch_mask": patch, "digit_mask": digit, "patch_class": code}
    return TensorData(x, base.y, name, extras)


def load_decoy(base: str, name: str, split: str = "train", data_dir=None, download: bool = True) -> TensorData:
    return add_decoy(load_dataset(base, split, data_dir, download), split, name=name)


# mean/std: of the decoy-mnist training split (decoy-mnist5k: 0.1425, 0.3161), measured with
# python -c "from sgtlab.data import load_dataset as l; x = l('decoy-mnist').x; print(x.mean(), x.std())"
register_dataset(DatasetInfo(
    "decoy-mnist", partial(load_decoy, "mnist", "decoy-mnist"), (1, 28, 28), 10, (0.1422,), (0.3161,), "sgt-cnn",
    "Decoy-MNIST (Ross et al. 2017): MNIST with a class-coded 4x4 gray patch in a random corner in "
    "training, a random-coded one in test; needs the MNIST files", DIGITS))
register_dataset(DatasetInfo(
    "decoy-mnist5k", partial(load_decoy, "mnist5k", "decoy-mnist5k"), (1, 28, 28), 10, (0.1422,), (0.3161,),
    "sgt-cnn", "Decoy-MNIST built on MNIST-5k (works offline)", DIGITS))

