"""Checks of untrusted values where they enter sgtlab: CLI options, `--set` values, presets, the
fields of the config dataclasses. Each check raises `SgtlabError` with one line saying what is wrong
and what is allowed; the limits are named constants so a message can state them.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from functools import lru_cache
from typing import Any

import yaml

from sgtlab.errors import SgtlabError

INT_LIMIT = 2**63 - 1         # every integer option fits a signed 64-bit integer (torch, numpy)
SEED_LIMIT = 2**32 - 1        # seeds: 0 .. 2**32-1 (what numpy's and torch's generators take everywhere)
MAX_GRID = 1000               # values in an eps / q grid
MAX_YAML_CHARS = 1_000_000    # characters of a preset file or a --set value
MAX_NODES = 20_000            # values in a preset (YAML aliases count once per use)
MAX_DEPTH = 12                # nesting of lists and mappings in a preset
MAX_CLASSES = 100_000         # classes of a data set / a checkpoint's model (labels 0 .. MAX_CLASSES-1)

# YAML 1.1 (PyYAML) reads `1e-3` as a string: it wants a dot in a float. People mean a number, as
# YAML 1.2 and JSON do, so this loader adds YAML 1.2's float pattern.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        """A key given twice is refused (PyYAML keeps the last silently: `dataset:` twice would train
        on the second without a word)."""
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen and key_node.value != "<<":
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {key_node.value!r} is given twice (line "
                                        f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def one_line(text: object) -> str:
    """A message on one line (error texts of libraries may hold newlines)."""
    return " ".join(str(text).split())


def list_names(names) -> str:
    """Names for a message, sorted; odd ones (spaces, newlines, non-strings) quoted with repr."""
    return ", ".join(n if isinstance(n, str) and re.fullmatch(r"[\w.+-]+", n) else repr(n)
                     for n in sorted(names, key=str))


def load_yaml(text: str, where: str) -> Any:
    """Plain data (mappings, lists, strings, numbers, booleans, null) from YAML text; anything else
    (tags such as !!binary or !!set, dates, huge or deeply nested documents) is refused."""
    if len(text) > MAX_YAML_CHARS:
        raise SgtlabError(f"{where}: {len(text)} characters, more than the limit of {MAX_YAML_CHARS}")
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass: no code runs)
    except yaml.YAMLError as e:
        raise SgtlabError(f"{where}: not valid YAML ({one_line(e)})") from None
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. a timestamp like 2020-13-45
        raise SgtlabError(f"{where}: a value YAML cannot read ({type(e).__name__}: {e})") from None
    check_plain(value, where)
    return value


def check_plain(value: Any, where: str, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Only JSON-like data, at most `max_nodes` values (counted per use, so an alias bomb is caught)
    nested at most `max_depth` deep; mapping keys must be strings."""
    count = 0
    stack = [(value, 0, where)]
    while stack:
        v, depth, path = stack.pop()
        count += 1
        if count > max_nodes:
            raise SgtlabError(f"{where}: more than {max_nodes} values (the limit); is something repeated?")
        if depth > max_depth:
            raise SgtlabError(f"{path}: nested more than {max_depth} levels deep (the limit)")
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise SgtlabError(f"{path}: keys must be names, got {k!r}")
                stack.append((x, depth + 1, f"{path}.{list_names([k])}"))  # odd keys quoted: one line
        elif isinstance(v, list):
            stack.extend((x, depth + 1, f"{path}.{i}") for i, x in enumerate(v))
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise SgtlabError(f"{path}: {v} is not a finite number")
        elif not (v is None or isinstance(v, (str, bool, int))):
            raise SgtlabError(f"{path}: {type(v).__name__} values are not allowed (use numbers, strings, "
                              f"booleans, lists and mappings), got {v!r}"[:300])


# -- numbers -------------------------------------------------------------------------------------

def check_number(value: Any, where: str, *, integer: bool = False, lo: float | None = None,
                 hi: float | None = None, lo_open: bool = False) -> int | float:
    """A finite int/float (not a bool) within [lo, hi] ((lo, hi] with lo_open); integers also
    within INT_LIMIT. Returns the value (a float for non-integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an integer" if integer else "a number"
        raise SgtlabError(f"{where} must be {kind}, got {value!r}"[:300])
    if integer and not isinstance(value, int):
        raise SgtlabError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SgtlabError(f"{where} must be a finite number, got {value}")
    if integer and abs(value) > INT_LIMIT:
        raise SgtlabError(f"{where} must be at most {INT_LIMIT} in size (64-bit), got a {len(str(value))}-digit number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise SgtlabError(f"{where} must be {'>' if lo_open else '>='} {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise SgtlabError(f"{where} must be <= {hi:g}, got {value:g}")
    return value if integer else float(value)


def check_seed(value: Any, where: str = "seed") -> int:
    return check_number(value, where, integer=True, lo=0, hi=SEED_LIMIT)


def finite_float(text: str) -> float:
    """argparse type: a finite float ('inf' and 'nan' are refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def int64(text: str) -> int:
    """argparse type: an integer that fits 64 bits."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if abs(v) > INT_LIMIT:
        raise argparse.ArgumentTypeError(f"{len(text)}-digit integer; the limit is {INT_LIMIT}")
    return v


def parse_grid(text: str, limit: int = MAX_GRID) -> list[float]:
    """'0.1,0.3' or a range 'start:stop:step' (stop included) -> at most `limit` finite floats.
    The size of a range is computed before any value is made, so '0:1e9:1e-9' costs nothing."""
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, step = (float(t) for t in parts)
            if not all(math.isfinite(v) for v in (start, stop, step)):
                raise SgtlabError(f"range {text!r}: start, stop and step must be finite numbers")
            if step <= 0 or stop < start:
                raise SgtlabError(f"range {text!r} needs step > 0 and stop >= start")
            count = (stop - start) / step
            if not count < limit:
                raise SgtlabError(f"range {text!r} has {count + 1:.3g} values; the limit is {limit}: use a "
                                  f"larger step")
            n = int(round(count))
            values = [round(start + i * step, 10) for i in range(n + 1)]
        else:
            items = [t for t in text.split(",") if t.strip()]
            if len(items) > limit:
                raise SgtlabError(f"{len(items)} values; the limit is {limit}")
            values = [float(t) for t in items]
    except ValueError:
        raise SgtlabError(f"cannot read {text[:80]!r} as numbers: give '0.1,0.3' or 'start:stop:step'") from None
    if not values:
        raise SgtlabError("an empty list of values")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise SgtlabError(f"{bad[0]} in {text[:80]!r} is not a finite number")
    return values


# -- config dataclasses --------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _field_types(cls) -> tuple[tuple[str, Any, bool, tuple | None], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, optional = hints[f.name], False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp, optional = args[0], len(args) < len(typing.get_args(tp))
        out.append((f.name, tp, optional, f.metadata.get("choices")))
    return tuple(out)


def check_fields(obj: Any, limits: dict[str, tuple[float | None, float | None]] | None = None) -> None:
    """Every int / float / str / bool field of a config dataclass has its declared type, ints fit
    64 bits, floats are finite, choices are respected; `limits` adds (lo, hi) bounds by field."""
    limits = limits or {}
    for name, tp, optional, choices in _field_types(type(obj)):
        v = getattr(obj, name)
        opt_name = name.replace("_", "-")
        if v is None and optional:
            continue
        if tp in (int, float):
            lo, hi = limits.get(name, (None, None))
            check_number(v, opt_name, integer=tp is int, lo=lo, hi=hi)
        elif tp is bool:
            if not isinstance(v, bool):
                raise SgtlabError(f"{opt_name} must be true or false, got {v!r}"[:300])
        elif tp is str:
            if not isinstance(v, str):
                raise SgtlabError(f"{opt_name} must be a string, got {v!r}"[:300])
            if choices and v not in choices:
                raise SgtlabError(f"{opt_name} must be one of: {', '.join(choices)}; got {v!r}"[:300])
