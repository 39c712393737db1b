"""The `sgtlab` command. Each sub-command is one module with `add_parser(subparsers)` and
`run(args) -> int`; add a module name to COMMANDS to add a command."""
from __future__ import annotations

import argparse
import importlib
import sys

from sgtlab import __version__
from sgtlab.errors import SgtlabError

COMMANDS = ("train", "evaluate", "attack", "explain", "reproduce", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sgtlab.device import keep_freed_memory

    keep_freed_memory()  # a third faster on CPU (fewer page faults); see its doc
    try:
        return args._run(args) or 0
    except SgtlabError as e:
        print(f"sgtlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sgtlab {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
