"""DistributedDataParallel under torchrun: gloo on CPU, NCCL on CUDA.

The loader gives each rank a strided share of every global batch, DDP averages the gradients,
so N ranks train like one process with the same global batch. Only rank 0 writes files."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from sgtlab.device import resolve_device


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def init(cls, device: str = "auto") -> "DistContext":
        dev = resolve_device(device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), dev)

    def wrap(self, model: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Average scalar metrics over ranks (one all-reduce for all of them)."""
        if not values:
            return values
        keys = sorted(values)
        buf = torch.stack([values[k].float().reshape(()) for k in keys]).to(self.device)
        torch_dist.all_reduce(buf)
        buf /= self.world_size
        return {k: buf[i] for i, k in enumerate(keys)}

    def barrier(self) -> None:
        torch_dist.barrier()

    def close(self) -> None:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
