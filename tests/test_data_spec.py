"""Data set names with a path and options (`folder:PATH,size=64,skip-bad`) and the seeded
stratified split of `sgtlab.data.spec`: what a name means, exactly, and the split's sizes per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgtlab.data.spec import parse_spec, stratified_split
from sgtlab.errors import DataError

OPTS = {"size": int, "skip_bad": bool}


def test_data_options_parse_booleans_strictly():
    for text, want in (("", True), ("=true", True), ("=yes", True), ("=1", True), ("=on", True), ("=false", False),
                       ("=0", False), ("=off", False), ("=No", False), ("= no ", False)):
        assert parse_spec(f"folder:d,size=16,skip-bad{text}", OPTS) == (Path("d"), {"skip_bad": want, "size": 16})
    with pytest.raises(DataError, match=r"^folder:d,skip-bad=maybe: option skip_bad takes true or false, "
                                        r"got 'maybe'$"):
        parse_spec("folder:d,skip-bad=maybe", OPTS)
    with pytest.raises(DataError, match=r"^folder:d,size=x: option size takes a int, got 'x'$"):
        parse_spec("folder:d,size=x", OPTS)


def test_the_path_is_everything_before_the_trailing_options():
    assert parse_spec("npz:a:b.npz", OPTS) == (Path("a:b.npz"), {})  # only the first ':' ends the prefix
    assert parse_spec("folder:my,dir,size=16", OPTS) == (Path("my,dir"), {"size": 16})
    assert parse_spec("folder:d,foo=1,size=16", OPTS) == (Path("d,foo=1"), {"size": 16})  # unknown: path again
    assert parse_spec("folder:size=16", OPTS) == (Path("size=16"), {})  # the first part is always the path
    assert parse_spec("folder: d ,skip_bad", OPTS) == (Path("d"), {"skip_bad": True})
    assert parse_spec("npz:~/x.npz", OPTS)[0] == Path.home() / "x.npz"


def test_an_empty_path_names_the_options():
    with pytest.raises(DataError) as e:
        parse_spec("folder:,size=16", OPTS)
    assert str(e.value) == "folder:,size=16: give a path after 'folder:' (options after it: size=..., skip-bad)"


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_the_test_fraction_is_inside_0_1(fraction):
    with pytest.raises(DataError, match="must be in"):
        stratified_split(np.array([0, 0, 1, 1]), fraction)


def test_split_sizes_per_class():
    # class 0: one image (all to train); class 1: two (one each, whatever the fraction);
    # class 2: ten at 0.99 (nine to test: one always stays in train); class 3: ten at 0.99 likewise
    labels = np.array([0] + [1] * 2 + [2] * 10)
    s = stratified_split(labels, 0.99)
    count = lambda idx, c: int((labels[idx] == c).sum())  # noqa: E731
    assert [count(s["test"], c) for c in (0, 1, 2)] == [0, 1, 9]
    assert [count(s["train"], c) for c in (0, 1, 2)] == [1, 1, 1]
    s = stratified_split(labels, 0.01)  # at least one test image per class of two or more
    assert [count(s["test"], c) for c in (0, 1, 2)] == [0, 1, 1]
    s = stratified_split(np.array([0] * 10 + [1] * 10), 0.25)  # round(2.5) = 2 (banker's), per class
    assert len(s["test"]) == 4 and len(s["train"]) == 16
    both = np.sort(np.concatenate([s["train"], s["test"]]))
    assert np.array_equal(both, np.arange(20))
    again = stratified_split(np.array([0] * 10 + [1] * 10), 0.25)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(stratified_split(np.array([0] * 10 + [1] * 10), 0.25, seed=1)["test"], s["test"])


def test_an_empty_label_list_gives_two_empty_int_splits():
    s = stratified_split(np.zeros(0, np.int64), 0.2)
    for k in ("train", "test"):
        assert s[k].shape == (0,) and s[k].dtype == np.int64


def test_with_absolute_path_keeps_commas_in_the_path_and_the_options_as_written(tmp_path, monkeypatch):
    from sgtlab.data.spec import with_absolute_path

    monkeypatch.chdir(tmp_path)
    opts = {"size": int, "skip_bad": bool}
    assert with_absolute_path("folder:a,b,size=32,skip-bad", opts) == f"folder:{tmp_path / 'a,b'},size=32,skip-bad"
    assert with_absolute_path("folder:/x/y", opts) == "folder:/x/y"
    assert with_absolute_path(f"folder:{tmp_path}/./z/../w", opts) == f"folder:{tmp_path / 'w'}"
