"""`sgtlab report`: rebuild the report of an experiment folder from its finished runs."""
from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("report", help="rebuild an experiment's report from its finished runs",
                       description="Rebuild OUT/report/ (HTML with embedded figures, PNG/PDF figures, CSV/Markdown/"
                                   "LaTeX tables) from the finished runs of an experiment folder.")
    p.add_argument("folder", metavar="FOLDER", help="an experiment folder written by `sgtlab reproduce`")
    return p


def run(args) -> int:
    from sgtlab.io import folder_lock
    from sgtlab.report import build_report

    with folder_lock(args.folder, "experiment folder"):  # not while a `reproduce` works in it
        path = build_report(args.folder)
    print(f"report: {path}")
    return 0
