"""validate (issue 28's mutation round): each check's bounds, types and messages, on dataclasses
and YAML made here."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

import pytest

from sgtlab.errors import SgtlabError
from sgtlab.validate import (INT_LIMIT, MAX_DEPTH, MAX_NODES, MAX_YAML_CHARS, SEED_LIMIT, check_fields, check_number,
                             check_plain, check_seed, finite_float, int64, list_names, load_yaml, one_line, parse_grid)


def test_bounds_are_inclusive_unless_open():
    assert check_number(0, "x", lo=0) == 0.0
    with pytest.raises(SgtlabError, match="x must be > 0, got 0"):
        check_number(0, "x", lo=0, lo_open=True)
    assert check_number(5, "x", integer=True, hi=5) == 5
    with pytest.raises(SgtlabError, match="x must be <= 5, got 6"):
        check_number(6, "x", hi=5)
    with pytest.raises(SgtlabError, match="x must be >= 1, got 0.5"):
        check_number(0.5, "x", lo=1)
    assert check_number(0.5, "x", lo=0, lo_open=True) == 0.5
    assert check_number(-7, "x") == -7.0


def test_numbers_have_the_right_type_and_size():
    out = check_number(3, "n")
    assert out == 3.0 and isinstance(out, float)
    out = check_number(3, "n", integer=True)
    assert out == 3 and isinstance(out, int)
    with pytest.raises(SgtlabError, match="n must be a number, got True"):
        check_number(True, "n")
    with pytest.raises(SgtlabError, match="n must be an integer, got '3'"):
        check_number("3", "n", integer=True)
    with pytest.raises(SgtlabError, match="n must be an integer, got 3.0"):
        check_number(3.0, "n", integer=True)
    with pytest.raises(SgtlabError, match="n must be a finite number, got nan"):
        check_number(float("nan"), "n")
    with pytest.raises(SgtlabError, match="n must be a finite number, got inf"):
        check_number(float("inf"), "n")
    assert check_number(INT_LIMIT, "n", integer=True) == INT_LIMIT
    assert check_number(-INT_LIMIT, "n", integer=True) == -INT_LIMIT
    with pytest.raises(SgtlabError, match="n must be at most 9223372036854775807 in size .64-bit., got a 20-digit"):
        check_number(-INT_LIMIT - 1, "n", integer=True)
    with pytest.raises(SgtlabError, match="got a 19-digit number"):
        check_number(INT_LIMIT + 1, "n", integer=True)
    assert len(str(check_number(float(10**300), "n"))) > 5  # floats have no size limit
    with pytest.raises(SgtlabError) as e:
        check_number("x" * 1000, "n")
    assert len(str(e.value)) == 300


def test_seeds_are_32_bit_and_not_negative():
    assert check_seed(0) == 0 and check_seed(SEED_LIMIT) == SEED_LIMIT
    with pytest.raises(SgtlabError, match="seed must be <= 4.29497e"):
        check_seed(SEED_LIMIT + 1)
    with pytest.raises(SgtlabError, match="seed must be >= 0, got -1"):
        check_seed(-1)
    with pytest.raises(SgtlabError, match="^s must be >= 0"):
        check_seed(-1, "s")
    with pytest.raises(SgtlabError, match="must be an integer"):
        check_seed(1.0)


def test_argparse_types():
    assert finite_float("1e-3") == 0.001
    for bad, msg in (("x", "'x' is not a number"), ("inf", "'inf' is not a finite number"),
                     ("nan", "'nan' is not a finite number")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            finite_float(bad)
    assert int64("-12") == -12 and int64(str(INT_LIMIT)) == INT_LIMIT and int64(str(-INT_LIMIT)) == -INT_LIMIT
    with pytest.raises(argparse.ArgumentTypeError, match="'1.5' is not an integer"):
        int64("1.5")
    with pytest.raises(argparse.ArgumentTypeError, match="^19-digit integer; the limit is 9223372036854775807$"):
        int64(str(INT_LIMIT + 1))


def test_grids_from_lists_and_ranges():
    assert parse_grid("0.1,0.3") == [0.1, 0.3]
    assert parse_grid("0.1, ,0.3,") == [0.1, 0.3]
    assert parse_grid("0:0.3:0.1") == [0.0, 0.1, 0.2, 0.3]  # stop included, rounded
    assert parse_grid("1:1:1") == [1.0]
    assert parse_grid("0:4:1", limit=5) == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(SgtlabError, match=r"range '0:5:1' has 6 values; the limit is 5: use a larger step"):
        parse_grid("0:5:1", limit=5)
    assert parse_grid("1,2,3", limit=3) == [1.0, 2.0, 3.0]
    with pytest.raises(SgtlabError, match="^4 values; the limit is 3$"):
        parse_grid("1,2,3,4", limit=3)
    for bad in ("0:1", "0:1:2:3", "a:1:1", "a,b"):
        with pytest.raises(SgtlabError, match="cannot read .* as numbers: give '0.1,0.3' or 'start:stop:step'"):
            parse_grid(bad)
    for bad, message in (("0:inf:1", "start, stop and step must be finite"),
                         ("nan:1:1", "start, stop and step must be finite"),
                         ("0:1:0", "needs step > 0 and stop >= start"),
                         ("2:1:1", "needs step > 0 and stop >= start")):
        with pytest.raises(SgtlabError, match=message):
            parse_grid(bad)
    with pytest.raises(SgtlabError, match="has 1e\\+09 values"):
        parse_grid("0:1e9:1")
    with pytest.raises(SgtlabError, match="^an empty list of values$"):
        parse_grid(",")
    with pytest.raises(SgtlabError, match=r"^inf in '0.1,inf' is not a finite number$"):
        parse_grid("0.1,inf")


def test_yaml_numbers_keys_and_limits():
    assert load_yaml("a: 1e-3\nb: .5\nc: 2E3\nd: 1.\ne: -1_0.5", "p") == {"a": 0.001, "b": 0.5, "c": 2000.0, "d": 1.0,
                                                                        "e": -10.5}
    assert load_yaml("a: x1e3\nb: 1e", "p") == {"a": "x1e3", "b": "1e"}
    with pytest.raises(SgtlabError, match="p.a: inf is not a finite number"):
        load_yaml("a: .inf", "p")
    with pytest.raises(SgtlabError, match="p.a: nan is not a finite number"):
        load_yaml("a: .NaN", "p")
    with pytest.raises(SgtlabError, match=r"not valid YAML .*the key 'a' is given twice \(line 3\); keep one"):
        load_yaml("a: 1\nb: 2\na: 3", "p")
    base = "x: &b {k: 1}\ny:\n  <<: *b\n  <<: *b\n  j: 2\n"
    assert load_yaml(base, "p")["y"] == {"k": 1, "j": 2}  # merge keys may repeat
    assert load_yaml("[1, {a: 1}, {a: 2}]", "p") == [1, {"a": 1}, {"a": 2}]  # one key per mapping
    with pytest.raises(SgtlabError, match="^p: not valid YAML"):
        load_yaml("a: [1", "p")
    with pytest.raises(SgtlabError, match="^p: a value YAML cannot read \\(ValueError: "):
        load_yaml("a: 2020-13-45", "p")
    with pytest.raises(SgtlabError, match="p.a: date values are not allowed"):
        load_yaml("a: 2020-01-02", "p")
    assert load_yaml("a" * MAX_YAML_CHARS, "p") == "a" * MAX_YAML_CHARS
    with pytest.raises(SgtlabError, match=f"^p: {MAX_YAML_CHARS + 1} characters, more than the limit of {MAX_YAML_CHARS}$"):
        load_yaml("a" * (MAX_YAML_CHARS + 1), "p")


def test_plain_data_is_counted_nested_and_typed():
    check_plain([0] * (MAX_NODES - 1), "w")  # the list itself is a value too
    with pytest.raises(SgtlabError, match=f"^w: more than {MAX_NODES} values"):
        check_plain([0] * MAX_NODES, "w")
    with pytest.raises(SgtlabError, match="^w: more than 3 values"):
        check_plain({"a": [1, 2, 3]}, "w", max_nodes=3)
    deep: list = []
    v = deep
    for _ in range(MAX_DEPTH):
        v.append([])
        v = v[0]
    check_plain(deep, "w")
    v.append(1)
    with pytest.raises(SgtlabError, match=f"^w.0.0.0.0.0.0.0.0.0.0.0.0.0: nested more than {MAX_DEPTH} levels deep"):
        check_plain(deep, "w")
    with pytest.raises(SgtlabError, match=r"^w.a.'b c': nested more than 1 levels"):
        check_plain({"a": {"b c": [1]}}, "w", max_depth=1)
    with pytest.raises(SgtlabError, match="^w.a: keys must be names, got 1"):
        check_plain({"a": {1: 2}}, "w")
    with pytest.raises(SgtlabError, match=r"^w.1: set values are not allowed .*got \{1\}"):
        check_plain([None, {1}], "w")
    with pytest.raises(SgtlabError, match="^w.x: -inf is not a finite number"):
        check_plain({"x": float("-inf")}, "w")
    check_plain({"s": "t", "b": True, "i": 3, "f": 1.5, "n": None, "l": [], "m": {}}, "w")
    with pytest.raises(SgtlabError) as e:
        check_plain(b"x" * 1000, "w")
    assert len(str(e.value)) == 300


def test_names_and_lines():
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line(12) == "12"
    assert list_names(["b", "a.x", "c-d+e", "A_1"]) == "A_1, a.x, b, c-d+e"
    assert list_names(["a b", "x\ny", 3]) == "3, 'a b', 'x\\ny'"
    assert list_names(["", "é"]) == "'', é"


@dataclasses.dataclass
class _Cfg:
    n: int = 1
    f: float = 0.5
    s: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})
    free: str = "x"
    b: bool = False
    o: Optional[int] = None
    u: "float | None" = None
    other: list = dataclasses.field(default_factory=list)


def test_config_fields_are_checked_by_their_declared_types():
    check_fields(_Cfg())
    check_fields(_Cfg(o=3, u=2.0, other=["anything"]))
    for cfg, msg in ((_Cfg(n=1.5), "^n must be an integer, got 1.5$"),
                     (_Cfg(f="x"), "^f must be a number, got 'x'$"),
                     (_Cfg(f=float("nan")), "^f must be a finite number"),
                     (_Cfg(s="c"), "^s must be one of: a, b; got 'c'$"),
                     (_Cfg(s=1), "^s must be a string, got 1$"),
                     (_Cfg(free=None), "^free must be a string, got None$"),
                     (_Cfg(b=1), "^b must be true or false, got 1$"),
                     (_Cfg(o="1"), "^o must be an integer"),
                     (_Cfg(u=True), "^u must be a number, got True$"),
                     (_Cfg(n=None), "^n must be an integer, got None$")):
        with pytest.raises(SgtlabError, match=msg):
            check_fields(cfg)
    check_fields(_Cfg(free="anything"))
    check_fields(_Cfg(n=5, f=2.0), {"n": (0, 5), "f": (None, 2)})
    with pytest.raises(SgtlabError, match="^n must be <= 5, got 6$"):
        check_fields(_Cfg(n=6), {"n": (0, 5)})
    with pytest.raises(SgtlabError, match="^f must be >= 1, got 0.5$"):
        check_fields(_Cfg(), {"f": (1, None)})


@dataclasses.dataclass
class _Snake:
    train_steps: int = 1


def test_field_names_print_as_options():
    with pytest.raises(SgtlabError, match="^train-steps must be an integer"):
        check_fields(_Snake(train_steps="x"))


def test_a_recursive_mapping_is_counted_not_refused_as_yaml():
    # PyYAML builds a self-referencing mapping lazily (deep=False); the depth limit then stops it
    with pytest.raises(SgtlabError, match=f"^p.x.x.x.x.x.x.x.x.x.x.x.x.x: nested more than {MAX_DEPTH} levels deep"):
        load_yaml("&a {x: *a}", "p")


def test_range_values_carry_ten_decimals():
    assert parse_grid("0.12345678912:0.12345678912:1") == [0.1234567891]
    assert parse_grid("0:0.2:0.1") == [0.0, 0.1, 0.2]  # not 0.30000000000000004-style noise
