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
    p.add_argument("--compare", action="append", default=None, metavar="A:B",
                   help="compare label A with label B (repeatable), or give one baseline label that every other "
                        "label is compared with; besides the claims' comparisons (default: the preset's "
                        "report.compare)")
    p.add_argument("--min-seeds", type=int, default=None,
                   help="seeds a method-level verdict needs (default 5; fewer: 'inconclusive' with the comparisons "
                        "of the trained models)")
    p.add_argument("--margin", type=float, default=None,
                   help="equivalence margin in pp: an interval inside +-margin says 'no effect larger than "
                        "margin' (default 2)")
    p.add_argument("--publish", default=None, metavar="DIR",
                   help="also write the report of one experiment folder as a folder for a repository: README.md "
                        "(findings, claims, headline and per-run tables, figures), PNG figures, results.csv, "
                        "provenance; no checkpoints (e.g. docs/results/NAME)")
    return p


def run(args) -> int:
    from sgtlab.api.report import report

    compare = args.compare
    if compare and len(compare) == 1 and ":" not in compare[0]:
        compare = compare[0]  # one baseline label
    path = report(args.folders, args.out, compare=compare, min_seeds=args.min_seeds, margin=args.margin,
                  publish=args.publish)
    print(f"report: {path}")
    return 0
