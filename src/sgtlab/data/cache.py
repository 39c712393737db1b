"""The uint8 image cache: images converted once into a raw N x C x H x W uint8 file that later runs
memory-map, so a second run starts in seconds and data larger than memory stays on disk.

A cache is a folder holding `x.u8` (the raw pixels), `y.npy` (int64 labels), `stats.npy` (per-image
channel means and mean squares, float64 N x C x 2: the data set's statistics for any subset) and
`meta.json` (the source's fingerprint, shape, class names...), written last: a folder without it is
unfinished. It is built in a temporary folder and renamed into place, so a crash or a second
process building the same cache never leaves a half-written one. A cache whose fingerprint differs
from the source's is rebuilt.

Where: `$SGTLAB_CACHE` if set, else a `.sgtlab-cache/` folder next to the data, else (not
writable) `~/.cache/sgtlab/cache`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from sgtlab.errors import DataError

VERSION = 1  # bump when the layout or the decoding changes: old caches are rebuilt


def fingerprint(paths: Iterable[Path], extra: str = "") -> str:
    """sha1 over the paths, sizes and modification times (not the contents: stat is cheap)."""
    h = hashlib.sha1(f"v{VERSION}|{extra}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_root(near: Path) -> Path:
    env = os.environ.get("SGTLAB_CACHE")
    if env:
        return Path(env).expanduser()
    here = near / ".sgtlab-cache"
    try:
        here.mkdir(exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=here, prefix=".probe-")
        probe.close()
        return here
    except OSError:
        return Path.home() / ".cache" / "sgtlab" / "cache"


def cache_dir(source: Path, key: str) -> Path:
    """The cache folder of `source` (a file or folder) for settings `key` (e.g. 'size=64,channels=3')."""
    source = source.resolve()
    tag = hashlib.sha1(f"{source}|{key}".encode()).hexdigest()[:12]
    return cache_root(source.parent) / f"{source.name}-{tag}"


@dataclass
class Cached:
    x: torch.Tensor   # uint8 N x C x H x W, memory-mapped read-only
    y: torch.Tensor   # int64 N
    stats: np.ndarray  # float64 N x C x 2 (channel mean, channel mean square per image)
    meta: dict

    def mean_std(self, idx: np.ndarray | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        s = self.stats if idx is None else self.stats[idx]
        if len(s) == 0:
            c = self.stats.shape[1]
            return (0.5,) * c, (0.25,) * c
        m, sq = s[:, :, 0].mean(0), s[:, :, 1].mean(0)
        std = np.sqrt(np.maximum(sq - m * m, 1e-12))
        return tuple(round(float(v), 4) for v in m), tuple(round(float(v), 4) for v in np.maximum(std, 1e-3))


def open_cache(folder: Path, fp: str) -> Cached | None:
    """The cache in `folder` if it is complete and built from the source with fingerprint `fp`."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != fp or meta.get("version") != VERSION:
        return None
    n, shape = meta["n"], tuple(meta["shape"])
    try:
        y = np.load(folder / "y.npy", allow_pickle=False)
        stats = np.load(folder / "stats.npy", allow_pickle=False)
        size = (folder / "x.u8").stat().st_size
    except (OSError, ValueError):
        return None
    if len(y) != n or stats.shape != (n, shape[0], 2) or size != n * int(np.prod(shape)):
        return None
    if n == 0:
        x = torch.empty((0, *shape), dtype=torch.uint8)
    else:
        try:  # read-only mapping: a copy-on-write one would be charged in full to the commit limit
            arr = np.memmap(folder / "x.u8", dtype=np.uint8, mode="r", shape=(n, *shape))
        except OSError as e:
            raise DataError(f"cannot memory-map {folder / 'x.u8'} ({e}); is the address space limited "
                            f"(ulimit -v)?") from None
        with warnings.catch_warnings():  # torch warns that it cannot write to it: nothing does
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(arr)
    return Cached(x, torch.from_numpy(y.astype(np.int64)), stats, meta)


def image_stats(x: np.ndarray, block: int = 64) -> np.ndarray:
    """Per-image channel mean and mean square of uint8 n x C x H x W, in [0, 1] units (n x C x 2),
    computed `block` images at a time (a float copy of a whole chunk would cost 4x its memory)."""
    out = np.empty((len(x), x.shape[1], 2))
    for s in range(0, len(x), block):
        xf = x[s:s + block].reshape(-1, x.shape[1], x[0, 0].size).astype(np.float32) / 255.0
        out[s:s + block, :, 0] = xf.mean(2)
        out[s:s + block, :, 1] = (xf * xf).mean(2)
    return out


def build_cache(folder: Path, fp: str, shape: tuple[int, int, int], chunks: Iterator[tuple[np.ndarray, np.ndarray]],
                meta: dict) -> Cached:
    """Write the (images uint8 n x C x H x W, labels n) chunks into `folder` and open it. `meta` is
    written after the last chunk (the chunks' generator may still add to it).

    Chunks are appended to a file (no mapping while writing: memory stays at one chunk)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache is as readable as its data
    try:
        ys, stats, n = [], [], 0
        with open(tmp / "x.u8", "wb") as f:
            for x, y in chunks:
                if x.shape[1:] != shape or x.dtype != np.uint8:
                    raise DataError(f"internal: a chunk of {x.dtype} {x.shape[1:]}, expected uint8 {shape}")
                f.write(np.ascontiguousarray(x).tobytes())
                stats.append(image_stats(x))
                ys.append(np.asarray(y, dtype=np.int64))
                n += len(x)
        np.save(tmp / "y.npy", np.concatenate(ys) if ys else np.zeros(0, np.int64))
        np.save(tmp / "stats.npy", np.concatenate(stats) if stats else np.zeros((0, shape[0], 2)))
        (tmp / "meta.json").write_text(json.dumps({**meta, "version": VERSION, "fingerprint": fp, "n": n,
                                                   "shape": list(shape)}))
        old = None
        if folder.exists():  # stale (the source changed): move it aside, then swap the new one in
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process put its (identical) cache there first
            pass
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # processes that mapped it keep their mapping
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cached = open_cache(folder, fp)
    if cached is None:
        raise DataError(f"the cache {folder} could not be read back after writing it; delete the folder and retry")
    return cached
