"""Shared CLI helpers: options generated from config dataclasses, and value parsers."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from sgtlab.errors import SgtlabError  # noqa: F401  (re-exported for commands)
from sgtlab.validate import finite_float, int64, parse_grid


def _base_type(tp):
    """`int | None` -> (int, True)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_dataclass_options(parser: argparse.ArgumentParser | Any, cls, skip: tuple[str, ...] = ()) -> None:
    """One `--option` per field of `cls`, with the field's default, help text and choices."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        tp, optional = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata["help"] + ("" if default is None else " (default: %(default)s)")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=f.metadata["help"])
        else:
            # floats must be finite, ints fit 64 bits: refused by argparse in one line
            kind = {float: finite_float, int: int64}.get(tp, tp)
            parser.add_argument(flag, dest=f.name, type=kind, default=default, choices=f.metadata.get("choices"),
                                help=help_text, metavar=None if f.metadata.get("choices") else f.name.upper())


DATASET_HELP = ("data set (default: the one the model was trained on): a name, folder:PATH[,size=N] or npz:PATH "
                "(see docs/data.md)")


def add_verify_option(parser) -> None:
    """`--no-verify`: skip the md5 comparison of data files with the official release (files one made)."""
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="do not md5-check the data files against the official release (for files you made "
                             "yourself in the same format; parsing stays as strict)")


def dataclass_from_args(cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **extra)


def parse_float_list(text: str) -> list[float]:
    """'0.1,0.3' or a range 'start:stop:step' (stop included) -> finite floats, at most
    sgtlab.validate.MAX_GRID of them; fractions too: '2/255,8/255', and a range of fractions with
    one denominator, '1/255:8/255:1/255', gives exactly k/255 for each k."""
    if "/" not in text:
        return parse_grid(text)
    if ":" in text:
        parts = [_fraction_parts(t, text) for t in text.split(":")]
        dens = {d for _, d in parts}
        if len(parts) == 3 and len(dens) == 1:  # exact k/d values
            d = dens.pop()
            return [k / d for k in parse_grid(":".join(repr(n) for n, _ in parts))]
        return parse_grid(":".join(repr(n / d) for n, d in parts))
    return parse_grid(",".join(repr(n / d) for n, d in (_fraction_parts(t, text) for t in text.split(",") if t.strip())))


def _fraction_parts(token: str, text: str) -> tuple[float, float]:
    """'8/255' -> (8.0, 255.0); '0.1' -> (0.1, 1.0)."""
    num, _, den = token.strip().partition("/")
    try:
        n, d = float(num), float(den) if den else 1.0
    except ValueError:
        raise SgtlabError(f"cannot read {text[:80]!r} as numbers: give '0.1,0.3', '2/255,8/255' or "
                          f"'start:stop:step'") from None
    if d == 0 or d != d or n != n:
        raise SgtlabError(f"{token.strip()!r} in {text[:80]!r} is not a finite number")
    return n, d


def parse_name_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
