"""The saliency part of the report, drawn from each run's `interpretability.json` (and
`label_sanity.json`): the interpretability findings (each method against ST with paired intervals
over seeds and images, the papers' saliency claims with their measured verdict), the sanity-check
tables (cascading and, where the preset asks for it, label randomisation) and picture, the map
grid (rows: training methods, first seed; columns: the same test images), masked-accuracy, AOPC,
ROAD and low-saliency curves (averaged over seeds) and per-image entropy distributions (pooled over
seeds). Figures for the first saliency method carry plain names
(`saliency_grid.png`, ...); the others get the method as a suffix.

`saliency_sections` is the one entry point: it returns (heading, HTML parts) sections that the
main report embeds, and writes its tables (CSV, Markdown, LaTeX) and `saliency_findings.md`."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from sgtlab.experiments.label_sanity import RESULT as LABEL_SANITY
from sgtlab.experiments.store import run_dir
from sgtlab.figures.interpretability import CURVE_PLOTS, entropy_plot, saliency_grid, sanity_plot
from sgtlab.io import read_json
from sgtlab.reporting.saliency_findings import (claim_verdicts, comparison_table, comparisons, label_sanity_table,
                                                sanity_table)
from sgtlab.reporting.summary import img_tag


def _load(root: Path, rows: list[dict], name: str = "interpretability.json") -> dict[str, dict[int, dict[str, Any]]]:
    """label -> {seed: the result file `name` of that run} (seed order)."""
    out: dict[str, dict[int, dict]] = {}
    for r in sorted(rows, key=lambda r: (r["seed"] if r.get("seed") is not None else 0)):
        path = Path(r["folder"] if r.get("folder") else run_dir(root, r["run"])) / name
        if path.exists():
            seed = r["seed"] if r.get("seed") is not None else 0
            out.setdefault(r["label"], {})[seed] = read_json(path)
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
    by_seed = _load(root, rows)
    if not by_seed:
        return []
    results = {label: list(runs.values()) for label, runs in by_seed.items()}
    methods = list(next(iter(results.values()))[0]["methods"])
    sections = _findings_sections(by_seed, {r["label"]: r.get("method", "") for r in rows}, methods, figs, tables,
                                  _load(root, rows, LABEL_SANITY))
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
        grids.append(img_tag(png, f"{method} saliency maps"))
        for key, fn, title in CURVE_PLOTS:
            sel = {label: _mean_curve([r["curves"][method][key] for r in runs])
                   for label, runs in results.items() if all(key in r["curves"].get(method, {}) for r in runs)}
            if sel:
                png = fn(sel, figs / f"{key}{suffix}", title=f"{title} ({method}; mean over seeds)")[0]
                curves.append(img_tag(png, f"{title} ({method})"))
        ent = {label: [v for r in runs for v in r["per_image"][method].get("entropy", [])]
               for label, runs in results.items()}
        ent = {k: v for k, v in ent.items() if v}
        if ent:
            png = entropy_plot(ent, figs / f"entropy{suffix}", title=f"Saliency entropy per image ({method})")[0]
            dists.append(img_tag(png, f"entropy distribution ({method})"))
    return sections + [("Saliency maps", grids), ("Saliency curves", curves), ("Saliency entropy", dists)]


def _findings_sections(by_seed: dict[str, dict[int, dict]], train_method: dict[str, str], methods: list[str],
                       figs: Path, tables: Path, label_sanity: dict[str, dict[int, dict]] | None = None
                       ) -> list[tuple[str, list[str]]]:
    from sgtlab.io import write_text_atomic

    first = next(iter(next(iter(by_seed.values())).values()))
    target = first.get("options", {}).get("target", "true")
    what = "the true label" if target == "true" else "the model's prediction"
    texts = [f"Every map explains, and every perturbation metric (AOPC, ROAD, masked accuracy) scores, the same "
             f"class per image: {what}."]
    comps = comparisons(by_seed, train_method, methods)
    if comps:
        texts += claim_verdicts(comps, train_method, methods[0])
        for label in dict.fromkeys(c["label"] for c in comps):
            for method in methods[:1]:
                rel = [c for c in comps if c["label"] == label and c["saliency"] == method]
                better = [c["better"] for c in rel if c["direction"] == "better"]
                worse = [c["metric"] for c in rel if c["direction"] == "worse"]
                texts.append(f"{label} against ST ({method} maps, Holm-adjusted p < 0.05): "
                             + (f"better: {', '.join(better)}. " if better else "no metric significantly better. ")
                             + (f"Worse on: {', '.join(worse)}." if worse else "None significantly worse."))
    else:
        texts.append("No ST runs with saliency results to compare against: no paired comparisons.")
    table, flagged = sanity_table(by_seed, methods)
    if table is not None:
        texts.append("Sanity checks flagged (maps barely change when the model's weights are randomised: they "
                     "explain the input, not the model): " + ", ".join(flagged) + "." if flagged else
                     "No saliency method failed the sanity check (cascading randomisation).")
    label_table, label_flagged = label_sanity_table(label_sanity or {}, methods)
    if label_table is not None:
        texts.append("Label-randomisation check flagged (maps barely change when the model is trained on randomly "
                     "permuted labels: they explain the input, not what the model learnt): " + ", ".join(label_flagged)
                     + "." if label_flagged else
                     "No saliency method failed the label-randomisation check (maps of a model trained on random "
                     "labels differ from the real model's).")
    write_text_atomic(tables / "saliency_findings.md", "\n\n".join(f"- {t}" for t in texts) + "\n")
    parts = [f'<p class="finding">{html.escape(t)}</p>' for t in texts]
    if comps:
        t = comparison_table(comps)
        t.save(tables, "saliency_vs_st")
        parts += [f"<p>{html.escape(t.title)}</p>", t.html()]
    out = [("Interpretability findings", parts)]
    san_parts = []
    if label_table is not None:
        label_table.save(tables, "saliency_label_sanity_check")
        san_parts += [f"<p>{html.escape(label_table.title)}</p>", label_table.html()]
    if table is not None:
        table.save(tables, "saliency_sanity_checks")
        san_parts = [f"<p>{html.escape(table.title)}</p>", table.html()] + san_parts
        for i, method in enumerate(methods):
            series = {}
            for label, runs in by_seed.items():
                san = [r["sanity"] for r in runs.values() if r.get("sanity") and method in r["sanity"]["methods"]]
                if san:
                    series[label] = {"layers": san[0]["layers"], "threshold": san[0]["threshold"],
                                     "spearman_mean": np.mean([s["methods"][method]["spearman_mean"] for s in san], 0).tolist(),
                                     "ssim_mean": np.mean([s["methods"][method]["ssim_mean"] for s in san], 0).tolist()}
            if series:
                png = sanity_plot(series, figs / f"sanity{'' if i == 0 else '_' + method}",
                                  title=f"Sanity check, {method} maps (mean over seeds)")[0]
                san_parts.append(img_tag(png, f"sanity check ({method})"))
    if san_parts:
        out.append(("Saliency sanity checks", san_parts))
    return out
