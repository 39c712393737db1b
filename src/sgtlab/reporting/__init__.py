"""The experiment report, by concern: `data` (what the runs saved), `comparisons` (paired tests
with `sgtlab.stats`), `text` (findings and the papers' claims), `tables`, `figures`, `html` (the
assembled report). `build_report(folder)` is the entry point."""
from sgtlab.reporting.html import build_report

__all__ = ["build_report"]
