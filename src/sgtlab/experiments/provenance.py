"""Where a result comes from: sgtlab's version (and git commit when run from a checkout), torch's
version, the device, the thread count, the date and the command line. Recorded in every run's
result row (so in results.csv) and printed by the report."""
from __future__ import annotations

import datetime
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def sgtlab_version() -> str:
    try:
        from importlib.metadata import version

        return version("sgtlab")
    except Exception:  # not installed (PYTHONPATH=src): the source tree's version is unknown
        return "unknown"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout sgtlab is imported from (with '+dirty' when it has changes), or None."""
    src = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "sgtlab"
    elif argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def provenance(device: Any = None) -> dict[str, Any]:
    import torch

    return {"sgtlab_version": sgtlab_version(), "git_commit": git_commit(), "torch_version": torch.__version__,
            "device": str(device) if device is not None else "cpu", "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command_line()}
