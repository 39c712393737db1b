"""`sgtlab report`: the experiment report of an experiment folder, or of any run folders."""
from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("report", help="the experiment report of an experiment folder or of any run folders",
                       description="Build the report (HTML with embedded figures, PNG/PDF figures, CSV/Markdown/"
                                   "LaTeX tables) from finished runs: an experiment folder written by `sgtlab "
                                   "reproduce` (into FOLDER/report), or any run folders written by train, "
                                   "attack and explain (or sgtlab.fit) and experiment folders, into --out.")
    p.add_argument("folders", nargs="+", metavar="FOLDER",
                   help="an experiment folder, or run folders (and experiment folders) to report together")
    p.add_argument("--out", default=None, help="report folder (default: FOLDER/report for one experiment folder; "
                                               "required for run folders)")
    return p


def run(args) -> int:
    from sgtlab.api.report import report

    path = report(args.folders, args.out)
    print(f"report: {path}")
    return 0
