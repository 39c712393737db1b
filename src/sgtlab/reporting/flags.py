"""Runs that did not learn enough to be compared: `under_trained(rows)` flags a run whose final
training loss is within 10 % of chance (ln C, C the number of classes), whose clean accuracy is at
or below chance (1 / C), or whose clean accuracy is more than 10 pp below the ST run (method "st")
of the same data set and seed. Every table marks a flagged run with `MARK`, names it with its reason
in a footnote, and verdicts leave it out."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MARK = "†"
LOSS_WITHIN = 0.10  # final loss >= (1 - 0.10) ln C: within 10 % of chance
BELOW_ST = 0.10     # clean accuracy more than 10 pp below ST of the same seed
DEFAULT_CLASSES = 10


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _classes_of_dataset(name: Any) -> int | None:
    if not name:
        return None
    try:
        from sgtlab.data import dataset_info

        return int(dataset_info(str(name)).num_classes)
    except Exception:  # not a registered data set (tensors given in Python, a plug-in not imported)
        return None


def _classes_of_labels(root: Path | None, row: dict[str, Any]) -> int | None:
    """max label + 1 of the run's per-image table (the test images it was scored on), if it has one."""
    if root is None and not row.get("folder"):
        return None
    try:
        from sgtlab.reporting.data import per_sample

        table = per_sample(Path(root or "."), row)
    except Exception:
        return None
    if table is None or "label" not in table or not len(table["label"]):
        return None
    return int(max(table["label"])) + 1


def num_classes(row: dict[str, Any], rows: list[dict[str, Any]] = (), root: str | Path | None = None) -> int:
    """C of a row: its `num_classes`, else the largest `num_classes` of the rows on its data set,
    else the registered data set's, else the labels its per-image table holds, else 10."""
    c = _number(row.get("num_classes"))
    if c is None:
        same = [_number(r.get("num_classes")) for r in rows if r.get("dataset") == row.get("dataset")]
        c = max((v for v in same if v is not None), default=None)
    if c is None:
        c = _classes_of_dataset(row.get("dataset"))
    if c is None:
        c = _classes_of_labels(Path(root) if root is not None else None, row)
    return int(c) if c and c >= 2 else DEFAULT_CLASSES


def _st_of(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ST run of the same data set and seed (the same model when there are several)."""
    cands = [r for r in rows if str(r.get("method", "")).lower() == "st" and r.get("seed") == row.get("seed")
             and r.get("dataset") == row.get("dataset") and _number(r.get("clean_accuracy")) is not None]
    same_model = [r for r in cands if r.get("model") == row.get("model")]
    return (same_model or cands or [None])[0]


def _seed_text(row: dict[str, Any]) -> str:
    return f" (seed {row['seed']})" if row.get("seed") is not None else ""


def under_trained(rows: list[dict[str, Any]], root: str | Path | None = None) -> dict[str, str]:
    """run name -> one readable line saying why the run is flagged "under-trained" (runs not flagged
    are absent). A run is flagged when
      - its final training loss (`final_loss`) is >= 0.9 ln C (within 10 % of chance), or
      - its clean accuracy is at or below chance, 1 / C, or
      - its clean accuracy is more than 10 pp below the ST run's of the same data set and seed.
    Rows without `final_loss` (older folders) are judged on accuracy only. C: `num_classes` (see
    `num_classes`; 10 when nothing tells). `root`: the experiment folder, only to read labels."""
    out: dict[str, str] = {}
    for r in rows:
        reasons = []
        c = num_classes(r, rows, root)
        chance_loss = math.log(c)
        loss = _number(r.get("final_loss"))
        if loss is not None and loss >= (1 - LOSS_WITHIN) * chance_loss:
            reasons.append(f"final training loss {loss:.2f} is within 10 % of ln {c} = {chance_loss:.2f} (chance)")
        acc = _number(r.get("clean_accuracy"))
        if acc is not None:
            if acc <= 1 / c + 1e-9:
                reasons.append(f"clean accuracy {100 * acc:.1f} % is at or below chance (1/{c} = {100 / c:.1f} %)")
            else:
                st = _st_of(r, rows)
                if st is not None and st is not r:
                    st_acc = _number(st["clean_accuracy"])
                    gap = st_acc - acc
                    if gap > BELOW_ST + 1e-9:
                        reasons.append(f"clean accuracy {100 * acc:.1f} % is {100 * gap:.1f} pp below ST's "
                                       f"{100 * st_acc:.1f} %{_seed_text(r)}")
        if reasons:
            out[str(r["run"])] = "; ".join(reasons)
    return out


def marked(name: str, flagged: dict[str, str] | set[str]) -> str:
    """`name` with the flag mark when it is flagged."""
    return f"{name} {MARK}" if name in flagged else name


def flagged_labels(rows: list[dict[str, Any]], flagged: dict[str, str]) -> set[str]:
    """The method labels that hold at least one flagged run."""
    return {r["label"] for r in rows if str(r["run"]) in flagged}


def flag_lines(flagged: dict[str, str]) -> list[str]:
    """One line per flagged run: 'NAME: reason'."""
    return [f"{run}: {why}" for run, why in flagged.items()]


def footnote(flagged: dict[str, str], runs: list[str] | None = None) -> str:
    """The footnote of a table: each flagged run (of `runs`, when given) with its reason."""
    items = {k: v for k, v in flagged.items() if runs is None or k in runs}
    if not items:
        return ""
    return (f"{MARK} under-trained (left out of verdicts): "
            + "; ".join(f"{run}: {why}" for run, why in items.items()) + ".")
