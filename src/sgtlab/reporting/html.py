"""Assemble the report: findings, claims of the studies, headline table, figures, tables, checks,
setup and provenance, into OUT/report/ (report.html with everything embedded, findings.md,
claims.md, figures/, tables/). Built only from what finished runs saved, so `sgtlab report FOLDER`
rebuilds it at any time without a model or a GPU."""
from __future__ import annotations

import html
import json
from pathlib import Path

from sgtlab.errors import SgtlabError
from sgtlab.experiments.store import read_results
from sgtlab.io import write_text_atomic
from sgtlab.reporting import figures, tables, text
from sgtlab.reporting.data import experiment_config, labels_in_order
from sgtlab.reporting.flags import MARK, flag_lines, under_trained
from sgtlab.reporting.summary import img_tag

REPORT_DIR = "report"
PROVENANCE = ("sgtlab_version", "git_commit", "torch_version", "device", "threads", "date", "command")

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}h2{border-bottom:1px solid #ddd}
.finding{background:#f6f8fa;border-left:4px solid #4c72b0;padding:.5em 1em;margin:.6em 0}"""


def provenance_lines(rows: list[dict]) -> list[str]:
    out = []
    for key in PROVENANCE:
        values = sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")})
        if key == "date" and values:
            values = [values[0] if len(values) == 1 else f"{values[0]} to {values[-1]}"]
        out.append(f"{key}: {'; '.join(values) if values else 'not recorded (runs made by an older sgtlab)'}")
    return out


def build_report(root: str | Path, n_boot: int = 10_000, rows: list[dict] | None = None,
                 out: str | Path | None = None, setup: dict | None = None, *, compare=None,
                 min_seeds: int | None = None, margin: float | None = None) -> Path:
    """The report of the experiment folder `root` (its results.csv) into ROOT/report; or, given
    `rows` (`sgtlab.experiments.store.rows_from_folders`: any run folders), of those rows into `out`.
    `compare`: pairs of labels to compare ('A:B' strings) or one baseline label, besides the claims'
    pairs (default: the preset's `report.compare`); `min_seeds` (default 5) and `margin` (pp,
    default 2): see `sgtlab.reporting.text.analyse`. `n_boot` is unused (kept for old callers)."""
    root = Path(root)
    rows = read_results(root) if rows is None else rows
    if not rows:
        raise SgtlabError(f"{root} holds no finished runs (no {root / 'results.csv'}); run `sgtlab reproduce` first")
    cfg = experiment_config(root) if setup is None else setup
    out = root / REPORT_DIR if out is None else Path(out)
    figs, tdir = out / "figures", out / "tables"
    sections: list[tuple[str, list[str]]] = []

    an = text.analyse(rows, root, cfg, compare_pairs=compare, min_seeds=min_seeds, margin=margin)
    found = text.findings(rows, an)
    sections.append(("Findings", [f'<p class="finding">{html.escape(t)}</p>' for t in found]))
    flagged = flag_lines(an.flagged)  # marked MARK in every table, left out of verdicts
    why = f"Flagged runs: under-trained (marked {MARK} in every table, left out of verdicts)"
    if flagged:
        sections.append(("Flagged runs", [f"<p>{html.escape(why)}:</p><ul>"
                                          + "".join(f"<li>{html.escape(f)}</li>" for f in flagged) + "</ul>"]))
    write_text_atomic(out / "findings.md", "\n\n".join(f"- {t}" for t in found) + "\n"
                      + (f"\n{why}:\n\n" + "".join(f"- {f}\n" for f in flagged) if flagged else ""))
    if an.attack is not None:
        verdicts = text.claim_verdicts(rows, an)
        write_text_atomic(out / "claims.md", text.claims_markdown(verdicts, an))
        t = tables.Table("Claims of the studies", ["study", "claim", "where it was made", "verdict", "measured here"],
                         [[v["study"], v["claim"], v["setting"], v["verdict"] + (f" ({v['why']})" if v["why"] else ""),
                           v["measured"]] for v in verdicts])
        t.save(tdir, "claims")
        sections.append(("Claims of the studies", [
            f"<p>Each headline claim of the studies this project is built from, tested where the study made it "
            f"(primary test), with the other budgets and the mean over the eps grid as secondary tests; a "
            f"method-level verdict needs at least {an.opts.min_seeds} seeds ({html.escape(an.setup)}).</p>",
            t.html()]))
        t = tables.headline_table(rows, an.attack, an.eps)
        t.save(tdir, "headline")
        parts = [f"<p>{html.escape(t.title)}</p>", t.html()]
        t = tables.per_run_table(rows, an.attack, an.eps)
        t.save(tdir, "per_run")
        parts += [f"<p>{html.escape(t.title)}</p>", t.html()]
        sections.append(("Headline robust accuracy", parts))

    parts = []
    p = figures.robustness_figure(rows, figs)
    if p:
        parts.append(img_tag(p, "robust accuracy against eps"))
    parts.append(img_tag(figures.clean_accuracy_figure(rows, figs), "clean accuracy"))
    t = tables.accuracy_table(rows)
    t.save(tdir, "accuracy")
    parts += [f"<p>{html.escape(t.title)}</p>", t.html()]
    sections.append(("Robustness", parts))

    from sgtlab.reporting.report_saliency import saliency_sections

    sections += saliency_sections(root, rows, figs, tdir)
    t = tables.saliency_table(rows)
    if t:
        t.save(tdir, "saliency_quality")
        sections.append(("Saliency-map quality", [f"<p>{html.escape(t.title)}</p>", t.html()]))
    t = tables.checks_table(rows, root)
    if t:
        t.save(tdir, "gradient_masking_checks")
        sections.append(("Gradient-masking checks", [f"<p>{html.escape(t.title)}</p>", t.html()]))

    prov = provenance_lines(rows)
    write_text_atomic(out / "provenance.txt", "\n".join(prov) + "\n")
    sections.append(("Provenance", ["<pre>" + html.escape("\n".join(prov)) + "</pre>"]))
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
