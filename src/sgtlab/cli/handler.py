"""What the terminal sees when a command fails: a user's error (a `SgtlabError`, a bad option, a
file the system refuses) is one line on stderr and exit code 2; Ctrl-C names the exact command that
resumes; anything else is a bug in sgtlab: one line naming a log file that holds the traceback,
exit code 1. No Python traceback reaches the terminal."""
from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from sgtlab.errors import SgtlabError
from sgtlab.validate import one_line

# errors of the file system or of the user's files, not of sgtlab: reported as the user's to fix
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC,
                errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP, errno.EMFILE, errno.ENOTEMPTY,
                errno.EXDEV, errno.EIO}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def log_dir() -> Path:
    """$SGTLAB_LOG_DIR, else ~/.cache/sgtlab/logs (the temporary folder when neither is writable)."""
    env = os.environ.get("SGTLAB_LOG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sgtlab" / "logs"


def write_crash_log(argv: list[str]) -> Path | None:
    """The traceback of the exception being handled, with the command line, in a new log file.
    Never fails: what cannot be encoded (names that are not UTF-8) is escaped, a file that exists
    (or a link in its place) is not written through, and None says no log could be written."""
    try:
        from sgtlab import __version__

        stamp = time.strftime("%Y%m%d-%H%M%S")
        text = (f"sgtlab {__version__}, Python {sys.version.split()[0]}\ncommand: {shlex.join(['sgtlab', *argv])}\n"
                f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n\n{traceback.format_exc()}")
        folders = [log_dir(), Path(tempfile.gettempdir())]
    except Exception:  # noqa: BLE001  (the log of a crash must not crash)
        return None
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"sgtlab-crash-{stamp}-{os.getpid()}.log"
            with open(path, "x", encoding="utf-8", errors="backslashreplace") as f:  # "x": never through a link
                f.write(text)
            return path
        except (OSError, ValueError):
            continue
    return None


def _file_error(e: OSError) -> str:
    what = e.strerror or type(e).__name__
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    hint = {errno.ENOSPC: "free some space and run the command again",
            errno.EDQUOT: "free some space and run the command again",
            errno.EACCES: "check the permissions, or choose another folder",
            errno.EPERM: "check the permissions, or choose another folder",
            errno.EROFS: "choose a writable folder"}.get(e.errno, "check the path")
    return f"{what}: {' -> '.join(names) if names else 'a file'}; {hint}"


def run_command(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the parsed command; turn every failure into a one-line message and an exit code."""
    prog = f"sgtlab {args.command}"
    try:
        return args._run(args) or 0
    except SgtlabError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume: Callable[[list[str]], list[str]] | None = getattr(args, "_resume", None)
        if resume is None:
            print(f"{prog}: interrupted; run the command again to start it over", file=sys.stderr)
        else:
            print(f"{prog}: interrupted; to resume, run: {shlex.join(['sgtlab', *resume(argv)])}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of the command
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (so the interpreter's flush at exit is quiet)
        except OSError:
            pass
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory; use a smaller --n or --batch-size (or fewer --workers)", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno in _USER_ERRNOS:
            print(f"{prog}: error: {one_line(_file_error(e))}", file=sys.stderr)
            return 2
        return _internal(prog, argv)
    except Exception:  # noqa: BLE001  (a bug: logged, one line on the terminal)
        return _internal(prog, argv)


def _internal(prog: str, argv: list[str]) -> int:
    exc = sys.exc_info()[1]
    path = write_crash_log(argv)
    where = f"the traceback is in {path!s}" if path else "no log file could be written"
    print(f"{prog}: internal error ({type(exc).__name__}: {one_line(exc)[:200]}); this is a bug in sgtlab, "
          f"please report it; {where}", file=sys.stderr)
    return 1
