"""Cost of one training step of each method relative to one ST step (sgt-cnn, batch 128, MNIST).

All methods are timed in the same run, interleaved round by round (so a load change on the machine
hits all of them alike), each on its own copy of the same initial model; the median step time of
each is divided by ST's. A step is the method's loss, zero_grad, backward and the optimizer step.
Original MNIST when its files are found ($SGTLAB_DATA or ../shared/data), else MNIST-5k.
Also timed, as a floor for SGT: `two-passes`, the forward and backward of two inputs (the clean
batch and a flipped copy) with SGT's loss but no saliency pass and no masking. SGT's maths needs at
least that plus the saliency pass (a forward and an input-gradient backward), so `floor_over_st`
bounds from below what any exact SGT step can reach against this ST step.
`two+saliency` adds the spec's saliency pass (eval mode, one forward and one input-gradient
backward), unshared; `sgt_over_floor_with_saliency` shows what sharing the prefix buys against it.
`two+igrad` adds to the floor only the input gradient of the second convolution, the one piece of
the saliency pass that no sharing removes (the training backward needs that layer's input gradient
too, but at the loss's upstream gradient, known only after the mask): `bound_over_floor` is the
least any exact SGT step can cost against the floor (about 1.09 on the 2-core machine: above it
remain only the first layer's input gradient, the pool and ReLU backwards, the eval-mode tail and
the mask). Last lines: `sgt_over_st: X`, `sgt_over_floor_with_saliency: Z`, `bound_over_floor: B`
and `sgt_over_floor: Y`, the SGT step over the two-input floor in the same run (issue target
Y <= 1.10: with B near 1.09, the 0.01 left cannot hold the pieces above it, which measure about
8 ms, 0.05 of the floor, on sgt-cnn: 1.5 ms first-layer input gradient, 2 ms pool backward, 2.4 ms
ReLU backwards, 2.2 ms mask).

    python bench/method_step_cost.py [--rounds 15] [--methods st,sgt,...] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch

from sgtlab.data import dataset_info, load_dataset
from sgtlab.device import keep_freed_memory
from sgtlab.models import build_model
from sgtlab.train.methods import METHODS, Method, MethodConfig, StepContext
from sgtlab.train.methods._shared import forward_many, kl_term


def two_passes(model, x, y, cfg, ctx):
    """SGT's loss on the clean batch and a flipped copy: two inputs' forward and backward, no saliency."""
    clean, other = forward_many(model, ctx.module, x, x.flip(-1))
    return torch.nn.functional.cross_entropy(clean, y) + kl_term(clean, other), {}


FLOOR = Method("two-passes", two_passes)


def two_passes_and_saliency(model, x, y, cfg, ctx):
    """The floor plus the one input-gradient pass the spec's saliency needs (eval mode, detached):
    the least any exact SGT step computes, done as separate passes (no sharing)."""
    from sgtlab.saliency import saliency

    saliency(model, x, y)  # one forward and one input-gradient backward (the map itself is not needed here)
    return two_passes(model, x, y, cfg, ctx)


FLOOR_SAL = Method("two+saliency", two_passes_and_saliency)


_UPSTREAM: dict = {}  # per batch shape: (upstream gradient at conv2's output, conv2's input size)


def two_passes_and_conv_input_grad(model, x, y, cfg, ctx):
    """The floor plus only the second convolution's input gradient: a piece of the spec's saliency
    pass that no sharing removes (the training backward needs that layer's input gradient too, but at
    another upstream gradient, the loss's, known only after the mask). A lower bound on any exact
    SGT step."""
    from sgtlab.saliency import _leaves, conv_input_grad_kernel

    leaves = _leaves(ctx.module)
    i2 = [i for i, m in enumerate(leaves) if isinstance(m, torch.nn.Conv2d)][1]
    if x.shape not in _UPSTREAM:  # found once, in a warm-up step
        with torch.no_grad():
            h = x
            for m in leaves[:i2]:
                h = m(h)
            _UPSTREAM[x.shape] = (torch.ones_like(leaves[i2](h)), tuple(h.shape[-2:]))
    g, size = _UPSTREAM[x.shape]
    conv_input_grad_kernel(leaves[i2], g, size)  # what autograd runs for it (oneDNN)
    return two_passes(model, x, y, cfg, ctx)


FLOOR_IGRAD = Method("two+igrad", two_passes_and_conv_input_grad)


def mnist_data():
    for cand in (os.environ.get("SGTLAB_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if cand and (Path(cand) / "mnist" / "train-images-idx3-ubyte.gz").exists():
            return "mnist", load_dataset("mnist", "train", str(cand))
    return "mnist5k", load_dataset("mnist5k", "train")


def main() -> None:
    keep_freed_memory()  # as the sgtlab command does: both sides run with it
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="timed steps per method")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--methods", default=",".join(METHODS.names()))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    methods = [m for m in args.methods.split(",") if m]
    if "st" not in methods:
        methods.insert(0, "st")
    if "sgt" in methods:
        methods.insert(methods.index("sgt"), FLOOR.name)
        methods.insert(methods.index("sgt"), FLOOR_IGRAD.name)
        methods.insert(methods.index("sgt"), FLOOR_SAL.name)
    name, data = mnist_data()
    info = dataset_info(name)
    torch.manual_seed(0)
    base = build_model("sgt-cnn", info.shape[0], info.num_classes, info.mean, info.std).to(device)
    n_batches = args.warmup + args.rounds
    perm = torch.randperm(len(data.x))[: n_batches * args.batch_size]
    xs = data.x[perm].to(device).split(args.batch_size)
    ys = data.y[perm].to(device).split(args.batch_size)
    idxs = perm.to(device).split(args.batch_size)
    cfg = MethodConfig()
    runs = {}
    for m in methods:
        method = {FLOOR.name: FLOOR, FLOOR_SAL.name: FLOOR_SAL, FLOOR_IGRAD.name: FLOOR_IGRAD}.get(m) or METHODS.get(m)
        model = copy.deepcopy(base).train()
        state = method.init_state(len(data.x), cfg, device) if method.init_state else {}
        runs[m] = (method, model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), state)

    def step(m: str, i: int) -> float:
        method, model, opt, state = runs[m]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        ctx = StepContext(idx=idxs[i], epoch=1, step=i, state=state, module=model)
        loss, _ = method.fn(model, xs[i], ys[i], cfg, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t0

    times = {m: [] for m in methods}
    for i in range(n_batches):
        for m in methods:
            t = step(m, i)
            if i >= args.warmup:
                times[m].append(t)
    st = statistics.median(times["st"])
    print(f"data {name}, sgt-cnn, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} steps each (median)")
    for m in methods:
        med = statistics.median(times[m])
        print(f"{m:10s} {med * 1e3:8.1f} ms/step  {med / st:5.2f} x st")
    if "sgt" in times:
        print(f"floor_over_st: {statistics.median(times[FLOOR.name]) / st:.3f}  (two inputs, no saliency pass)")
        print(f"sgt_over_st: {statistics.median(times['sgt']) / st:.3f}")
        # the spec's saliency costs at least one conv input-gradient more than the floor (about 1/6 of
        # it on sgt-cnn, whose second conv dominates): this ratio shows what sharing the prefix buys
        print(f"sgt_over_floor_with_saliency: {statistics.median(times['sgt']) / statistics.median(times[FLOOR_SAL.name]):.3f}")
        # the floor plus the one input gradient no exact SGT step can share: the least it can cost
        print(f"bound_over_floor: {statistics.median(times[FLOOR_IGRAD.name]) / statistics.median(times[FLOOR.name]):.3f}"
              "  (floor + conv2's input gradient: no exact SGT step is cheaper)")
        print(f"sgt_over_floor: {statistics.median(times['sgt']) / statistics.median(times[FLOOR.name]):.3f}")


if __name__ == "__main__":
    main()
