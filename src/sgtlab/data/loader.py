"""Batching on whole tensors: one index permutation per epoch, then slicing.

No per-sample Python transforms: augmentation, if any, is a function applied to a whole batch.
The permutation of epoch `e` depends only on (seed, e), so a resumed run sees the same batches.
Under DistributedDataParallel each rank takes a strided share of every *global* batch, so N
ranks with batch B/N each see exactly the samples one process with batch B sees.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from sgtlab.data.base import TensorData
from sgtlab.errors import SgtlabError

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorLoader:
    def __init__(self, data: TensorData, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, augment: Augment | None = None, device: str | torch.device = "cpu",
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise SgtlabError(f"batch size must be >= 1, got {batch_size}")
        if batch_size % world_size:
            raise SgtlabError(f"global batch size {batch_size} is not divisible by {world_size} processes")
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.drop_last, self.augment, self.device = drop_last, augment, torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (images, labels, dataset indices) for this rank."""
        n = len(self.data)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            idx = batch[self.rank::self.world_size]
            # uint8 storage (CIFAR, folders, PCAM) goes to the device as uint8 and becomes float
            # there; augmentation works on float on the device (its draws come from the CPU `g`)
            if self.augment is None:
                x = self.data.batch(idx, self.device)
            elif self.world_size == 1:
                x = self.augment(self.data.batch(idx, self.device), g)
            else:  # augment the global batch, keep this rank's share: same draws as one process,
                # and no two ranks reuse the same crops (they share the generator's state)
                x = self.augment(self.data.batch(batch, self.device), g)[self.rank::self.world_size]
            y = self.data.y[idx]
            yield x, y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)
