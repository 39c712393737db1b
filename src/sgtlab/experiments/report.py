"""The experiment report: figures (PNG + PDF), tables (CSV, Markdown, LaTeX), a short text that
answers the papers' questions from the numbers, and one self-contained HTML file embedding it all.

Built only from what finished runs saved (results.csv, each run's JSON files), so
`sgtlab report FOLDER` can rebuild it at any time without a model or a GPU.
"""
from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgtlab.errors import SgtlabError  # noqa: E402
from sgtlab.experiments.runner import EXPERIMENT, read_results, run_dir  # noqa: E402
from sgtlab.experiments.tables import Table, fmt_ms, mean_std  # noqa: E402
from sgtlab.io import read_json, write_text_atomic  # noqa: E402

REPORT_DIR = "report"
HEADLINE_ATTACKS = ("pgd", "mifgsm", "fgsm")  # the strongest attack present leads the text


# -- grouping --------------------------------------------------------------------------------------

def labels_in_order(rows: list[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def by_label(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["label"]].append(r)
    return groups


def robust_columns(rows: list[dict]) -> dict[str, list[float]]:
    """attack -> sorted eps values present in the table."""
    out: dict[str, set[float]] = defaultdict(set)
    for r in rows:
        for k in r:
            if k.startswith("rob:"):
                _, attack, eps = k.split(":")
                out[attack].add(float(eps))
    return {a: sorted(e) for a, e in out.items()}


def curve_stats(group: list[dict], attack: str, eps_list: list[float]) -> tuple[list[float], list[float], list[float]]:
    """eps (with 0 = clean), mean and std over seeds of robust accuracy."""
    xs, ms, sds = [0.0], *[[v] for v in mean_std([r["clean_accuracy"] for r in group])]
    for e in eps_list:
        m, sd = mean_std([r.get(f"rob:{attack}:{e:g}") for r in group])
        xs.append(e), ms.append(m), sds.append(sd)
    return xs, ms, sds


# -- comparisons for the text ----------------------------------------------------------------------

def compare(groups: dict[str, list[dict]], a: str, b: str, attack: str, eps_list: list[float]) -> dict[str, Any]:
    """Robust accuracy of label `a` minus label `b` under `attack`, averaged over the eps grid.

    A difference is called clear only when it exceeds the sum of the two seed standard deviations
    (the ±1 sd bands do not overlap) and both have at least two seeds; otherwise it is within the
    spread over seeds."""
    diffs, sds_a, sds_b = [], [], []
    for e in eps_list:
        ma, sa = mean_std([r.get(f"rob:{attack}:{e:g}") for r in groups[a]])
        mb, sb = mean_std([r.get(f"rob:{attack}:{e:g}") for r in groups[b]])
        diffs.append(ma - mb), sds_a.append(sa), sds_b.append(sb)
    d = sum(diffs) / len(diffs)
    sa, sb = sum(sds_a) / len(sds_a), sum(sds_b) / len(sds_b)
    n = min(len(groups[a]), len(groups[b]))
    return {"a": a, "b": b, "attack": attack, "diff": d, "per_eps": dict(zip(eps_list, diffs)), "sd_a": sa,
            "sd_b": sb, "n_seeds": n, "clear": n >= 2 and abs(d) > sa + sb}


def describe_comparison(c: dict[str, Any], eps_list: list[float]) -> str:
    pp = 100 * c["diff"]
    lo, hi = min(c["per_eps"].values()), max(c["per_eps"].values())
    how = (f"{abs(pp):.1f} percentage points {'higher' if pp > 0 else 'lower'} robust accuracy than"
           if round(pp, 1) != 0 else "the same robust accuracy as")
    text = (f"Under {c['attack'].upper()}, {c['a']} has {how} {c['b']} on average over eps "
            f"{eps_list[0]:g}–{eps_list[-1]:g} (per eps from {100 * lo:+.1f} to "
            f"{100 * hi:+.1f} pp); the seed standard deviations are {100 * c['sd_a']:.1f} and "
            f"{100 * c['sd_b']:.1f} pp over {c['n_seeds']} seed(s). ")
    if c["n_seeds"] < 2:
        text += "With a single seed there is no spread to judge by: treat this as anecdotal."
    elif c["clear"]:
        text += f"The difference exceeds the spread over seeds: {c['a']} is {'more' if pp > 0 else 'less'} robust here."
    else:
        text += "The difference is within the spread over seeds: no clear effect."
    return text


def findings(rows: list[dict]) -> list[str]:
    groups = by_label(rows)
    cols = robust_columns(rows)
    attack = next((a for a in HEADLINE_ATTACKS if a in cols), next(iter(cols), None))
    if attack is None:
        return ["No robustness results yet."]
    eps_list = cols[attack]
    method_of = {r["label"]: r["method"] for r in rows}
    labels = labels_in_order(rows)
    st = [l for l in labels if method_of[l] == "st"]
    sgt = [l for l in labels if method_of[l] == "sgt"]
    asgt = [l for l in labels if method_of[l] == "asgt"]
    at = [l for l in labels if method_of[l] in ("at-pgd", "at-fgsm")]
    out = []
    if st and sgt:
        for s in sgt:
            c = compare(groups, s, st[0], attack, eps_list)
            out.append("Does SGT raise or lower robust accuracy against ST? " + describe_comparison(c, eps_list))
    for a in asgt:
        for other in sgt + at:
            c = compare(groups, a, other, attack, eps_list)
            out.append(f"Does ASGT beat {other}? " + describe_comparison(c, eps_list))
    clean = {l: mean_std([r["clean_accuracy"] for r in groups[l]]) for l in labels}
    out.append("Clean accuracy: " + "; ".join(f"{l} {fmt_ms(*clean[l], percent=True)} %" for l in labels) + ".")
    flagged = sorted({f"{r['run']} ({k[6:]})" for r in rows for k, v in r.items() if k.startswith("check:") and v is False})
    if flagged:
        out.append("Gradient-masking checks flagged: " + ", ".join(flagged) + ". Robust accuracies of these runs may "
                   "be overestimated; see the checks table.")
    elif any(k.startswith("check:") for r in rows for k in r):
        skipped = any(v is None for r in rows for k, v in r.items() if k.startswith("check:"))
        out.append("No gradient-masking check flagged a run" + (
            " (some checks could not run, e.g. the gradient-free one without pyautoattack: see the checks table)."
            if skipped else ": the attacks behave as expected on every run."))
    return out


# -- figures ---------------------------------------------------------------------------------------

def save_figure(fig, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{stem}.png"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    fig.savefig(folder / f"{stem}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def robustness_figure(rows: list[dict], folder: Path) -> Path | None:
    cols = robust_columns(rows)
    if not cols:
        return None
    groups, labels = by_label(rows), labels_in_order(rows)
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.6), squeeze=False, sharey=True)
    for ax, (attack, eps_list) in zip(axes[0], cols.items()):
        for label in labels:
            xs, ms, sds = curve_stats(groups[label], attack, eps_list)
            line, = ax.plot(xs, ms, marker="o", ms=3, label=label)
            ax.fill_between(xs, [m - s for m, s in zip(ms, sds)], [m + s for m, s in zip(ms, sds)],
                            color=line.get_color(), alpha=0.18, lw=0)
        ax.set_title(attack.upper())
        ax.set_xlabel("eps (L-inf, pixel units)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("robust accuracy")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    n = max(len(g) for g in groups.values())
    fig.suptitle(f"Robust accuracy (mean over seeds, band: ±1 sd; up to {n} seeds)", fontsize=10)
    return save_figure(fig, folder, "robust_accuracy")


def clean_accuracy_figure(rows: list[dict], folder: Path) -> Path:
    groups, labels = by_label(rows), labels_in_order(rows)
    stats = [mean_std([r["clean_accuracy"] for r in groups[l]]) for l in labels]
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 3.2))
    ax.bar(range(len(labels)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    lo = min(m - s for m, s in stats)
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_ylabel("clean test accuracy")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, folder, "clean_accuracy")


# -- tables ----------------------------------------------------------------------------------------

def accuracy_table(rows: list[dict]) -> Table:
    groups, labels, cols = by_label(rows), labels_in_order(rows), robust_columns(rows)
    header = ["method", "seeds", "clean"] + [f"{a} {e:g}" for a, es in cols.items() for e in es]
    body = []
    for l in labels:
        g = groups[l]
        cells = [l, str(len(g)), fmt_ms(*mean_std([r["clean_accuracy"] for r in g]), percent=True)]
        cells += [fmt_ms(*mean_std([r.get(f"rob:{a}:{e:g}") for r in g]), percent=True)
                  for a, es in cols.items() for e in es]
        body.append(cells)
    return Table("Clean and robust accuracy (%), mean ± sd over seeds", header, body)


def saliency_table(rows: list[dict]) -> Table | None:
    keys: list[tuple[str, str]] = []
    for r in rows:
        for k in r:
            if k.startswith("sal:"):
                _, m, metric = k.split(":", 2)
                if (m, metric) not in keys:
                    keys.append((m, metric))
    if not keys:
        return None
    methods = list(dict.fromkeys(m for m, _ in keys))
    metrics = list(dict.fromkeys(x for _, x in keys))
    groups = by_label(rows)
    body = []
    for l in labels_in_order(rows):
        for m in methods:
            body.append([l, m] + [fmt_ms(*mean_std([r.get(f"sal:{m}:{x}") for r in groups[l]])) for x in metrics])
    return Table("Saliency-map quality per training method and saliency method (mean over images, then mean ± sd "
                 "over seeds)", ["method", "saliency"] + metrics, body)


def checks_table(rows: list[dict]) -> Table | None:
    names = list(dict.fromkeys(k[6:] for r in rows for k in r if k.startswith("check:")))
    if not names:
        return None
    word = {True: "pass", False: "FLAG", None: "skipped"}
    body = [[r["run"]] + [word[r.get(f"check:{n}")] for n in names] for r in rows]
    return Table("Gradient-masking checks per run", ["run"] + names, body)


# -- the report ------------------------------------------------------------------------------------

def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}h2{border-bottom:1px solid #ddd}
.finding{background:#f6f8fa;border-left:4px solid #4c72b0;padding:.5em 1em;margin:.6em 0}"""


def build_report(root: str | Path, rows: list[dict] | None = None, out: str | Path | None = None,
                 setup: dict | None = None) -> Path:
    """The report of the experiment folder `root` (its results.csv) into ROOT/report; or, given
    `rows` (`sgtlab.experiments.store.rows_from_folders`: any run folders), of those rows into `out`."""
    root = Path(root)
    rows = read_results(root) if rows is None else rows
    if not rows:
        raise SgtlabError(f"{root} holds no finished runs (no {root / 'results.csv'}); run `sgtlab reproduce` first")
    if setup is not None:
        cfg = setup
    else:
        cfg = read_json(root / EXPERIMENT) if (root / EXPERIMENT).exists() else {}  # damaged: one line
    out = root / REPORT_DIR if out is None else Path(out)
    figs = out / "figures"
    sections: list[tuple[str, list[str]]] = []

    texts = findings(rows)
    sections.append(("Findings", [f'<p class="finding">{html.escape(t)}</p>' for t in texts]))
    write_text_atomic(out / "findings.md", "\n\n".join(f"- {t}" for t in texts) + "\n")

    parts = []
    p = robustness_figure(rows, figs)
    if p:
        parts.append(_img_tag(p, "robust accuracy against eps"))
    parts.append(_img_tag(clean_accuracy_figure(rows, figs), "clean accuracy"))
    t = accuracy_table(rows)
    t.save(out / "tables", "accuracy")
    parts.append(t.html())
    sections.append(("Robustness", parts))

    from sgtlab.experiments.report_saliency import saliency_sections

    sections += saliency_sections(root, rows, figs, out / "tables")
    t = saliency_table(rows)
    if t:
        t.save(out / "tables", "saliency_quality")
        sections.append(("Saliency-map quality", [f"<p>{html.escape(t.title)}</p>", t.html()]))
    t = checks_table(rows)
    if t:
        t.save(out / "tables", "gradient_masking_checks")
        sections.append(("Gradient-masking checks", [t.html()]))

    sections.append(("Setup", [f"<pre>{html.escape(json.dumps(cfg, indent=2))}</pre>"]))
    title = f"sgtlab report: {cfg.get('name', root.name)}"
    body = "".join(f"<h2>{html.escape(h)}</h2>" + "".join(ps) for h, ps in sections)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(rows)} runs, {len(labels_in_order(rows))} methods. {html.escape(cfg.get('description', ''))}</p>"
            f"{body}</body></html>")
    path = out / "report.html"
    write_text_atomic(path, page)
    return path
