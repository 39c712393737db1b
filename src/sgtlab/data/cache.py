"""The uint8 image cache: images converted once into a raw N x C x H x W uint8 file that later runs
memory-map, so a second run starts in seconds and data larger than memory stays on disk.

A cache is a folder holding `x.u8` (the raw pixels), `y.npy` (int64 labels), `stats.npy` (per-image
channel means and mean squares, float64 N x C x 2: the data set's statistics for any subset) and
`meta.json` (the source's fingerprint, shape, class names...), written last: a folder without it is
unfinished. It is built in a temporary folder and renamed into place, so a crash or a second
process building the same cache never leaves a half-written one; a lock file beside it makes a
second process wait for the first build and use it instead of decoding everything again, and the
temporaries of a killed build are removed by the next. A cache whose fingerprint differs from the
source's (resolved paths, sizes, modification times), or whose files do not hold what meta.json
says (labels out of range, wrong lengths), is rebuilt.

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from sgtlab.errors import DataError
from sgtlab.validate import MAX_CLASSES

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX: no build lock)
    fcntl = None

VERSION = 1  # bump when the layout or the decoding changes: old caches are rebuilt


def fingerprint(paths: Iterable[Path], extra: str = "") -> str:
    """sha1 over the resolved paths, sizes and modification times (not the contents: stat is cheap),
    so one folder named by a relative and an absolute path is one cache. A file that cannot be
    stat'ed (a dangling link) counts as missing: the decoder reports or skips it."""
    h = hashlib.sha1(f"v{VERSION}|{extra}".encode("utf-8", "surrogateescape"))
    for p in paths:
        try:
            p = Path(p).resolve()
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except (OSError, RuntimeError):  # missing, a dangling or looping link
            h.update(f"{p}|missing\n".encode("utf-8", "surrogateescape"))
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
    tag = hashlib.sha1(f"{source}|{key}".encode("utf-8", "surrogateescape")).hexdigest()[:12]
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


def _read_meta(folder: Path) -> dict | None:
    path = folder / "meta.json"
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 26:
            return None
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    n, shape = meta.get("n"), meta.get("shape")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or not isinstance(shape, list) or len(shape) != 3 \
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in shape):
        return None
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES):
        return None
    return meta


def _labels_ok(y: np.ndarray, n: int, meta: dict) -> bool:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        return False
    hi = len(meta["classes"]) if isinstance(meta.get("classes"), list) else MAX_CLASSES
    return n == 0 or (int(y.min()) >= 0 and int(y.max()) < hi)


def open_cache(folder: Path, fp: str) -> Cached | None:
    """The cache in `folder` if it is complete, built from the source with fingerprint `fp`, and
    its files hold what meta.json says (else None: it is rebuilt)."""
    meta = _read_meta(folder)
    if meta is None or meta.get("fingerprint") != fp or meta.get("version") != VERSION:
        return None
    n, shape = meta["n"], tuple(meta["shape"])
    try:
        y = np.load(folder / "y.npy", allow_pickle=False, mmap_mode="r")
        stats = np.load(folder / "stats.npy", allow_pickle=False, mmap_mode="r")
        size = (folder / "x.u8").stat().st_size
        if not _labels_ok(y, n, meta) or stats.shape != (n, shape[0], 2) or stats.dtype != np.float64:
            return None
        y, stats = np.array(y), np.array(stats)
    except (OSError, ValueError, TypeError):
        return None
    if size != n * int(np.prod(shape)):
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
    with _build_lock(folder):
        cached = open_cache(folder, fp)  # another process built it while this one waited
        if cached is not None:
            return cached
        _remove_stale(folder)
        return _build(folder, fp, shape, chunks, meta)


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `.NAME.lock` beside the cache folder, waited for (a second process
    building the same cache waits, then finds it built). A link there is not followed."""
    path = folder.with_name(f".{folder.name}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        raise DataError(f"cannot lock the cache {folder} ({e.strerror}: {path}); remove that file or set "
                        f"SGTLAB_CACHE to a writable folder") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale(folder: Path) -> None:
    """Temporaries of a build that was killed: with the build lock held, no live build owns one."""
    for e in os.scandir(folder.parent):
        if e.name.startswith((f".{folder.name}.tmp-", f".{folder.name}.old-")) and e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)


def _build(folder: Path, fp: str, shape: tuple[int, int, int], chunks, meta: dict) -> Cached:
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
        # json.dumps escapes what is not ASCII: names that are not UTF-8 (surrogates) too
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
