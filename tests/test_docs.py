"""Every code block of docs/python.md runs, in order, in a fresh folder: Python blocks in one
namespace, blocks starting with `# file: NAME` are written to that file, and each `sgtlab ...` line
of a bash block runs as the command (in this process)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def test_python_md_blocks_run(tmp_path, monkeypatch, capsys):
    from sgtlab import plugins
    from sgtlab.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # setenv first: delenv of an unset variable records nothing, so what the walk-through's code sets
    # (its plug-in's import) would outlive the test and reach later `sgtlab` subprocesses
    monkeypatch.setenv(plugins.ENV, "")
    monkeypatch.delenv(plugins.ENV)
    found = blocks(DOC.read_text())
    assert [lang for lang, _ in found].count("python") >= 6 and any(lang == "bash" for lang, _ in found)
    namespace: dict = {"__name__": "__doc__"}
    for i, (lang, code) in enumerate(found):
        if lang == "python":
            first = code.splitlines()[0]
            if first.startswith("# file: "):
                (tmp_path / first[len("# file: "):].strip()).write_text(code)
                continue
            exec(compile(code, f"{DOC.name} block {i}", "exec"), namespace)
        elif lang == "bash":
            for line in code.strip().splitlines():
                args = shlex.split(line)
                assert args[0] == "sgtlab", line
                assert main(args[1:]) == 0, (line, capsys.readouterr().err)
        else:
            pytest.fail(f"block {i}: unknown language {lang!r}")
    # what the walk-through promises
    assert (tmp_path / "report" / "report.html").exists()
    for run in ("runs/st", "runs/sgt", "runs/smooth"):
        for f in ("checkpoint.safetensors", "metrics.jsonl", "robustness.json", "interpretability.json"):
            assert (tmp_path / run / f).exists(), (run, f)
