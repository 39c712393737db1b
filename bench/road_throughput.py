"""ROAD throughput: quantus 0.6.0's `ROAD` (one sparse `spsolve` per image and removal fraction,
then the model on each fraction's batch) against `sgtlab.evaluate.road.road` (every image and
fraction imputed at once by preconditioned conjugate gradients on the image grid, one batched
model pass).

256 MNIST test images (the original files when $SGTLAB_DATA or ../shared/data holds them, else
MNIST-5k), vanilla-gradient maps of a trained sgt-cnn, MoRF at removal fractions 10 %, ..., 90 %,
imputation noise 0 on both sides so that the numbers can be compared (quantus draws its noise from
NumPy's global generator). Checks that the accuracies per fraction agree to one image in 256 (a
pixel difference of ~1e-5 can flip only an image whose two best classes are that close). Both
sides run in this one process, one after the other; the ratio is what to read (timings on a
shared machine are noisy). Each side runs once untimed on 16 images first (lazy initialisation,
first-touch page faults), then `--repeats` times alternately; the ratio is that of the medians.
Last line: `road_speedup: X`.

    python bench/road_throughput.py [--n 256] [--run RUN_FOLDER] [--threads T] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aopc_throughput import test_images, trained_model  # noqa: E402

from sgtlab.device import keep_freed_memory  # noqa: E402
from sgtlab.evaluate.road import road  # noqa: E402
from sgtlab.explain import saliency_maps  # noqa: E402

FRACTIONS = [i / 10 for i in range(1, 10)]


def main() -> None:
    keep_freed_memory()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--run", default=None, help="a trained run folder (default: train sgt-cnn 1 epoch on MNIST-5k)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternating (median)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import quantus
    except ImportError:
        sys.exit("quantus is not installed: pip install scikit-image opencv-python-headless && "
                 "pip install --no-deps quantus==0.6.0")
    data, name = test_images(args.n)
    model = trained_model(args.run, torch.device("cpu")).eval()
    x, y = data.x, data.y
    maps = saliency_maps(model, x, y, "grad")
    print(f"{len(x)} {name} test images, grad maps, MoRF at {len(FRACTIONS)} fractions, {torch.get_num_threads()} threads")

    metric = quantus.ROAD(percentages=[round(f * 100) for f in FRACTIONS], noise=0.0, disable_warnings=True,
                          display_progressbar=False)

    def run_quantus(k):
        return metric(model=model, x_batch=x[:k].numpy(), y_batch=y[:k].numpy(), a_batch=maps[:k, None].numpy(),
                      device="cpu", batch_size=k)

    def run_ours(k):
        return road(model, x[:k], maps[:k], y[:k], order="morf", fractions=FRACTIONS, noise=0.0)

    run_quantus(16), run_ours(16)  # warm-up, untimed
    times_q, times_o = [], []
    for _ in range(max(1, args.repeats)):
        t = time.perf_counter()
        q_acc = run_quantus(len(x))
        times_q.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = run_ours(len(x))
        times_o.append(time.perf_counter() - t)
    t_quantus, t_ours = float(np.median(times_q)), float(np.median(times_o))
    print("quantus runs (s): " + ", ".join(f"{v:.2f}" for v in times_q) + "; sgtlab runs (s): "
          + ", ".join(f"{v:.2f}" for v in times_o))

    q = np.array([q_acc[round(f * 100)] for f in FRACTIONS])
    o = np.array(ours["accuracy"])
    print("fraction  quantus  sgtlab")
    for f, a, b in zip(FRACTIONS, q, o):
        print(f"{f:8.1f}  {a:7.4f}  {b:6.4f}")
    diff = float(np.abs(q - o).max())
    print(f"quantus {t_quantus:.2f} s, sgtlab {t_ours:.2f} s; largest accuracy difference {diff:.4f} "
          f"({diff * len(x):.0f} image(s))")
    if diff > 1 / len(x) + 1e-9:
        sys.exit("the two ROAD implementations disagree by more than one image")
    print(f"road_speedup: {t_quantus / t_ours:.2f}")


if __name__ == "__main__":
    main()
