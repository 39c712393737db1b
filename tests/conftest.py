"""Shared fixtures. `trained_run` trains the small CNN on MNIST-5k once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Threads per test process: SGTLAB_TEST_THREADS (scripts/mutation.sh sets 1), else the cores shared
# out over pytest-xdist's workers, at most 2. Two workers of two threads each on 2 cores made the
# training tests about 1.5x slower (two concurrent SGA runs: 11.5 s at 2 threads, 7.5 s at 1).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
torch.set_num_threads(int(os.environ.get("SGTLAB_TEST_THREADS") or 0)
                      or max(1, min(2, (os.cpu_count() or 1) // _workers)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mnist_dir() -> Path | None:
    """The folder holding the original MNIST files, if this machine has them."""
    for cand in (os.environ.get("SGTLAB_DATA"), SHARED_DATA):
        if cand and (Path(cand) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return Path(cand)
    return None


needs_mnist = pytest.mark.skipif(mnist_dir() is None, reason="original MNIST files not found (set SGTLAB_DATA)")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """An ST-trained sgt-cnn on MNIST-5k (3 epochs, ~97 % test accuracy): a run folder."""
    from sgtlab.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("trained") / "st"
    fit(TrainConfig(dataset="mnist5k", method="st", epochs=3, batch_size=64, lr=0.05, seed=0, device="cpu"),
        out, progress=False)
    return out


@pytest.fixture(scope="session")
def trained_model(trained_run):
    from sgtlab.train.checkpoint import load_model

    model, _ = load_model(trained_run)
    return model


@pytest.fixture(scope="session")
def mnist5k_test():
    from sgtlab.data import load_dataset

    return load_dataset("mnist5k", "test")


@pytest.fixture
def autoattack_small_budgets(monkeypatch):
    """Standard AutoAttack with its members' budgets cut (5 iterations, 40 Square queries), so a test
    runs every member on every image in seconds; returns a dict that holds the last AutoAttack built."""
    import pyautoattack.autoattack as ref

    real = ref.AutoAttack._set_version
    seen = {}

    def smaller(self, version):
        real(self, version)
        self.apgd.n_iter = self.apgd_targeted.n_iter = self.fab.n_iter = 5
        self.square.n_queries = 40
        seen["aa"] = self

    monkeypatch.setattr(ref.AutoAttack, "_set_version", smaller)
    return seen
