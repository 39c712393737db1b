"""Independent batches of an evaluation side by side, one CPU thread each, instead of one after the
other on all threads.

Why: on a CPU a small model's attack step is many short operations (sgt-cnn on a batch of 128: two
convolutions, a pool, a few point-wise passes, and as many again backwards). Spread over the
intra-op threads, each operation ends in a barrier where the threads wait for each other; on a
shared 2-core machine a descheduled thread stalls the whole step. Batches of a sweep's eps are
independent (per-image attacks, their random starts drawn beforehand for the whole set), so
`map_batches` runs them in worker threads that each run single-threaded: no barriers, and the
cores stay busy with whole batches (measured on the 2-core machine, docs/attacks.md).

The numbers are those of the same batches run with one intra-op thread, bit for bit (each batch is
computed by one thread, in order; results are merged in batch order); PyTorch's own CPU kernels may
round differently with two threads than with one (a matrix product splits its sum), as they do
between machines, so against the plain path at two threads they agree up to float rounding.

`batch_workers` decides when it applies: a CPU device, more than one intra-op thread, more than one
batch, a model without hooks (a hook could keep state across calls that now interleave) and an
attack that declares its `perturb` free of global random state (`Attack.thread_safe`). Otherwise 1:
the plain loop.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from sgtlab.fast.eligibility import has_forward_hooks

T = TypeVar("T")
R = TypeVar("R")


def batch_workers(model: nn.Module, device: torch.device | str, n_batches: int, thread_safe: bool = True) -> int:
    """How many batches to run side by side: the intra-op threads on a CPU, else 1 (the plain loop)."""
    threads = torch.get_num_threads()
    if (torch.device(device).type != "cpu" or threads < 2 or n_batches < 2 or not thread_safe
            or has_forward_hooks(model)):
        return 1
    return min(threads, n_batches)


def split_batches(idx: torch.Tensor, batch_size: int, model: nn.Module, device: torch.device | str,
                  thread_safe: bool = True, per_image: bool = True) -> tuple[list[torch.Tensor], int]:
    """`idx` in batches of at most `batch_size`, and how many of them to run side by side
    (`batch_workers`).

    `per_image`: each image's result does not depend on the other images of its batch (a gradient
    attack in eval mode). Side by side, such batches are of equal size and their number a multiple
    of the workers (at least one each): `split` would leave a short last batch, and at its end one
    thread waits for the other, in every eps of a sweep (a sweep's sets of still-robust images
    shrink to a few dozen, which would otherwise run as one batch on all threads, with a barrier per
    operation). Otherwise (Square places one square per query for its whole batch) the batches are
    `split`'s, whatever the threads, so the numbers do not depend on the thread count."""
    n = math.ceil(len(idx) / batch_size)
    if not per_image:
        return list(idx.split(batch_size)), batch_workers(model, device, n, thread_safe)
    workers = batch_workers(model, device, max(n, min(len(idx), torch.get_num_threads())), thread_safe)
    if workers <= 1:
        return list(idx.split(batch_size)), 1
    return list(idx.tensor_split(math.ceil(n / workers) * workers)), workers


def map_batches(fn: Callable[[T], R], jobs: Sequence[T], workers: int) -> list[R]:
    """`[fn(job) for job in jobs]`, with `workers` > 1 in that many threads of one intra-op thread
    each. Grad mode and autocast are per thread, so `fn` sets what it needs itself."""
    if workers <= 1 or len(jobs) < 2:
        return [fn(job) for job in jobs]
    before = torch.get_num_threads()

    def one_thread(job: T) -> R:
        torch.set_num_threads(1)  # this thread's OpenMP and MKL threads (and the default of new threads)
        return fn(job)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sgtlab-batch") as pool:
            return list(pool.map(one_thread, jobs))
    finally:
        torch.set_num_threads(before)  # the calling thread's count, and the default again
