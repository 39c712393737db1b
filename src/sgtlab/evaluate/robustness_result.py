"""The result of a robustness sweep: per attack and sample the smallest grid eps that fooled it,
and everything derived from it (robust accuracy, per-sample rows, the ensemble, folded attacks)."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sgtlab.errors import SgtlabError
from sgtlab.io import write_json_atomic, write_text_atomic


@dataclass
class RobustnessResult:
    """`first_fooled[attack]`: per sample, the smallest eps of the grid at which it was misclassified
    (0.0 when misclassified clean, inf when never)."""

    attacks: list[str]
    eps: list[float]
    labels: torch.Tensor
    clean_pred: torch.Tensor
    first_fooled: dict[str, torch.Tensor]
    info: dict = field(default_factory=dict)
    # from-scratch sweeps: per attack, robust outcome per sample and eps (n x len(eps), bool); None: nested
    outcomes: dict[str, torch.Tensor] | None = None
    # indices of the evaluated samples in the test split (a seeded subset), when known
    sample_ids: torch.Tensor | None = None
    # attacks run outside the sweep (the headline suite) at one eps: column `label@eps` -> (eps, robust
    # per sample (m long: the first m samples), note on its strength); see `fold`
    folded: dict[str, tuple[float, torch.Tensor, str | None]] = field(default_factory=dict)
    # column -> the samples (m long) that attack ran on, where it did not run on all of the first m
    folded_ran: dict[str, torch.Tensor] = field(default_factory=dict)
    # minimum-norm attacks (FMN): per sample the L-inf radius of the best adversarial image found
    # (0: misclassified clean, inf: none within the grid's largest eps); robust at any eps < radius
    radii: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def sweep(self) -> str:
        return "nested" if self.outcomes is None else "from-scratch"

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def clean_correct(self) -> torch.Tensor:
        return self.clean_pred == self.labels

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct.float().mean().item() if self.n else float("nan")

    def robust(self, attack: str, eps: float) -> torch.Tensor:
        """Per sample: correctly classified under `attack` at `eps` (nested: a grid value or between
        them; from scratch: a grid value)."""
        if self.outcomes is not None:
            j = min(range(len(self.eps)), key=lambda i: abs(self.eps[i] - eps))
            if not math.isclose(self.eps[j], eps, rel_tol=1e-9, abs_tol=1e-12):
                raise SgtlabError(f"a from-scratch sweep has results at its grid eps only, not at {eps:g}")
            return self.outcomes[attack][:, j]
        return self.first_fooled[attack] > eps

    def fold(self, label: str, eps: float, robust: torch.Tensor, note: str | None = None,
             ran: torch.Tensor | None = None) -> None:
        """Add an attack run outside the sweep, at one `eps` on the first `len(robust)` samples (or,
        with `ran`, a bool mask as long as `robust`, on those samples only), to the ensemble (the
        per-sample worst case over every attack that ran on a sample, as the spec headlines it).
        Nested: a sample it fools counts as fooled from the smallest grid eps >= eps on (its
        adversarial image lies in every larger ball); from scratch: at that grid eps only. The
        outcomes are kept as their own per-sample columns (`label@eps`, blank where it did not run);
        `note` (e.g. "300 queries") goes with them into `robustness.json`, for reports."""
        robust = torch.as_tensor(robust, dtype=torch.bool).cpu()
        m, eps = len(robust), float(eps)
        column = f"{label}@{eps:g}"
        if ran is not None:
            ran = torch.as_tensor(ran, dtype=torch.bool).cpu()
        if m > self.n or label in self.attacks or column in self.folded or (ran is not None and len(ran) != m):
            raise SgtlabError(f"cannot fold {column!r}: {m} outcomes for {self.n} samples, or the name is taken")
        self.folded[column] = (eps, robust, note)
        if ran is not None:
            self.folded_ran[column] = ran
        self._fold_into_ensemble(column)

    def _fold_into_ensemble(self, column: str) -> None:
        if "ensemble" not in self.first_fooled:
            return
        eps, robust, _ = self.folded[column]
        ran = self.folded_ran.get(column)
        fooled = (~robust if ran is None else ~robust & ran).nonzero().squeeze(1)
        on_grid = [j for j, e in enumerate(self.eps) if math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12)]
        if self.outcomes is not None:
            if on_grid:
                self.outcomes["ensemble"][fooled, on_grid[0]] = False
            return
        above = [e for e in self.eps if e >= eps or math.isclose(e, eps, rel_tol=1e-9, abs_tol=1e-12)]
        if above:
            f = self.first_fooled["ensemble"]
            f[fooled] = torch.clamp(f[fooled], max=above[0])

    def add_ensemble(self) -> None:
        """Give a sweep run without `ensemble` one: per sample the worst case over its attacks and
        the attacks folded in so far (nothing changes when it has one)."""
        if "ensemble" in self.first_fooled:
            return
        members = [a for a in self.attacks if a in self.first_fooled]
        if not members:
            raise SgtlabError("the sweep has no attacks to take the worst case over")
        self.first_fooled["ensemble"] = torch.stack([self.first_fooled[a] for a in members]).amin(0)
        if self.outcomes is not None:
            self.outcomes["ensemble"] = torch.stack([self.outcomes[a] for a in members]).all(0)
        self.attacks.append("ensemble")
        for column in self.folded:
            self._fold_into_ensemble(column)

    @property
    def robust_accuracy(self) -> dict[str, dict[float, float]]:
        return {a: {e: self.robust(a, e).float().mean().item() for e in self.eps} for a in self.attacks}

    def per_sample(self) -> list[dict]:
        """One row per sample: index, label, clean prediction, then per attack the first fooling eps
        and a 0/1 robust column per eps."""
        table = []
        first = {a: self.first_fooled[a].tolist() for a in self.attacks}
        robust = {(a, e): self.robust(a, e).int().tolist() for a in self.attacks for e in self.eps}
        ids = self.sample_ids.tolist() if self.sample_ids is not None else None
        for i, (y, p) in enumerate(zip(self.labels.tolist(), self.clean_pred.tolist())):
            row = {"index": i, **({"test_index": ids[i]} if ids is not None else {}), "label": y, "clean_pred": p,
                   "clean_correct": int(y == p)}
            for a in self.attacks:
                row[f"{a}:first_fooled_eps"] = first[a][i]
                for e in self.eps:
                    row[f"{a}@{e:g}"] = robust[(a, e)][i]
            for col, (_, r, _) in self.folded.items():  # run on the first len(r) samples (or those in `ran`)
                ran = self.folded_ran.get(col)
                row[col] = int(r[i]) if i < len(r) and (ran is None or ran[i]) else ""
            table.append(row)
        return table

    def to_dict(self) -> dict:
        return {"clean_accuracy": self.clean_accuracy, "n": self.n, "eps": self.eps, "sweep": self.sweep,
                "from_scratch": self.outcomes is not None,
                "robust_accuracy": {a: {f"{e:g}": v for e, v in d.items()} for a, d in self.robust_accuracy.items()},
                **({"folded": {col: self._folded_summary(col) for col in self.folded}} if self.folded else {}),
                **self.info}

    def _folded_summary(self, column: str) -> dict:
        """`robustness.json`'s entry of a folded attack: its eps, on how many samples it ran and its
        accuracy there; with a `ran` mask also of how many samples (`of`) and how many it fooled."""
        e, r, note = self.folded[column]
        ran = self.folded_ran.get(column)
        out: dict = {"eps": e}
        if ran is None:
            out.update(n=len(r), accuracy=r.float().mean().item())
        else:
            out.update(n=int(ran.sum()), of=len(ran), fooled=int((ran & ~r).sum()))
        return {**out, **({"note": note} if note else {})}

    def save(self, folder: str | Path) -> dict[str, Path]:
        """`robustness.json` (aggregates) and `robustness_per_sample.csv`, both written atomically."""
        folder = Path(folder)
        rows = self.per_sample()
        buf = io.StringIO()
        names = list(rows[0]) if rows else ["index"]
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        paths = {"json": folder / "robustness.json", "csv": folder / "robustness_per_sample.csv"}
        write_text_atomic(paths["csv"], buf.getvalue())
        write_json_atomic(paths["json"], self.to_dict())
        return paths

    def table(self, eps_format: Callable[[float], str] = "{:g}".format) -> str:
        """A plain-text table: attack x eps, robust accuracy in %; `eps_format` writes each eps
        (e.g. as k/255 for colour images: `sgtlab.reporting.eps.eps_text`)."""
        head = ["attack"] + [eps_format(e) for e in self.eps]
        lines = [head] + [[a] + [f"{100 * v:.1f}" for v in d.values()] for a, d in self.robust_accuracy.items()]
        width = [max(len(r[i]) for r in lines) for i in range(len(head))]
        out = [f"clean accuracy: {100 * self.clean_accuracy:.1f} % ({self.n} images)"]
        out += ["  ".join(c.rjust(w) for c, w in zip(r, width)) for r in lines]
        return "\n".join(out + self.images_attacked_lines(eps_format))

    def images_attacked(self) -> dict[str, dict[str, int]]:
        """On how many images each attack ran, per eps (`f"{eps:g}"`): the sweep's attacks
        (`info["images_attacked"]`: the nested sweep attacks only images still robust at the smaller
        budgets; a minimum-norm attack has one entry, `"all eps"`) and the headline suite's members
        as `suite:NAME` (`info["suite"]`: only images no cheaper attack had fooled). Empty when not
        recorded (results of older versions)."""
        out = {a: dict(d) for a, d in (self.info.get("images_attacked") or {}).items()}
        for e, counts in ((self.info.get("suite") or {}).get("images") or {}).items():
            for member, k in counts.items():
                if member != "n":
                    out.setdefault(f"suite:{member}", {})[e] = k
        return out

    def images_attacked_lines(self, eps_format: Callable[[float], str] = "{:g}".format) -> list[str]:
        """`images_attacked` as table lines under the accuracy table (none when not recorded): the
        work behind each number, so a reader sees what the skipping saved and where an expensive
        attack ran at all."""
        counts = self.images_attacked()
        if not counts:
            return []
        head = ["images attacked"] + [eps_format(e) for e in self.eps]
        lines, whole = [head], []
        for a, d in counts.items():
            if "all eps" in d:  # a minimum-norm attack: one run for the grid
                whole.append(f"{a}: one run for the whole grid on {d['all eps']} images")
                continue
            lines.append([a] + [str(d[f"{e:g}"]) if f"{e:g}" in d else "-" for e in self.eps])
        width = [max(len(r[i]) for r in lines) for i in range(len(head))]
        rows = ["  ".join(c.rjust(w) for c, w in zip(r, width)) for r in lines] if len(lines) > 1 else []
        return rows + whole
