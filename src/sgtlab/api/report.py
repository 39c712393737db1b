"""`sgtlab.report`: the experiment report over any run folders."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def report(runs: str | Path | Sequence[str | Path], out: str | Path | None = None, *,
           compare: str | Sequence[str] | None = None, min_seeds: int | None = None,
           margin: float | None = None, publish: str | Path | None = None) -> Path:
    """Build the report (HTML, figures, tables) of run folders written by `fit(out=...)`, `train`,
    `attack`, `explain` or `reproduce` (an experiment folder counts as its runs) into `out`; returns
    the path of report.html. One experiment folder and no `out`: its own FOLDER/report, as
    `sgtlab report FOLDER` (a folder that is not a run folder counts as an experiment folder).

    `compare`: the comparisons to make besides the claims' ('A:B' label pairs, or one baseline label
    that every other label is compared with; default: the preset's `report.compare`); `min_seeds`:
    seeds a method-level verdict needs (default 5); `margin`: the equivalence margin in pp (default 2).
    `publish`: also write the publishable part of one experiment folder's report into this folder
    (README.md with findings, claims, tables and figures; PNG figures, results.csv, provenance;
    `sgtlab.reporting.publish`); returns its README.md."""
    from sgtlab.errors import SgtlabError
    from sgtlab.reporting import build_report
    from sgtlab.experiments.store import RESULTS_TABLE, is_run, rows_from_folders

    if min_seeds is not None and (isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 2):
        raise SgtlabError(f"min_seeds must be an integer >= 2 (a method-level test needs 2 seeds), got {min_seeds!r}")
    if margin is not None and not (isinstance(margin, (int, float)) and 0 < margin < 100):
        raise SgtlabError(f"margin must be a number of percentage points in (0, 100), got {margin!r}")
    opts = {"compare": compare, "min_seeds": min_seeds, "margin": margin}
    paths = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    if not paths:
        raise SgtlabError("no run folders given")
    for p in paths:  # before anything else: a typo is said as such
        if not p.exists():
            raise SgtlabError(f"{p} does not exist; give an experiment folder or run folders")
        if not p.is_dir():
            raise SgtlabError(f"{p} is a file, not a folder; give an experiment folder or run folders")
    if len(paths) == 1 and out is None and ((paths[0] / RESULTS_TABLE).exists() or not is_run(paths[0])):
        from sgtlab.io import folder_lock

        # not while a `reproduce` works in it; the runs finished so far can be reported elsewhere
        with folder_lock(paths[0], "experiment folder", busy_hint=f"report the runs finished so far into another "
                         f"folder: sgtlab report {paths[0]} --out DIR"):
            if publish is not None:
                from sgtlab.reporting.publish import publish as publish_to

                return publish_to(paths[0], publish, **opts)
            return build_report(paths[0], **opts)
    if publish is not None:
        raise SgtlabError("--publish takes one experiment folder (written by `sgtlab reproduce`) and no --out")
    if out is None:
        raise SgtlabError("give an output folder for the report of these runs (--out / out=)")
    rows = rows_from_folders(paths)
    out = Path(out)
    setup = {"name": out.name, "runs": [str(p) for p in paths]}
    return build_report(out, rows=rows, out=out, setup=setup, **opts)
