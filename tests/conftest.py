"""Shared fixtures. `trained_run` trains the small CNN on MNIST-5k once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# SGTLAB_TEST_THREADS: threads per test process (scripts/mutation.sh sets 1: its tests use tiny
# models, whose ops are slower on two threads than on one as soon as the machine is busy)
torch.set_num_threads(int(os.environ.get("SGTLAB_TEST_THREADS") or 0) or max(1, min(2, os.cpu_count() or 1)))

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
