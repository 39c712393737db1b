"""Data larger than memory: a PCAM-layout data set whose float32 form does not fit under an address-
space limit (resource.setrlimit in a child process) still trains for an epoch and is attacked,
because it stays uint8 (memory-mapped) and only batches become float; the float form of the same
split, asked for under that limit, fails to allocate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

N_TRAIN, N_TEST = 8000, 1000
IMAGE = 96 * 96 * 3

CHILD = r"""
import json, resource, sys
import torch
from torch import nn
from sgtlab.data import load_dataset
from sgtlab.evaluate.robustness import robustness_sweep
from sgtlab.models import register_model
from sgtlab.train import TrainConfig, fit

torch.set_num_threads(1)


@register_model("tiny-pool")  # a cheap model: the data path is what is measured
def tiny_pool(in_channels=3, num_classes=2):
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(in_channels * 12 * 12, num_classes))


def status(key):  # kB from /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


data_dir, out, limit_extra = sys.argv[1], sys.argv[2], int(sys.argv[3])
rss0, vm0 = status("VmRSS"), status("VmSize")
limit = vm0 + limit_extra
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
cfg = TrainConfig(dataset="pcam", model="tiny-pool", epochs=1, batch_size=200, lr=0.05, data_dir=data_dir,
                  eval_subset=200, device="cpu")
record = fit(cfg, out, progress=False)
test = load_dataset("pcam", "test", data_dir)
from sgtlab.train.checkpoint import load_model
model, _ = load_model(out)
res = robustness_sweep(model, test.subset(200), ["fgsm", "pgd"], [2 / 255], progress=False)
train = load_dataset("pcam", "train", data_dir)
try:
    train.x  # the float32 form of the whole split
    float_fits = True
except (MemoryError, RuntimeError):
    float_fits = False
print(json.dumps({"rss0": rss0, "peak": status("VmHWM"), "limit_extra": limit_extra, "epoch": record["epoch"],
                  "pgd": res.robust_accuracy["pgd"][2 / 255], "n": res.n, "float_fits": float_fits,
                  "storage": str(train.pixels.dtype)}))
"""


def test_larger_than_the_memory_limit_trains_and_is_attacked(tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    folder = tmp_path / "pcam"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            x = f.create_dataset("x", (n, 96, 96, 3), dtype=np.uint8)
            for s in range(0, n, 1000):  # written in chunks: this process stays small too
                x[s:s + 1000] = rng.integers(0, 256, (min(1000, n - s), 96, 96, 3), dtype=np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=rng.integers(0, 2, (n, 1, 1, 1), dtype=np.uint8))
    uint8_bytes = (N_TRAIN + N_TEST) * IMAGE  # 249 MB
    float_bytes = N_TRAIN * IMAGE * 4         # 885 MB: the float32 training split alone
    # the limit: address space at start + the uint8 data + 560 MB of working room (batches, the
    # allocator's cache, attack buffers), under the float form of the training split alone
    room = 560 * 2**20
    limit_extra = uint8_bytes + room
    assert limit_extra < float_bytes
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}  # one malloc arena: no 64 MB reservation per thread
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(tmp_path / "run"), str(limit_extra)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["epoch"] == 1 and m["n"] == 200 and 0 <= m["pgd"] <= 1 and m["storage"] == "torch.uint8"
    assert not m["float_fits"]  # the float32 form does not fit under the limit the training ran in
    grown = m["peak"] - m["rss0"]
    print(f"peak RSS growth {grown / 2**20:.0f} MiB; uint8 {uint8_bytes / 2**20:.0f} MiB, float32 training split "
          f"{float_bytes / 2**20:.0f} MiB, address-space limit start + {limit_extra / 2**20:.0f} MiB")
    # peak memory: the mapped pages of the uint8 cache plus the working room, not the float form
    assert grown < uint8_bytes + room < float_bytes, (grown, uint8_bytes)
