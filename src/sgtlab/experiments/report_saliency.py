"""The saliency part of the report: map grid, masked-accuracy, AOPC and low-saliency curves,
entropy distributions, drawn from what each run's interpretability stage saved."""
from __future__ import annotations

from pathlib import Path


def saliency_sections(root: Path, rows: list[dict], figs: Path, tables: Path) -> list[tuple[str, list[str]]]:
    return []
