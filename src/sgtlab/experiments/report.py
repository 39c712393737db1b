"""Kept for imports written before the report became the package `sgtlab.report`."""
from sgtlab.report.html import REPORT_DIR, build_report, img_tag
from sgtlab.report.html import _img_tag  # noqa: F401  (used by experiments/report_saliency.py)

