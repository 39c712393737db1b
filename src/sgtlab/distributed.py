"""DistributedDataParallel under torchrun: gloo on CPU, NCCL on CUDA.

The loader gives each rank a strided share of every global batch, DDP averages the gradients,
so N ranks train like one process with the same global batch. Only rank 0 writes files.
What DDP does not do for us, and this module does:
- metrics and the loss-finiteness check are reduced over ranks (a NaN on one rank stops all of
  them at the same step instead of leaving the others blocked in the next all-reduce);
- per-sample method state (SCAAT's ratio `q`, indexed by dataset index) that each rank updates
  only for its own samples is merged before rank 0 saves it (`merge_state`);
- each rank draws its own random numbers (dropout, mask fill, attack starts) from a seed of
  (seed, epoch, rank), so ranks are not correlated and a resumed run repeats the same draws.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from sgtlab.device import resolve_device
from sgtlab.errors import SgtlabError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch RNG seed of one rank in one epoch (model init uses `seed` itself on every rank)."""
    return ((seed * 100_003 + epoch) * 1_009 + rank) % (2**63)


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
            if local_rank >= torch.cuda.device_count():
                raise SgtlabError(f"local rank {local_rank} has no GPU: this machine has "
                                  f"{torch.cuda.device_count()}; use --nproc-per-node <= that")
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), dev)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        # find_unused_parameters stays False: every method's loss uses the whole model, and the
        # attack/saliency passes go through the un-wrapped module (ctx.module) with
        # torch.autograd.grad on the input, so they fire no DDP hooks.
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Average scalar metrics over ranks (one all-reduce for all of them)."""
        if not values:
            return values
        keys = sorted(values)
        buf = torch.stack([values[k].float().reshape(()) for k in keys]).to(self.device)
        torch_dist.all_reduce(buf)
        buf /= self.world_size
        return {k: buf[i] for i, k in enumerate(keys)}

    def all_finite(self, value: torch.Tensor) -> bool:
        """True when `value` is finite on every rank (the same answer on all ranks)."""
        buf = value.detach().float().reshape(1).to(self.device).clone()
        torch_dist.all_reduce(buf)  # a NaN/inf on any rank makes the sum non-finite
        return bool(torch.isfinite(buf).all())

    def merge_state(self, state: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> None:
        """Merge method state that each rank changed only in its own entries (in place).

        An entry changed on one rank, or to the same value on several (state a method already
        synchronises, a shared counter), takes that value exactly; unchanged, its old value;
        changed to different values on several ranks (methods should not do that), their mean."""
        for k in sorted(state):
            cur, old = state[k], before.get(k)
            if old is None or old.shape != cur.shape:
                raise SgtlabError(f"method state {k!r} changed shape during an epoch; cannot merge it over ranks")
            work = cur.dtype if cur.is_floating_point() else torch.float64
            changed = cur != old
            val = cur.to(work)
            total = torch.where(changed, val, torch.zeros_like(val))
            hi = torch.where(changed, val, torch.full_like(val, -float("inf")))
            lo = torch.where(changed, val, torch.full_like(val, float("inf")))
            count = changed.to(torch.int32)
            for buf, op in ((total, torch_dist.ReduceOp.SUM), (count, torch_dist.ReduceOp.SUM),
                            (hi, torch_dist.ReduceOp.MAX), (lo, torch_dist.ReduceOp.MIN)):
                torch_dist.all_reduce(buf, op=op)
            merged = torch.where(hi == lo, hi, total / count.clamp(min=1).to(work))
            merged = torch.where(count > 0, merged, old.to(work))
            state[k] = merged.to(cur.dtype) if cur.is_floating_point() else merged.round().to(cur.dtype)

    def barrier(self) -> None:
        if self.device.type == "cuda":
            torch_dist.barrier(device_ids=[self.device.index])
        else:
            torch_dist.barrier()

    def close(self) -> None:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
