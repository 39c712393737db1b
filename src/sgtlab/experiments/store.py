"""Where runs keep what they made, and run folders as report rows. An experiment folder holds
`runs/NAME/` (`run_dir`; complete once it has `result.json`) and `results.csv` (`read_results`,
`record_result`). Every command writes the same layout into a run folder:

    config.json, metrics.jsonl, checkpoint.safetensors   sgtlab train / sgtlab.fit(out=RUN)
    provenance.json                                      (the same: sgtlab, git commit, torch, device, date, ...)
    robustness.json, robustness_per_sample.csv           sgtlab attack RUN / sgtlab.robustness(out=RUN)
    checks.json                                          sgtlab attack RUN --checks
    interpretability.json                                sgtlab explain RUN / sgtlab.saliency_metrics(out=RUN)
    result.json                                          sgtlab reproduce (the run's finished row)

`rows_from_folders` turns any mix of run folders and experiment folders into the rows of
`results.csv`, so `sgtlab report` builds the experiment report from them.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

from sgtlab.errors import SgtlabError
from sgtlab.io import read_bytes_bounded, read_json, refuse_link, write_text_atomic

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.safetensors"
ROBUSTNESS, CHECKS, INTERPRETABILITY, RESULT = "robustness.json", "checks.json", "interpretability.json", "result.json"
PROVENANCE = "provenance.json"  # written by the training loop (sgtlab train / sgtlab.fit(out=RUN))
IDENTITY = "run.json"            # a reproduce run's resolved configuration and its hash
RESULTS_TABLE = "results.csv"    # an experiment folder's finished runs, one row each
EXPERIMENT = "experiment.json"   # an experiment folder's configuration
MAX_METRICS_BYTES = 1 << 26      # a metrics log larger than this (64 MB) is not one sgtlab wrote


# -- an experiment folder: OUT/runs/NAME/ and OUT/results.csv ---------------------------------------

def run_dir(root: Path, name: str) -> Path:
    return Path(root) / "runs" / name


def is_complete(root: Path, name: str) -> bool:
    return (run_dir(root, name) / RESULT).exists()


# -- the results table ------------------------------------------------------------------------------

def read_results(root: Path) -> list[dict[str, Any]]:
    path = Path(root) / RESULTS_TABLE
    if not os.path.lexists(path):
        return []
    text = read_bytes_bounded(path, MAX_METRICS_BYTES, "results table", follow=False)  # no link, FIFO, device
    try:
        return [_parse_row(r) for r in csv.DictReader(io.StringIO(text.decode("utf-8"), newline=""))]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SgtlabError(f"{path} is damaged ({type(e).__name__}); delete it: it is rebuilt from the runs' "
                          f"{RESULT} files") from None


def _parse_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v in ("", None):
            out[k] = None
        elif v in ("True", "False"):
            out[k] = v == "True"
        else:
            try:
                out[k] = int(v) if v.lstrip("-").isdigit() else float(v)
            except ValueError:
                out[k] = v
    return out


def csv_text(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as CSV text, the columns in order of first appearance (rows may differ in columns)."""
    rows = list(rows)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_results(root: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(Path(root) / RESULTS_TABLE, csv_text(rows))


def record_result(root: Path, row: dict[str, Any], order: list[str]) -> None:
    """Put a finished run's row into the table (replacing any row of the same run), atomically."""
    rows = {r["run"]: r for r in read_results(root)}
    rows[row["run"]] = row
    write_results(root, [rows[n] for n in order if n in rows] + [r for n, r in rows.items() if n not in order])


# -- run folders as rows ---------------------------------------------------------------------------

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


def final_loss(record: dict[str, Any]) -> float | None:
    """The last epoch's mean training loss that tells a converged run from an under-trained one: the
    cross-entropy on the clean input where the method logs it (part `ce`), else the adversarial CE
    (`ce_adv`, AT without --clean-loss), else the total loss; None without a metrics record."""
    train = record.get("train") if isinstance(record, dict) else None
    for key in ("ce", "ce_adv", "loss"):
        v = train.get(key) if isinstance(train, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def checkpoint_classes(folder: Path) -> int | None:
    """The number of classes of the run's model (its checkpoint's metadata); None without one."""
    from sgtlab.train.checkpoint import read_checkpoint_meta

    if not (Path(folder) / CHECKPOINT).exists():
        return None
    return read_checkpoint_meta(folder)["arch"]["num_classes"]


def _json(path: Path) -> dict[str, Any] | None:
    """A run's JSON file, or None without one; a damaged one, a link, a FIFO or a device is one line."""
    if not os.path.lexists(path):
        return None
    return read_json(path)


def _last_metrics(path: Path) -> dict[str, Any]:
    last: dict[str, Any] = {}
    if os.path.lexists(path):
        text = read_bytes_bounded(path, MAX_METRICS_BYTES, "metrics log", follow=False)
        for line in text.decode("utf-8", "replace").splitlines():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(row, dict):
                last = row
    return last


def writable_run(folder: str | Path) -> bool:
    """A run folder that `attack` / `explain` may add their results to: not a finished `reproduce`
    run, whose files belong to its experiment (results.csv and the report were built from them)."""
    folder = Path(folder)
    return folder.is_dir() and not (folder / RESULT).exists()


def check_replace(folder: str | Path, filename: str, request: dict[str, Any], old_request, overwrite: bool,
                  what: str) -> None:
    """Refuse to replace FOLDER/FILENAME, a finished result, by a different evaluation (`request`
    differs from what `old_request(stored)` finds in it: other images, attacks, eps, options, or
    data that changed since), or to write into a finished `reproduce` run, whose files belong to its
    experiment, unless the user passed --overwrite. A symbolic link there is refused always."""
    folder = Path(folder)
    path = folder / filename
    refuse_link(path)
    if overwrite:
        return
    if (folder / RESULT).exists():
        raise SgtlabError(f"{folder} is a finished run of `sgtlab reproduce`, whose {filename} belongs to its "
                          f"experiment: pass --out for this {what}'s results (or --overwrite to replace them)")
    if not path.exists():
        return
    old = old_request(read_json(path))
    if old == request:
        return
    if not isinstance(old, dict):
        detail = "written by an older sgtlab or another command, so it cannot be compared"
    else:
        diffs = _diffs(old, request)
        detail = ("the data it names has changed since" if all(k.split(".")[-1] == "data" for k, _, _ in diffs)
                  else "differs in " + ", ".join(_brief(*d) for d in diffs[:4]))
    raise SgtlabError(f"{path} holds a finished {what} of another evaluation ({detail}); it is kept: pass "
                      f"--overwrite to replace it, or --out another folder")


def _diffs(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    out = []
    for k in {**old, **new}:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diffs(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def _brief(key: str, old: Any, new: Any) -> str:
    text = lambda v: (json.dumps(v, default=str) if not isinstance(v, str) else v)[:40]  # noqa: E731
    return f"{key}: {text(old)} -> {text(new)}"


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
        # the images the evaluation used (the per-run table's n and Wilson intervals) and its sweep
        row.update({"n_test": rob.get("n"), "sweep": "from-scratch" if rob.get("from_scratch") else "nested"})
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
    row["final_loss"], row["num_classes"] = final_loss(last), checkpoint_classes(folder)  # under-trained?
    row.update(_json(folder / PROVENANCE) or {})  # sgtlab, git commit, torch, device, threads, date, command
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
