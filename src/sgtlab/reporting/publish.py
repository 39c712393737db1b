"""A finished experiment's results as a folder for a repository (`sgtlab report EXP --publish DIR`):
README.md (what was run and how to reproduce it, provenance, findings, the claims of the studies,
the headline and per-run tables, the figures), the PNG figures, results.csv and provenance.txt.
No checkpoints and no per-image files: the page is rebuilt from them by the same command, so
anyone can check it against their own run."""
from __future__ import annotations

import shutil
from pathlib import Path

from sgtlab.errors import SgtlabError
from sgtlab.io import atomic_path, write_text_atomic
from sgtlab.reporting.data import experiment_config
from sgtlab.reporting.html import REPORT_DIR, build_report, provenance_lines

#: report tables copied into README.md, in this order (those present)
TABLES = (("headline", "Headline robust accuracy"), ("per_run", "Per run"),
          ("gradient_masking_checks", "Gradient-masking checks"), ("saliency_quality", "Saliency-map quality"))


def _copy(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def publish(root: str | Path, dest: str | Path, **report_options) -> Path:
    """Rebuild the report of the experiment folder `root` and write its publishable part into
    `dest` (created; files there of the same names are replaced, nothing else is touched).
    `report_options` go to `build_report` (compare, min_seeds, margin). Returns dest/README.md."""
    from sgtlab.experiments.store import RESULTS_TABLE, read_results

    root, dest = Path(root), Path(dest)
    rows = read_results(root)
    if not rows:
        raise SgtlabError(f"{root} holds no finished runs (no {root / RESULTS_TABLE}); --publish needs an "
                          f"experiment folder written by `sgtlab reproduce`")
    d = dest.resolve()
    if d == root.resolve() or any(p == d or p in d.parents for p in ((root / "runs").resolve(),
                                                                      (root / REPORT_DIR).resolve())):
        raise SgtlabError(f"--publish {dest}: choose a folder outside the experiment's runs and report")
    build_report(root, **report_options)
    report = root / REPORT_DIR
    cfg = experiment_config(root)
    name = cfg.get("name", root.name)
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    figures = sorted((report / "figures").glob("*.png"))
    for f in figures:
        _copy(f, dest / "figures" / f.name)
    _copy(root / RESULTS_TABLE, dest / RESULTS_TABLE)
    prov = provenance_lines(rows)
    write_text_atomic(dest / "provenance.txt", "\n".join(prov) + "\n")
    lines = [f"# sgtlab results: {name}", "", cfg.get("description", ""), "",
             "Reproduce (the preset's runs, then this page from them):", "", "```bash",
             f"sgtlab reproduce --preset {name} --data-dir DATA --out results/{name}",
             f"sgtlab report results/{name} --publish docs/results/{name}", "```", "",
             f"{len(rows)} runs. Provenance:", "", "```", *prov, "```", "", "## Findings", "",
             (report / "findings.md").read_text(), "", (report / "claims.md").read_text(), ""]
    for stem, title in TABLES:
        md = report / "tables" / f"{stem}.md"
        if md.exists():
            lines += [f"## {title}", "", md.read_text(), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}](figures/{f.name})" for f in figures] + [""]
    path = dest / "README.md"
    write_text_atomic(path, "\n".join(lines))
    return path
