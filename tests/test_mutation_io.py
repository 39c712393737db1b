"""io (issue 28's mutation round): bounded reads, stale temporaries, locks and atomic writes, each
checked for the behaviour a mutant would change."""
from __future__ import annotations

import os

import pytest

from sgtlab.errors import SgtlabError
from sgtlab.io import read_bytes_bounded


def test_a_file_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    assert read_bytes_bounded(p, 10) == b"x" * 10
    with pytest.raises(SgtlabError, match="is 10 bytes, more than the 9 a file can be"):
        read_bytes_bounded(p, 9)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SgtlabError, match="not a regular file"):
        read_bytes_bounded(tmp_path / "fifo", 10)


import json
import socket
import stat
import sys
import time
from pathlib import Path

import numpy as np

from sgtlab import io as sio
from sgtlab.io import (LOCK_FILE, STALE_AGE, LinkRefused, WriteError, append_line_atomic, atomic_path, folder_lock,
                       read_json, remove_stale_temporaries, write_json_atomic, write_text_atomic)

DEAD_PID = 4_194_305  # above any pid_max: no such process
HOST = socket.gethostname().replace(".", "_")


def test_reads_follow_links_only_when_asked_and_name_what_is_wrong(tmp_path):
    target = tmp_path / "t"
    target.write_bytes(b"abc")
    os.symlink(target, tmp_path / "link")
    assert read_bytes_bounded(tmp_path / "link", 10) == b"abc"
    with pytest.raises(LinkRefused, match="is a symbolic link"):
        read_bytes_bounded(tmp_path / "link", 10, follow=False)
    with pytest.raises(SgtlabError, match=r"cannot read the table .*missing \(No such file or directory\)"):
        read_bytes_bounded(tmp_path / "missing", 10, "table")
    with pytest.raises(SgtlabError, match="is a folder; give a regular file"):
        read_bytes_bounded(tmp_path, 10)
    big = tmp_path / "big"
    data = bytes(range(256)) * (3 * 4096 + 7)  # over 3 MB: read in several chunks
    big.write_bytes(data)
    assert read_bytes_bounded(big, len(data)) == data
    assert read_bytes_bounded(tmp_path / "t", 3, "x", follow=False) == b"abc"


def test_read_json_wants_the_kind_and_calls_anything_else_damaged(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"a": [1, 2]}')
    assert read_json(p) == {"a": [1, 2]}
    assert read_json(p, limit=len(p.read_bytes())) == {"a": [1, 2]}
    with pytest.raises(SgtlabError, match=r"r.json is damaged or unreadable \(a dict, not a list\); delete it"):
        read_json(p, list)
    with pytest.raises(SgtlabError, match="is damaged or unreadable .*more than the 5 a results file can be"):
        read_json(p, limit=5)
    p.write_text('[1]')
    assert read_json(p, list) == [1]
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(SgtlabError, match="damaged or unreadable"):
        read_json(p)
    os.symlink(p, tmp_path / "l.json")
    with pytest.raises(LinkRefused):
        read_json(tmp_path / "l.json")


def _touch(folder: Path, name: str, age: float = 0.0) -> Path:
    p = folder / name
    p.write_text("x")
    if age:
        t = time.time() - age
        os.utime(p, (t, t))
    return p


def test_only_temporaries_of_dead_writers_or_old_untagged_ones_are_removed(tmp_path):
    dead = _touch(tmp_path, f".a.json.{HOST}-{DEAD_PID}.abc.tmp")
    live = _touch(tmp_path, f".a.json.{HOST}-{os.getpid()}.abc.tmp")
    other_host = _touch(tmp_path, f".a.json.elsewhere-{DEAD_PID}.abc.tmp")
    old = _touch(tmp_path, ".a.json.abc.tmp", STALE_AGE + 100)
    young = _touch(tmp_path, ".a.json.abd.tmp", STALE_AGE - 100)
    other_name = _touch(tmp_path, f".b.json.{HOST}-{DEAD_PID}.abc.tmp")
    not_hidden = _touch(tmp_path, f"a.json.{HOST}-{DEAD_PID}.abc.tmp")
    not_tmp = _touch(tmp_path, f".a.json.{HOST}-{DEAD_PID}.abc.tmpx")
    folder = tmp_path / f".a.json.{HOST}-{DEAD_PID}.dir.tmp"
    folder.mkdir()
    link = tmp_path / f".a.json.{HOST}-{DEAD_PID}.lnk.tmp"
    os.symlink(not_tmp, link)
    removed = remove_stale_temporaries(tmp_path, "a.json")
    assert sorted(removed) == sorted([dead, old])
    for p in (live, other_host, young, other_name, not_hidden, not_tmp, folder):
        assert p.exists(), p
    assert os.path.lexists(link)
    assert remove_stale_temporaries(tmp_path) == [other_name]  # every name
    assert remove_stale_temporaries(tmp_path / "nowhere") == []


def test_a_process_is_alive_unless_it_does_not_exist():
    assert sio._alive(os.getpid())
    assert not sio._alive(DEAD_PID)
    assert sio._owner() == f"{HOST}-{os.getpid()}"


def test_atomic_writes_clean_up_dead_writers_and_refuse_what_is_in_the_way(tmp_path):
    stale = _touch(tmp_path, f".f.txt.{HOST}-{DEAD_PID}.abc.tmp")
    write_text_atomic(tmp_path / "f.txt", "hi")
    assert not stale.exists() and (tmp_path / "f.txt").read_text() == "hi"
    with atomic_path(tmp_path / "g.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".g.txt.{HOST}-{os.getpid()}.")
        assert tmp.name.endswith(".tmp")
        tmp.write_text("new")
    assert (tmp_path / "g.txt").read_text() == "new"
    (tmp_path / "d").mkdir()
    with pytest.raises(WriteError, match="a folder of that name is in the way"):
        write_text_atomic(tmp_path / "d", "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match=r"could not write .*file/x.txt \(.*\); nothing was written. Free some"):
        write_text_atomic(tmp_path / "file" / "x.txt", "y")
    os.symlink(tmp_path / "f.txt", tmp_path / "l.txt")
    with pytest.raises(LinkRefused):
        write_text_atomic(tmp_path / "l.txt", "x")
    with pytest.raises(LinkRefused):
        append_line_atomic(tmp_path / "l.txt", "x")
    assert (tmp_path / "f.txt").read_text() == "hi"
    write_text_atomic(tmp_path / "new" / "deep" / "h.txt", "made")  # parents made
    assert (tmp_path / "new" / "deep" / "h.txt").read_text() == "made"


def test_a_refused_replace_is_a_write_error_that_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "k.txt"
    path.write_text("old")

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio.os, "replace", full)
    with pytest.raises(WriteError, match=r"could not write .*k.txt \(No space left on device\); the previous file is kept"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["k.txt"]

    def odd(*a):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(sio.os, "replace", odd)
    with pytest.raises(OSError) as e:
        write_text_atomic(path, "new")
    assert not isinstance(e.value, WriteError) and e.value.errno == errno.EBADF
    assert sorted(os.listdir(tmp_path)) == ["k.txt"]


def test_atomic_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        assert sio._umask() == 0o027
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_json_is_sorted_indented_and_takes_arrays_and_paths(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"b": np.arange(2), "a": Path("/x/y")})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": "/x/y",\n  "b": [\n    0,\n    1\n  ]\n}\n'
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        write_json_atomic(tmp_path / "b.json", {"a": object()})
    assert json.loads((tmp_path / "a.json").read_text())["b"] == [0, 1]


def test_appended_lines_end_with_one_newline(tmp_path):
    p = tmp_path / "m.jsonl"
    append_line_atomic(p, "a\n")
    p.write_text(p.read_text() + "b")  # no final newline
    append_line_atomic(p, "c")
    assert p.read_text() == "a\nb\nc\n"


def test_the_lock_names_its_holder_and_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/sgtlab", "train", "--out", "x"])
    with folder_lock(tmp_path / "r") as f:
        assert f == tmp_path / "r"
        line = (f / LOCK_FILE).read_text()
    assert line.startswith(f"pid {os.getpid()} on {socket.gethostname()} since ")
    assert line.endswith(": sgtlab train --out x\n")
    monkeypatch.setattr(sys, "argv", ["/x/__main__.py", "report"])
    with folder_lock(tmp_path / "r") as f:
        assert (f / LOCK_FILE).read_text().endswith(": sgtlab report\n")
    monkeypatch.setattr(sys, "argv", ["script.py", "a" * 300])
    with folder_lock(tmp_path / "r") as f:
        assert (f / LOCK_FILE).read_text().endswith(": script.py " + "a" * 190 + "\n")
    assert not (tmp_path / "r").exists()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / LOCK_FILE).write_text("a killed holder's much longer line " * 20)  # left by a SIGKILL
    with folder_lock(tmp_path / "r") as f:
        assert (f / LOCK_FILE).read_text().startswith("pid ") and (f / LOCK_FILE).read_text().count("\n") == 1
        assert "killed" not in (f / LOCK_FILE).read_text()


def test_the_lock_refuses_files_links_and_shared_lock_files(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SgtlabError, match="is a file, not a folder"):
        with folder_lock(tmp_path / "file"):
            pass
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(tmp_path / "file", run / "metrics.jsonl")
    with pytest.raises(LinkRefused, match="metrics.jsonl is a symbolic link"):
        with folder_lock(run):
            pass
    os.unlink(run / "metrics.jsonl")
    os.symlink(tmp_path / "file", run / "report.md")
    with pytest.raises(LinkRefused, match="report.md is a symbolic link"):
        with folder_lock(run):
            pass
    os.unlink(run / "report.md")
    os.link(tmp_path / "file", run / LOCK_FILE)
    with pytest.raises(SgtlabError, match="has other hard links"):
        with folder_lock(run, "run folder"):
            pass
    os.unlink(run / LOCK_FILE)
    os.mkfifo(run / LOCK_FILE)
    with pytest.raises(SgtlabError, match="is not a regular file"):
        with folder_lock(run):
            pass
    os.unlink(run / LOCK_FILE)
    os.symlink(tmp_path / "file", run / LOCK_FILE)
    with pytest.raises(LinkRefused, match="the lock file .* is a symbolic link"):
        with folder_lock(run):
            pass
    assert (tmp_path / "file").read_text() == "x"


def test_the_lock_removes_stale_temporaries_and_only_the_folders_it_made(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = _touch(run, f".config.json.{HOST}-{DEAD_PID}.abc.tmp")
    with folder_lock(run):
        assert not stale.exists()
    assert run.is_dir() and os.listdir(run) == []  # not made here: kept
    with folder_lock(tmp_path / "a" / "b" / "c"):
        (tmp_path / "a" / "keep").write_text("x")
    assert sorted(os.listdir(tmp_path / "a")) == ["keep"]  # b and c were empty, a is not
    with folder_lock(tmp_path / "n" / "m"):
        pass
    assert not (tmp_path / "n").exists()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_lock_file_replaced_meanwhile_is_opened_again(tmp_path, monkeypatch):
    real = os.path.samestat
    calls = []

    def changed_once(a, b):
        calls.append(1)
        return len(calls) > 1 and real(a, b)

    monkeypatch.setattr(sio.os.path, "samestat", changed_once)
    fds = _open_fds()
    with folder_lock(tmp_path / "r"):
        assert len(calls) == 2 and _open_fds() == fds + 1  # the first descriptor was closed
    assert _open_fds() == fds
    calls.clear()
    monkeypatch.setattr(sio.os.path, "samestat", lambda a, b: calls.append(1) and False)
    with pytest.raises(SgtlabError, match="^cannot lock the run folder .*: its lock file keeps changing; try again$"):
        with folder_lock(tmp_path / "r", "run folder"):
            pass
    assert len(calls) == 100 and _open_fds() == fds


def test_a_lock_file_removed_meanwhile_is_opened_again(tmp_path, monkeypatch):
    real = os.stat
    seen = []

    def gone_once(path, *a, **kw):
        if str(path).endswith(LOCK_FILE) and not seen:
            seen.append(path)
            raise FileNotFoundError(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(sio.os, "stat", gone_once)
    with folder_lock(tmp_path / "r") as f:
        assert seen and (f / LOCK_FILE).read_text().startswith("pid ")


def test_a_holder_that_wrote_nothing_is_another_process(tmp_path):
    import fcntl

    (tmp_path / "r").mkdir()
    fd = os.open(tmp_path / "r" / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(SgtlabError, match=r"^the folder .*r is in use by another sgtlab command \(another process\); "
                                              r"wait for it to end"):
            with folder_lock(tmp_path / "r"):
                pass
    finally:
        os.close(fd)


def test_a_process_of_another_user_is_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sio.os, "kill", denied)
    assert sio._alive(12345)


def test_reads_are_close_on_exec_non_blocking_and_say_what_is_wrong(tmp_path, monkeypatch):
    import fcntl

    p = tmp_path / "f"
    p.write_bytes(b"abc")
    seen = []
    real_fstat = os.fstat

    def spy(fd):
        seen.append((fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK))
        return real_fstat(fd)

    monkeypatch.setattr(sio.os, "fstat", spy)
    assert read_bytes_bounded(p, 10) == b"abc"
    assert seen[0][0] and seen[0][1]
    monkeypatch.undo()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SgtlabError, match=r"^the table .*fifo is not a regular file \(a device, FIFO or socket\); give a "
                                          r"regular file$"):
        read_bytes_bounded(tmp_path / "fifo", 10, "table")


def test_short_reads_add_up_and_a_file_larger_than_it_says_is_refused(tmp_path, monkeypatch):
    real_read = os.read
    monkeypatch.setattr(sio.os, "read", lambda fd, n: real_read(fd, min(n, 3)))  # a pipe-like file system
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    assert read_bytes_bounded(p, 10) == b"0123456789"
    # /proc files say 0 bytes and hold more: the count of what was read refuses them
    with pytest.raises(SgtlabError, match=r"^the file /proc/self/status is more than the 10 bytes a file can be"):
        read_bytes_bounded("/proc/self/status", 10)
    with pytest.raises(SgtlabError, match="is more than the 9 bytes"):  # exactly the limit read, then more
        read_bytes_bounded("/proc/self/status", 9)
    monkeypatch.undo()
    with pytest.raises(SgtlabError, match="is more than the 10 bytes"):
        read_bytes_bounded("/proc/self/status", 10)


def test_a_damaged_json_names_at_most_150_characters_of_why(tmp_path):
    deep = tmp_path / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / "r.json").write_text('{"a": 1}')
    with pytest.raises(SgtlabError) as e:
        read_json(deep / "r.json", limit=2)
    detail = str(e.value).split("unreadable (", 1)[1].split("); delete it", 1)[0]
    assert len(detail) == 150 and detail.startswith("the results file ")


def test_owners_and_stale_temporaries_use_the_host_name_without_dots(tmp_path, monkeypatch):
    monkeypatch.setattr(sio.socket, "gethostname", lambda: "node.example.org")
    assert sio._owner() == f"node_example_org-{os.getpid()}"
    dead = _touch(tmp_path, f".a.json.node_example_org-{DEAD_PID}.abc.tmp")
    assert remove_stale_temporaries(tmp_path) == [dead]


def test_alive_only_asks_with_signal_0(monkeypatch):
    sent = []
    monkeypatch.setattr(sio.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    assert sio._alive(4321) and sent == [(4321, 0)]


def test_an_untagged_temporary_is_stale_only_after_the_age(tmp_path, monkeypatch):
    now = 2_000_000_000.0
    monkeypatch.setattr(sio.time, "time", lambda: now)
    at = _touch(tmp_path, ".a.json.abc.tmp")
    os.utime(at, (now - STALE_AGE, now - STALE_AGE))
    over = _touch(tmp_path, ".a.json.abd.tmp")
    os.utime(over, (now - STALE_AGE - 1, now - STALE_AGE - 1))
    assert remove_stale_temporaries(tmp_path) == [over] and at.exists()


def test_one_temporary_that_cannot_be_removed_does_not_stop_the_others(tmp_path, monkeypatch):
    for pid in (DEAD_PID, DEAD_PID + 1):
        _touch(tmp_path, f".a.json.{HOST}-{pid}.abc.tmp")
    real = os.unlink
    calls = []

    def first_fails(path, *a, **kw):
        calls.append(path)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied")
        return real(path, *a, **kw)

    monkeypatch.setattr(sio.os, "unlink", first_fails)
    removed = remove_stale_temporaries(tmp_path)
    assert len(calls) == 2 and len(removed) == 1 and str(removed[0]) == calls[1]


def test_the_lock_file_has_a_plain_files_mode_and_names_a_folder_in_its_place(tmp_path):
    old = os.umask(0o022)
    try:
        with folder_lock(tmp_path / "r") as f:
            assert stat.S_IMODE((f / LOCK_FILE).stat().st_mode) == 0o644
    finally:
        os.umask(old)
    (tmp_path / "d" / LOCK_FILE).mkdir(parents=True)
    with pytest.raises(WriteError, match=r"^cannot lock the run folder .*d \(Is a directory: .*\.sgtlab\.lock\); check its"):
        with folder_lock(tmp_path / "d", "run folder"):
            pass


def test_the_lock_files_refusals_in_full(tmp_path):
    (tmp_path / "file").write_text("x")
    run = tmp_path / "run"
    run.mkdir()
    os.link(tmp_path / "file", run / LOCK_FILE)
    with pytest.raises(SgtlabError, match=r"^the lock file .*\.sgtlab\.lock has other hard links, so writing it could "
                                          r"change a file elsewhere; remove it"):
        with folder_lock(run):
            pass
    os.unlink(run / LOCK_FILE)
    os.mkfifo(run / LOCK_FILE)
    with pytest.raises(SgtlabError, match=r"^the lock file .*\.sgtlab\.lock is not a regular file, so writing it"):
        with folder_lock(run):
            pass


def test_a_holders_line_is_read_as_text_up_to_1000_bytes(tmp_path):
    import fcntl

    (tmp_path / "r").mkdir()
    for text, shown in ((b"a" * 1100, "a" * 1000), (b"pid 7 \xff\xfe on x", "pid 7 \ufffd\ufffd on x")):
        path = tmp_path / "r" / LOCK_FILE
        path.write_bytes(text)
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(SgtlabError) as e:
                with folder_lock(tmp_path / "r"):
                    pass
            assert f"in use by another sgtlab command ({shown}); wait" in str(e.value)
        finally:
            os.close(fd)


def test_a_lock_file_that_vanished_is_opened_again(tmp_path, monkeypatch):
    real = os.stat
    looks = []

    def vanished_once(path, *a, **kw):
        if str(path).endswith(LOCK_FILE):
            looks.append(path)
            if len(looks) == 1:
                raise FileNotFoundError(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(sio.os, "stat", vanished_once)
    with folder_lock(tmp_path / "r"):
        assert len(looks) == 2


def test_text_keeps_bytes_that_are_not_utf8_and_lines_keep_their_spaces(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "caf\udce9 é")
    assert (tmp_path / "a.txt").read_bytes() == b"caf\xe9 \xc3\xa9"
    append_line_atomic(tmp_path / "b.txt", "x \t\n")
    append_line_atomic(tmp_path / "b.txt", "BOX")
    assert (tmp_path / "b.txt").read_text() == "x \t\nBOX\n"
