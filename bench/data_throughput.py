"""A training epoch fed from the memory-mapped uint8 cache of an image folder against the same epoch
fed from float32 tensors in memory, in one run.

A folder of generated 64 x 64 images (PNG and JPEG, N classes) is decoded once into the cache
(`folder:PATH,size=64`; the decode rate is printed); then epochs of ST training (the model's step,
backward and SGD update, batches from `TensorLoader`) alternate between the two sources, same model
copy, same batches, round by round (a load change on the machine hits both alike). The cached
epoch gathers uint8 rows from the memory map and converts each batch to float; the in-memory one
slices a float32 tensor. Median epoch times; last line `cache_overhead: X` (cached / in-memory
epoch time, target X <= 1.10).

    python bench/data_throughput.py [--images 320] [--rounds 5] [--model sgt-cnn] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sgtlab.data import TensorData, TensorLoader, dataset_info, load_dataset
from sgtlab.device import keep_freed_memory
from sgtlab.models import build_model
from sgtlab.train.methods import METHODS, MethodConfig, StepContext


def make_folder(root: Path, n: int, classes: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        # smooth class-dependent images (so JPEG is realistic), a bit larger than the cache size
        h, w = size + rng.integers(0, 32, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        img = (128 + 60 * np.sin(xx / (3 + c)) + 40 * np.cos(yy / 5) + rng.normal(0, 10, (h, w)))
        arr = np.clip(np.stack([img, img[::-1], img[:, ::-1]], 2), 0, 255).astype(np.uint8)
        path = root / f"class{c}" / f"{i}.{'png' if i % 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)


def epoch(model, opt, loader, cfg) -> float:
    step = METHODS.get("st").fn
    model.train()
    t0 = time.perf_counter()
    for i, (x, y, idx) in enumerate(loader):
        ctx = StepContext(idx=idx, epoch=0, step=i, state={}, module=model)
        loss, _ = step(model, x, y, cfg, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if loader.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    keep_freed_memory()  # as the sgtlab command does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5, help="timed epochs per source")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default="sgt-cnn")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_folder(root, args.images, args.classes, args.size)
        name = f"folder:{root},size={args.size},test=0.1"
        t0 = time.perf_counter()
        info = dataset_info(name)  # decodes into the cache
        build = time.perf_counter() - t0
        cached = load_dataset(name, "train")
        memory = TensorData(cached.x.clone(), cached.y.clone(), "in-memory")  # float32, in RAM
        print(f"{len(cached)} training images of {info.shape}; cache built in {build:.2f} s "
              f"({args.images / build:.0f} images/s decoded)")
        torch.manual_seed(0)
        base = build_model(args.model, info.shape[0], info.num_classes, info.mean, info.std,
                           input_size=info.shape[1:]).to(device)
        cfg = MethodConfig()
        times: dict[str, list[float]] = {"in-memory": [], "cached": []}
        runs = {}
        for label, data in (("in-memory", memory), ("cached", cached)):
            model = copy.deepcopy(base)
            runs[label] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                           TensorLoader(data, args.batch_size, shuffle=True, seed=0, device=device))
        for label, (model, opt, loader) in runs.items():  # warm-up epoch (page cache, allocator)
            epoch(model, opt, loader, cfg)
        for r in range(args.rounds):
            for label, (model, opt, loader) in runs.items():
                loader.set_epoch(r + 1)
                times[label].append(epoch(model, opt, loader, cfg))
        med = {k: statistics.median(v) for k, v in times.items()}
        for label, t in med.items():
            print(f"{label:10s} epoch {t:.3f} s (median of {args.rounds}; all: "
                  f"{', '.join(f'{v:.3f}' for v in times[label])}), {len(cached) / t:.0f} images/s")
        print(f"cache_overhead: {med['cached'] / med['in-memory']:.3f}")


if __name__ == "__main__":
    main()
