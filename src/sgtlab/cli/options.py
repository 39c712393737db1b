"""Shared CLI helpers: options generated from config dataclasses, and value parsers."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from sgtlab.errors import SgtlabError


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
            parser.add_argument(flag, dest=f.name, type=tp, default=default, choices=f.metadata.get("choices"),
                                help=help_text, metavar=None if f.metadata.get("choices") else f.name.upper())


def dataclass_from_args(cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **extra)


def parse_float_list(text: str) -> list[float]:
    """'0.1,0.3' or a range 'start:stop:step' (stop included) -> floats."""
    try:
        if ":" in text:
            start, stop, step = (float(t) for t in text.split(":"))
            if step <= 0 or stop < start:
                raise SgtlabError(f"range {text!r} needs step > 0 and stop >= start")
            n = int(round((stop - start) / step))
            values = [round(start + i * step, 10) for i in range(n + 1)]
        else:
            values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SgtlabError(f"cannot read {text!r} as numbers: give '0.1,0.3' or 'start:stop:step'") from None
    if not values:
        raise SgtlabError("an empty list of values")
    return values


def parse_name_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
