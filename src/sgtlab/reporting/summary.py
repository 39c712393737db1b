"""The report's building blocks: `mean_std`/`fmt_ms` (a mean and sd over seeds, and its text), `Table`
(small tables written three ways: CSV for code, Markdown for notes, LaTeX for papers; hand-written
because pandas' Markdown/LaTeX writers need extra packages, tabulate and jinja2) and `img_tag` (a PNG
embedded in the HTML report)."""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

from sgtlab.io import write_text_atomic


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaNs dropped."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def img_tag(path: Path, alt: str) -> str:
    """The PNG at `path` as an <img> element with the image inline (the report is one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def fmt_ms(m: float, sd: float, digits: int = 3, percent: bool = False) -> str:
    if math.isnan(m):
        return "–"
    if percent:
        return f"{100 * m:.1f} ± {100 * sd:.1f}"
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""  # a footnote under the table (e.g. the runs marked † and why); not in the CSV

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.header)
        w.writerows(self.rows)
        return buf.getvalue()

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n" + (f"\n{self.note}\n" if self.note else "")

    def latex(self) -> str:
        def esc(s: str) -> str:
            s = str(s)
            for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                         ("±", r"$\pm$"), ("–", "--"), ("≤", r"$\le$"), ("†", r"\dag{}")):
                s = s.replace(a, b)
            return s

        cols = "l" + "r" * (len(self.header) - 1)
        body = "\n".join(" & ".join(esc(c) for c in r) + r" \\" for r in self.rows)
        return (f"% {self.title}\n\\begin{{tabular}}{{{cols}}}\n\\toprule\n"
                + " & ".join(esc(h) for h in self.header) + " \\\\\n\\midrule\n" + body
                + "\n\\bottomrule\n\\end{tabular}\n"
                + (f"\n{{\\footnotesize {esc(self.note)}}}\n" if self.note else ""))

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in self.rows)
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"

    def save(self, folder: Path, stem: str) -> list[Path]:
        paths = []
        for ext, text in (("csv", self.csv()), ("md", self.markdown()), ("tex", self.latex())):
            p = Path(folder) / f"{stem}.{ext}"
            write_text_atomic(p, text)
            paths.append(p)
        return paths
