"""The `sgtlab` command. Each sub-command is one module with `add_parser(subparsers)` and
`run(args) -> int`; add a module name to COMMANDS to add a command."""
from __future__ import annotations

import argparse
import importlib
import sys

from sgtlab import __version__
from sgtlab.cli.handler import OneLineParser, run_command
from sgtlab.errors import SgtlabError
from sgtlab.validate import one_line

COMMANDS = ("train", "evaluate", "attack", "explain", "reproduce", "report", "benchmark")
IMPORT_HELP = ("import this Python module first (repeatable): a plug-in that registers models, data sets, "
               "training methods or attacks")


def add_import_option(parser: argparse.ArgumentParser, default=None) -> None:
    """`--import MODULE`, on the main parser and every command (main() reads it before the parser)."""
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                        default=argparse.SUPPRESS if default is None else default, help=IMPORT_HELP)


def load_imports(argv: list[str] | None) -> None:
    """Import the --import modules and the installed plug-ins before the parser lists any names."""
    from sgtlab.plugins import import_modules, load_plugins

    pre = argparse.ArgumentParser(add_help=False)
    add_import_option(pre, default=[])
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    import_modules(known.imports)
    load_plugins()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sgtlab",
        description="Train image classifiers with saliency-guided and adversarial methods, attack them, "
                    "measure their saliency maps, and reproduce the papers' experiments.",
    )
    parser.add_argument("--version", action="version", version=f"sgtlab {__version__}")
    add_import_option(parser, default=[])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sgtlab.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"sgtlab.cli.{name}":
                continue  # command not built yet
            raise
        p = module.add_parser(sub)
        add_import_option(p)
        p.set_defaults(_run=module.run, _resume=getattr(module, "resume_argv", None))
    return parser


def _one_line_warnings() -> None:
    """sgtlab's own warnings as one line each, without the source line Python adds."""
    import warnings

    from sgtlab.errors import SgtlabWarning

    default = warnings.showwarning
    if getattr(default, "sgtlab", False):
        return  # installed by an earlier main() in this process

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SgtlabWarning):
            print(f"sgtlab: warning: {one_line(str(message))}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    show.sgtlab = True
    warnings.showwarning = show


class _Sigint:
    """Whether a real Ctrl-C (SIGINT) arrived: a KeyboardInterrupt without one was raised by code
    (a plug-in), which is an error to report, not an interruption."""
    seen = False

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt


def _escape_output() -> None:
    """Names that are not UTF-8 (a file name of bytes) are printed escaped, not a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C at any moment (while the plug-ins or torch are imported too) exits 130 with one line."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    ours = previous is signal.default_int_handler
    if ours:
        _Sigint.seen = False
        signal.signal(signal.SIGINT, _Sigint.handler)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if ours and not _Sigint.seen:
            print("sgtlab: error: KeyboardInterrupt was raised without a Ctrl-C (by an --import module or an "
                  "installed plug-in?); fix or remove that plug-in", file=sys.stderr)
            return 2
        print("sgtlab: interrupted; run the command again to start it over", file=sys.stderr)
        return 130
    finally:
        if ours:
            signal.signal(signal.SIGINT, previous)


def _empty_paths(argv: list[str]) -> str | None:
    """An option of a path given as "" (`--out ""` would write into the current folder)."""
    for i, a in enumerate(argv):
        for opt in ("--out", "--data-dir", "--preset"):
            if (a == opt and i + 1 < len(argv) and not argv[i + 1].strip()) or (
                    a.startswith(f"{opt}=") and not a[len(opt) + 1:].strip()):
                return opt
    return None


def _main(argv: list[str]) -> int:
    _escape_output()
    empty = _empty_paths(argv)
    if empty:
        print(f"sgtlab: error: {empty} is empty; give a folder (e.g. {empty} runs/x), or leave the option out",
              file=sys.stderr)
        return 2
    try:
        load_imports(argv)
    except SgtlabError as e:
        print(f"sgtlab: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    from sgtlab.device import keep_freed_memory

    keep_freed_memory()  # a third faster on CPU (fewer page faults); see its doc
    _one_line_warnings()
    return run_command(args, argv)  # errors -> one line and exit 2; bugs -> a log file, exit 1
