"""Atomic writes: the file appears whole, with the permissions of a plainly written file."""
from __future__ import annotations

import os
import stat

import pytest

from sgtlab.io import append_line_atomic, atomic_path, write_json_atomic, write_text_atomic


def test_atomic_files_get_the_mode_of_a_plain_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_text_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "b.json", {"a": 1})
    for p in (tmp_path / "a.txt", tmp_path / "b.json"):
        assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "t.txt"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old\n"
    append_line_atomic(path, "new")
    assert path.read_text() == "old\nnew\n"
    assert sorted(os.listdir(tmp_path)) == ["t.txt"]
