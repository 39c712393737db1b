"""AOPC throughput: a straightforward per-image, per-step loop (one forward pass per perturbed
image, as reference implementations do) against `sgtlab.evaluate.interpretability.aopc`: on a CPU,
for sgt-cnn, local recomputation over all images at once (`aopc_local`: each step recomputes only
the windows its patch changes, and the first Linear from the changed inputs); elsewhere all steps
of all images in large batches.

256 MNIST test images (the original files when $SGTLAB_DATA or ../shared/data holds them, else
MNIST-5k), L = 50 MoRF steps of 2 x 2 patches, vanilla-gradient maps, the same random fill values
in both; checks that both give the same AOPC to 1e-5. Last line: `aopc_speedup: X`.

    python bench/aopc_throughput.py [--n 256] [--steps 50] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sgtlab.data import load_dataset
from sgtlab.device import keep_freed_memory
from sgtlab.evaluate.interpretability import aopc
from sgtlab.explain import saliency_maps

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_images(n: int):
    for root in (os.environ.get("SGTLAB_DATA"), SHARED):
        if root and (Path(root) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return load_dataset("mnist", "test", root, download=False).subset(n), "mnist"
    return load_dataset("mnist5k", "test").subset(n), "mnist5k"


@torch.no_grad()
def aopc_loop(model, x, maps, fill, steps: int, patch: int = 2) -> torch.Tensor:
    """The straightforward version: per image, rank its patches, then per step replace one more
    patch and run the model on that single image."""
    out = []
    gw = -(-x.shape[3] // patch)
    for i in range(len(x)):
        scores = F.avg_pool2d(maps[i].abs()[None, None], patch, ceil_mode=True, divisor_override=1).flatten()
        order = torch.argsort(scores, descending=True, stable=True)
        p0 = F.softmax(model(x[i:i + 1]), 1)[0]
        c = int(p0.argmax())
        f0 = float(p0[c])
        xk = x[i].clone()
        total = 0.0  # k = 0 contributes f(x) - f(x) = 0
        for k in range(1, steps + 1):
            r, col = divmod(int(order[k - 1]), gw)
            win = (slice(None), slice(r * patch, (r + 1) * patch), slice(col * patch, (col + 1) * patch))
            xk[win] = fill[i][win]
            total += f0 - float(F.softmax(model(xk[None]), 1)[0, c])
        out.append(total / (steps + 1))
    return torch.tensor(out)


def trained_model(run, dev):
    """A trained model, so that AOPC values (and any disagreement) are of realistic size."""
    from sgtlab.train import TrainConfig, fit
    from sgtlab.train.checkpoint import load_model

    if run is None:
        run = Path(tempfile.mkdtemp(prefix="aopc-bench-")) / "st"
        fit(TrainConfig(dataset="mnist5k", method="st", epochs=1, batch_size=64, lr=0.05, seed=0, device="cpu"),
            run, progress=False)
    return load_model(run, dev)[0]


def main() -> None:
    keep_freed_memory()  # as the sgtlab command does: both sides run with it
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--run", default=None, help="a trained run folder (default: train sgt-cnn 1 epoch on MNIST-5k)")
    args = ap.parse_args()
    torch.manual_seed(0)
    data, name = test_images(args.n)
    dev = torch.device(args.device)
    model = trained_model(args.run, dev)
    x = data.x.to(dev)
    maps = saliency_maps(model, x, data.y.to(dev), "grad")
    fill = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)).to(dev)
    print(f"{len(x)} {name} test images, L = {args.steps} MoRF steps, 2 x 2 patches, sgt-cnn on {dev}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    # On a busy CPU, one-image model calls slow down far more than large batches: quote the load.

    aopc(model, x[:8], maps[:8], steps=args.steps, fill=fill[:8])  # warm-up, both paths
    aopc_loop(model, x[:2], maps[:2], fill[:2], args.steps)

    t = time.perf_counter()
    ours = aopc(model, x, maps, steps=args.steps, fill=fill)["aopc"]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = aopc_loop(model, x, maps, fill, args.steps)
    t_loop = time.perf_counter() - t

    diff = (ours - ref).abs().max().item()
    print(f"per-image loop: {t_loop:.2f} s   ours: {t_ours:.2f} s   "
          f"({len(x) * (args.steps + 1)} forward images each)")
    print(f"max |AOPC difference|: {diff:.2e} (mean AOPC {ours.mean():.4f})")
    if diff > 1e-5:
        raise SystemExit(f"the two implementations disagree: {diff:.2e} > 1e-5")
    print(f"aopc_speedup: {t_loop / t_ours:.2f}")


if __name__ == "__main__":
    main()
