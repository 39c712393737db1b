"""Kept for imports written before the report became the package `sgtlab.reporting`."""
from sgtlab.reporting.html import REPORT_DIR, build_report, img_tag
from sgtlab.reporting.html import _img_tag  # noqa: F401  (used by experiments/report_saliency.py)

