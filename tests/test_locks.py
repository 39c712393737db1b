"""Folder locks: two commands never work in one experiment (or run) folder at once, the second is
refused at once naming the holder, and a SIGKILLed holder's lock is gone with it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtlab.errors import SgtlabError
from sgtlab.io import LOCK_FILE, folder_lock

SRC = Path(__file__).resolve().parents[1] / "src"
# enough work (about 10 s) that the second command, which needs a few seconds to start, meets the first
TINY = ["reproduce", "--set", "train.epochs=1", "--set", "train.train_subset=1500", "--set", "train.eval_subset=50",
        "--set", "seeds=[0]", "--set", "methods=[{method: st}, {method: sgt, k: 0.5}]", "--set", "attack.n=20",
        "--set", "attack.eps=[0.1]", "--set", "attack.attacks=[fgsm]", "--set", "attack.checks=false",
        "--set", "explain.methods=[]", "--workers", "1", "--no-progress", "--device", "cpu", "--out", "exp"]


def test_a_second_holder_is_refused_and_the_lock_ends_with_its_holder(tmp_path):
    folder = tmp_path / "exp"
    with folder_lock(folder, "experiment folder"):
        with pytest.raises(SgtlabError, match=f"in use by another sgtlab command \\(pid {os.getpid()} "):
            with folder_lock(folder, "experiment folder"):
                pass
    with folder_lock(folder):  # free again
        (folder / "data").write_text("x")
    assert sorted(p.name for p in folder.iterdir()) == ["data"]  # the lock file goes with the lock
    with folder_lock(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()  # made for nothing: removed again


def _start(cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "sgtlab", *TINY], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


def _holds(path: Path, pid: int) -> bool:
    return path.exists() and path.read_text().startswith(f"pid {pid} ")


def _epochs(exp: Path) -> dict[str, list[int]]:
    return {run.name: [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
            for run in sorted((exp / "runs").iterdir())}


def test_two_reproduce_commands_never_train_a_run_twice(tmp_path):
    exp = tmp_path / "exp"
    first = _start(tmp_path)
    _wait_for(lambda: _holds(exp / LOCK_FILE, first.pid), first)
    second = _start(tmp_path)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"is in use by another sgtlab command (pid {first.pid} " in err
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert _epochs(exp) == {"sgt-seed0": [1], "st-seed0": [1]}  # each run trained once, one epoch
    stamps = {r.name: (r / "checkpoint.safetensors").stat().st_mtime_ns for r in (exp / "runs").iterdir()}
    env = dict(os.environ, PYTHONPATH=str(SRC))
    dry = subprocess.run([sys.executable, "-m", "sgtlab", *TINY, "--dry-run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and dry.stdout.count(" done ") == 2, dry.stdout + dry.stderr
    assert stamps == {r.name: (r / "checkpoint.safetensors").stat().st_mtime_ns for r in (exp / "runs").iterdir()}


def test_a_sigkilled_holder_lets_the_next_command_start_at_once(tmp_path):
    exp = tmp_path / "exp"
    first = _start(tmp_path)
    _wait_for(lambda: _holds(exp / LOCK_FILE, first.pid) and (exp / "runs").is_dir(), first)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and anything it started
    first.communicate(timeout=60)
    second = _start(tmp_path)
    # the lock is the second's as soon as it gets there: never refused, never waiting on the dead one
    _wait_for(lambda: _holds(exp / LOCK_FILE, second.pid), second, timeout=60)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert _epochs(exp) == {"sgt-seed0": [1], "st-seed0": [1]}
