"""Randomly permuted training labels: the data of the label-randomisation sanity check (Adebayo et
al. 2018, "data randomization test"). A permutation, not fresh random labels, so every class keeps
its count and only the relation between images and labels is destroyed."""
from __future__ import annotations

import torch

from sgtlab.data.base import TensorData


def permuted_labels(y: torch.Tensor, seed: int) -> torch.Tensor:
    """`y` in an order drawn from `seed` by its own generator (the global RNG, which draws the
    initial weights, is left alone): the same seed gives the same labels."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))
    return y[perm.to(y.device)]


def with_random_labels(data: TensorData, seed: int) -> TensorData:
    """`data` with its labels permuted by `permuted_labels`; images and per-sample extras unchanged."""
    return TensorData(data.pixels, permuted_labels(data.y, seed), data.name, data.extras)
