"""Data set names that carry a path and options: `folder:PATH,size=64,test=0.2` or `npz:PATH`.

Options are trailing `,key=value` (or `,flag`) items with known keys; everything before them is
the path (so a path may itself hold commas). The whole name is what checkpoints and presets store,
so `sgtlab attack RUN` finds the same data with the same settings.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sgtlab.errors import DataError

SPLIT_SEED = 0


def parse_spec(name: str, options: dict[str, type]) -> tuple[Path, dict]:
    """`prefix:PATH[,key=value...]` -> (PATH, {key: value}); keys and types from `options`
    (a bool option is a bare flag)."""
    path, opts, _ = _split(name, options)
    return path, opts


def with_absolute_path(name: str, options: dict[str, type]) -> str:
    """The same name with its PATH absolute (`npz:data.npz,test=0.2` -> `npz:/home/me/data.npz,test=0.2`):
    what a run stores, so a later command from another folder reads the same files, not whatever
    the relative path finds there. Options are kept as written."""
    prefix = name.split(":", 1)[0]
    path, _, tail = _split(name, options)
    return f"{prefix}:{path.resolve()}{tail}"


def _split(name: str, options: dict[str, type]) -> tuple[Path, dict, str]:
    """(PATH, options, the trailing option items as written, with their commas)."""
    prefix, rest = name.split(":", 1)
    opts: dict = {}
    parts = rest.split(",")
    while len(parts) > 1:
        key, _, value = parts[-1].partition("=")
        key = key.strip().replace("-", "_")
        if key not in options:
            break
        tp = options[key]
        try:
            opts[key] = _flag(value) if tp is bool else tp(value)
        except ValueError:
            kind = "true or false" if tp is bool else f"a {tp.__name__}"
            raise DataError(f"{name}: option {key} takes {kind}, got {value!r}") from None
        parts.pop()
    path = ",".join(parts).strip()
    if not path:
        keys = ", ".join(k.replace("_", "-") + ("" if t is bool else "=...") for k, t in options.items())
        raise DataError(f"{name}: give a path after '{prefix}:' (options after it: {keys})")
    tail = rest[len(",".join(parts)):]
    return Path(os.path.expanduser(path)), opts, tail


def _flag(value: str) -> bool:
    """A bare flag is on; `=true/false/yes/no/on/off/1/0` as said (bool("false") would be True)."""
    v = value.strip().lower()
    if v in ("", "true", "yes", "on", "1"):
        return True
    if v in ("false", "no", "off", "0"):
        return False
    raise ValueError(value)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """A fixed, seeded, stratified split: each class is shuffled and round(n * fraction) of it (at
    least one when the class has two or more) goes to test; both splits are then shuffled, so their
    first images mix the classes."""
    if not 0 < test_fraction < 1:
        raise DataError(f"the test fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(len(idx) * test_fraction))))
        test.append(idx[:k])
        train.append(idx[k:])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return {"train": rng.permutation(cat(train)), "test": rng.permutation(cat(test))}
