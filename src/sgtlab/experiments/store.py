"""Run folders as report rows. Every command writes the same layout into a run folder:

    config.json, metrics.jsonl, checkpoint.safetensors   sgtlab train / sgtlab.fit(out=RUN)
    robustness.json, robustness_per_sample.csv           sgtlab attack RUN / sgtlab.robustness(out=RUN)
    checks.json                                          sgtlab attack RUN --checks
    interpretability.json                                sgtlab explain RUN / sgtlab.saliency_metrics(out=RUN)
    result.json                                          sgtlab reproduce (the run's finished row)

`rows_from_folders` turns any mix of run folders and experiment folders into the rows of
`results.csv`, so `sgtlab report` builds the experiment report from them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgtlab.errors import SgtlabError

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.safetensors"
ROBUSTNESS, CHECKS, INTERPRETABILITY, RESULT = "robustness.json", "checks.json", "interpretability.json", "result.json"


def robustness_columns(stored: dict[str, Any]) -> dict[str, Any]:
    """robustness.json -> `clean_accuracy` and `rob:ATTACK:EPS` columns."""
    cols = {"clean_accuracy": stored["clean_accuracy"]}
    for name, curve in stored["robust_accuracy"].items():
        for eps, acc in curve.items():
            cols[f"rob:{name}:{float(eps):g}"] = acc
    return cols


def checks_columns(stored: dict[str, Any]) -> dict[str, Any]:
    """checks.json -> `check:NAME` columns (None: the check could not run)."""
    return {f"check:{name}": check["passed"] for name, check in stored.items()}


def saliency_columns(stored: dict[str, Any]) -> dict[str, Any]:
    """interpretability.json -> `sal:METHOD:METRIC` columns."""
    return {f"sal:{method}:{metric}": value for method, metrics in stored["summary"].items()
            for metric, value in metrics.items()}


def _json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SgtlabError(f"{path} is not readable JSON ({e}); delete it and run the command that writes it again") from None


def _last_metrics(path: Path) -> dict[str, Any]:
    last: dict[str, Any] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
    return last


def writable_run(folder: str | Path) -> bool:
    """A run folder that `attack` / `explain` may add their results to: not a finished `reproduce`
    run, whose files belong to its experiment (results.csv and the report were built from them)."""
    folder = Path(folder)
    return folder.is_dir() and not (folder / RESULT).exists()


def is_run(folder: Path) -> bool:
    return any((folder / f).exists() for f in (CONFIG, CHECKPOINT, RESULT, ROBUSTNESS, INTERPRETABILITY))


def row_from_run(folder: str | Path, name: str | None = None) -> dict[str, Any]:
    """One run folder -> one row of results.csv (plus `folder`, where the report finds its JSON files)."""
    folder = Path(folder)
    if not folder.is_dir() or not is_run(folder):
        raise SgtlabError(f"{folder} is not a run folder (no {CONFIG}, {CHECKPOINT}, {ROBUSTNESS} or "
                          f"{INTERPRETABILITY}); give folders written by train, attack, explain or reproduce")
    result = _json(folder / RESULT)
    if result is not None:  # a reproduce run: its row is final
        return {**result, "run": name or result.get("run", folder.name), "folder": str(folder)}
    cfg = _json(folder / CONFIG) or {}
    last = _last_metrics(folder / METRICS)
    method = cfg.get("method", "?")
    row: dict[str, Any] = {"run": name or folder.name, "label": method, "method": method, "seed": cfg.get("seed"),
                           "dataset": cfg.get("dataset"), "model": cfg.get("model"), "epochs": cfg.get("epochs")}
    rob = _json(folder / ROBUSTNESS)
    if rob is not None:
        row.update(robustness_columns(rob))
    elif last.get("test_accuracy") is not None:
        row["clean_accuracy"] = last["test_accuracy"]  # no attack run yet: the training's test accuracy
    else:
        raise SgtlabError(f"{folder} has no accuracy to report: run `sgtlab attack {folder}` (or train it with "
                          f"test data) first")
    checks = _json(folder / CHECKS)
    if checks is not None:
        row.update(checks_columns(checks))
    sal = _json(folder / INTERPRETABILITY)
    if sal is not None:
        row.update(saliency_columns(sal))
    row["train_test_accuracy"] = last.get("test_accuracy")
    row["folder"] = str(folder)
    return row


def _unique_names(folders: list[Path]) -> list[str]:
    names = [f.resolve().name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{f.resolve().parent.name}/{n}" for f, n in zip(folders, names)]
    if len(set(names)) < len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return names


def rows_from_folders(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Rows of every run in `paths`: run folders, and experiment folders (their results.csv runs)."""
    from sgtlab.experiments.runner import RESULTS_TABLE, read_results, run_dir

    rows: list[dict[str, Any]] = []
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / RESULTS_TABLE).exists():
            rows += [{**r, "folder": str(run_dir(p, r["run"]))} for r in read_results(p)]
        elif p.is_dir() and not is_run(p) and (p / "runs").is_dir():
            raise SgtlabError(f"{p} is an experiment folder without finished runs (no {RESULTS_TABLE})")
        else:
            runs.append(p)
    rows += [row_from_run(f, n) for f, n in zip(runs, _unique_names(runs))]
    if not rows:
        raise SgtlabError("no runs to report")
    seen: set[str] = set()
    for r in rows:
        if r["run"] in seen:
            r["run"] = f"{r['run']} ({r['folder']})"
        seen.add(r["run"])
    return rows
