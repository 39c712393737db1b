"""Atomic file writes (a crash never leaves a half-written checkpoint or table behind; temporaries of
killed writers are removed) and folder locks (two commands never work in one folder at once)."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sgtlab.errors import SgtlabError

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX: no locking)
    fcntl = None


class WriteError(SgtlabError, OSError):
    """A write the file system refused (disk full, permissions, read-only): one line for the user.
    Also an OSError, so code that retries on OSError (downloads) still does."""


# errnos of a refused write: the user's to fix (space, permissions), not a bug
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                 errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}


def write_failed(path: Path, detail: str) -> str:
    kept = "the previous file is kept" if path.is_file() else "nothing was written"
    return f"could not write {path} ({detail}); {kept}. Free some space or fix the permissions, then run again"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto `path` only on success.

    The temporary's name carries this host and process id, so a later write of the same file
    removes temporaries left by a killed process (and only those). A refused write (disk full,
    permissions) raises `WriteError` and keeps the previous file."""
    path = Path(path)
    refuse_link(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise WriteError(f"cannot write {path}: a folder of that name is in the way; move it or choose "
                             f"another output folder")
        remove_stale_temporaries(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(write_failed(path, e.strerror or str(e))) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        raise WriteError(write_failed(path, e.strerror or str(e))) from None
    finally:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass


MAX_JSON_BYTES = 1 << 28  # a results file larger than this (256 MB) is not one sgtlab wrote


class LinkRefused(SgtlabError):
    """A file sgtlab reads or writes in a folder is a symbolic link (it could reach any file)."""


def refuse_link(path: str | os.PathLike) -> None:
    """One line if `path` is a symbolic link: sgtlab does not follow links inside the folders it
    writes, where a link could make it overwrite (or read out) a file elsewhere."""
    if os.path.islink(path):
        raise LinkRefused(f"{path} is a symbolic link; sgtlab does not follow links in the folders it writes "
                          f"or reads results from: remove the link (or copy the file it points to there)")


def read_bytes_bounded(path: str | os.PathLike, limit: int, what: str = "file", follow: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or a one-line SgtlabError. Opened
    non-blocking, so a FIFO, a device or a socket is refused instead of hanging or being read
    without end; `follow=False` refuses a symbolic link too."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            refuse_link(path)
        raise SgtlabError(f"cannot read the {what} {path} ({e.strerror}); check the path") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise SgtlabError(f"the {what} {path} is {kind}; give a regular file")
        if st.st_size > limit:
            raise SgtlabError(f"the {what} {path} is {st.st_size} bytes, more than the {limit} a {what} can be; "
                              f"give the right file")
        chunks, size = [], 0
        while size <= limit:
            b = os.read(fd, min(1 << 20, limit + 1 - size))
            if not b:
                break
            chunks.append(b)
            size += len(b)
        if size > limit:
            raise SgtlabError(f"the {what} {path} is more than the {limit} bytes a {what} can be; give the right file")
        return b"".join(chunks)
    except OSError as e:
        raise SgtlabError(f"cannot read the {what} {path} ({e.strerror}); check the path") from None
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, kind: type = dict, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file sgtlab wrote earlier (a result, a config), read as untrusted: a damaged one is a
    one-line SgtlabError saying to delete it (the stage that wrote it then runs again). A symbolic
    link, a FIFO or a device is refused, and so is a file over `limit` bytes."""
    path = Path(path)
    try:
        value = json.loads(read_bytes_bounded(path, limit, "results file", follow=False).decode("utf-8"))
        if not isinstance(value, kind):
            raise ValueError(f"a {type(value).__name__}, not a {kind.__name__}")
    except LinkRefused:
        raise
    except (SgtlabError, OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        detail = " ".join(str(e).split())[:150]
        raise SgtlabError(f"{path} is damaged or unreadable ({detail}); delete it and run the command again "
                          f"(what wrote it is redone)") from None
    return value


# -- temporaries of interrupted writes --------------------------------------------------------------

STALE_AGE = 3600.0  # seconds after which a temporary without an owner tag (older sgtlab) is stale


def _owner() -> str:
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove `.NAME.*.tmp` files (every name when None) of `folder` left by a process that died
    mid-write: ones tagged with this host and a dead process id, and untagged ones older than
    STALE_AGE. Returns the removed paths."""
    removed = []
    host = socket.gethostname().replace(".", "_")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        n = e.name
        if not (n.startswith(".") and n.endswith(".tmp")) or (name is not None and not n.startswith(f".{name}.")):
            continue
        m = re.search(r"\.([^.]+)-(\d+)\.[^.]*\.tmp$", n)
        try:
            if m:
                stale = m.group(1) == host and not _alive(int(m.group(2)))
            else:
                stale = time.time() - e.stat().st_mtime > STALE_AGE
            if stale and e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


# -- folder locks ----------------------------------------------------------------------------------

LOCK_FILE = ".sgtlab.lock"
# files sgtlab writes or appends to in run and experiment folders: a symbolic link in the place of
# one is refused when the folder is locked, before any work (metrics.jsonl is appended to in place)
WRITTEN = ("config.json", "metrics.jsonl", "checkpoint.safetensors", "provenance.json", "robustness.json",
           "robustness_per_sample.csv", "checks.json", "interpretability.json", "interpretability.csv",
           "result.json", "run.json", "results.csv", "experiment.json", "report.md")


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder",
                busy_hint: str = "choose another output folder") -> Iterator[Path]:
    """Hold an OS lock (flock on `FOLDER/.sgtlab.lock`) on `folder` (created if needed) while a
    command works in it. The kernel drops the lock when the process ends, even by SIGKILL, so a lock
    is never stale (a killed holder's file stays, unlocked, and the next holder reuses it). A second
    holder is refused at once with one line naming the holder and `busy_hint`. The lock file is removed on release,
    and so is the folder when it was created here and holds nothing."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # made here: removed if left empty
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SgtlabError(f"{folder} is a file, not a folder; choose another output folder") from None
    except OSError as e:
        raise WriteError(f"cannot create the {what} {folder} ({e.strerror}); choose another output folder") from None
    if not folder.is_dir():
        raise SgtlabError(f"{folder} is not a folder; choose another output folder")
    path = folder / LOCK_FILE
    fd = _lock_file(path, folder, what, busy_hint)
    try:
        cmd = " ".join(["sgtlab", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith(("sgtlab", "__main__.py")) \
            else " ".join(sys.argv)
        for name in WRITTEN:
            refuse_link(folder / name)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}: "
                      f"{cmd[:200]}\n".encode("utf-8", "backslashreplace"), 0)
        remove_stale_temporaries(folder)
        yield folder
    finally:
        try:  # removed while still held: a waiting opener then finds another inode and retries
            path.unlink()
            for p in created:  # folders made for nothing (deepest first): leave nothing behind
                if os.listdir(p):
                    break
                p.rmdir()
        except OSError:
            pass
        os.close(fd)


def _lock_file(path: Path, folder: Path, what: str, busy_hint: str) -> int:
    """Open and flock `path`; the lock counts only if `path` is still that file afterwards (the
    holder before may have removed it on release), else try again."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for _ in range(100):
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP or os.path.islink(path):
                raise LinkRefused(f"the lock file {path} is a symbolic link, which could make sgtlab overwrite the "
                                  f"file it points to; remove the link and run the command again") from None
            raise WriteError(f"cannot lock the {what} {folder} ({e.strerror}: {path}); check its permissions") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            why = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a regular file"
            raise SgtlabError(f"the lock file {path} {why}, so writing it could change a file elsewhere; remove it "
                              f"and run the command again")
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise SgtlabError(f"the {what} {folder} is in use by another sgtlab command ({holder}); wait for "
                              f"it to end, or {busy_hint}") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise SgtlabError(f"cannot lock the {what} {folder}: its lock file keeps changing; try again")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:  # names that are not UTF-8 (surrogates) are written as the bytes they were
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def append_line_atomic(path: str | os.PathLike, line: str) -> None:
    """Append one line by rewriting the file atomically (files here are small: epochs, runs)."""
    path = Path(path)
    refuse_link(path)
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + line.rstrip("\n") + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
