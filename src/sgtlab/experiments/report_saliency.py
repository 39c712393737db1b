"""The saliency part of the report, drawn from each run's `interpretability.json`: the map grid
(rows: training methods, first seed; columns: the same test images), masked-accuracy, AOPC and
low-saliency curves (averaged over seeds) and per-image entropy distributions (pooled over seeds).
Figures for the first saliency method carry plain names (`saliency_grid.png`, ...); the others get
the method as a suffix."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sgtlab.figures.interpretability import CURVE_PLOTS, entropy_plot, saliency_grid
from sgtlab.io import read_json


def _load(root: Path, rows: list[dict]) -> dict[str, list[dict[str, Any]]]:
    """label -> the interpretability results of its runs (seed order)."""
    from sgtlab.experiments.runner import run_dir

    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["seed"] if r.get("seed") is not None else 0)):
        path = Path(r["folder"] if r.get("folder") else run_dir(root, r["run"])) / "interpretability.json"
        if path.exists():
            out.setdefault(r["label"], []).append(read_json(path))
    return out


def _mean_curve(curves: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean over seeds of list-valued entries; other entries from the first seed."""
    first = dict(curves[0])
    for key, value in first.items():
        if isinstance(value, list) and value and all(isinstance(c.get(key), list) and len(c[key]) == len(value)
                                                      for c in curves) and key not in ("p", "q", "k", "pgd_q"):
            first[key] = np.mean([c[key] for c in curves], axis=0).tolist()
    return first


def saliency_sections(root: Path, rows: list[dict], figs: Path, tables: Path) -> list[tuple[str, list[str]]]:
    from sgtlab.experiments.report import _img_tag

    results = _load(root, rows)
    if not results:
        return []
    methods = list(next(iter(results.values()))[0]["methods"])
    grids, curves, dists = [], [], []
    for i, method in enumerate(methods):
        suffix = "" if i == 0 else f"_{method}"
        first = {label: runs[0] for label, runs in results.items() if method in runs[0]["examples"]["maps"]}
        if not first:
            continue
        ref = next(iter(first.values()))["examples"]
        png = saliency_grid(ref["images"], {label: r["examples"]["maps"][method] for label, r in first.items()},
                            figs / f"saliency_grid{suffix}", labels=ref["labels"],
                            title=f"{method} saliency maps (rows: training methods, first seed)")[0]
        grids.append(_img_tag(png, f"{method} saliency maps"))
        for key, fn, title in CURVE_PLOTS:
            sel = {label: _mean_curve([r["curves"][method][key] for r in runs])
                   for label, runs in results.items() if all(key in r["curves"].get(method, {}) for r in runs)}
            if sel:
                png = fn(sel, figs / f"{key}{suffix}", title=f"{title} ({method}; mean over seeds)")[0]
                curves.append(_img_tag(png, f"{title} ({method})"))
        ent = {label: [v for r in runs for v in r["per_image"][method].get("entropy", [])]
               for label, runs in results.items()}
        ent = {k: v for k, v in ent.items() if v}
        if ent:
            png = entropy_plot(ent, figs / f"entropy{suffix}", title=f"Saliency entropy per image ({method})")[0]
            dists.append(_img_tag(png, f"entropy distribution ({method})"))
    return [("Saliency maps", grids), ("Saliency curves", curves), ("Saliency entropy", dists)]
