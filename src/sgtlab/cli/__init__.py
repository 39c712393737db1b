"""The `sgtlab` command. Each sub-command is one module with `add_parser(subparsers)` and
`run(args) -> int`; add a module name to COMMANDS to add a command."""
from __future__ import annotations

import argparse
import importlib
import sys

from sgtlab import __version__
from sgtlab.cli.handler import OneLineParser, run_command

COMMANDS = ("train", "evaluate", "attack", "explain", "reproduce", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sgtlab",
        description="Train image classifiers with saliency-guided and adversarial methods, attack them, "
                    "measure their saliency maps, and reproduce the papers' experiments.",
    )
    parser.add_argument("--version", action="version", version=f"sgtlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sgtlab.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"sgtlab.cli.{name}":
                continue  # command not built yet
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run, _resume=getattr(module, "resume_argv", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from sgtlab.device import keep_freed_memory

    keep_freed_memory()  # a third faster on CPU (fewer page faults); see its doc
    return run_command(args, argv)  # errors -> one line and exit 2; bugs -> a log file, exit 1
