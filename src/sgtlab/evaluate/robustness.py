"""Robust accuracy of a model for a list of attacks over a grid of eps, per sample.

The sweep uses the nesting of L-inf balls: an adversarial image found inside the eps_i-ball lies
inside every larger ball, so per attack the eps grid is walked upwards and at each eps only the
samples still robust at the previous one are attacked; samples misclassified when clean are never
attacked. Iterative attacks also stop per sample as soon as it is misclassified. Both only ever
skip work whose outcome is already known, so the numbers are never above those of attacking every
image from scratch at every eps (they can only be lower: a sample fooled at a smaller eps counts
as fooled at every larger one).

The result is per sample: for each attack, the smallest eps of the grid at which the sample was
misclassified (0 when misclassified clean, inf when never), from which any aggregate follows.
So the nested sweep's accuracy at eps is the accuracy under the best attack over every eps' <= eps
of the grid: a sound lower bound, monotone by construction; reports say so ("best over eps' <= eps").

`from_scratch=True` runs each eps on its own (every clean-correct sample attacked at every eps,
as the papers do): slower, and its curves may rise with eps, which is itself a sign of gradient
masking (FGSM's most of all; `masking_checks.fgsm_curve_not_rising` flags it).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from sgtlab.attacks.base import Attack, build_attack, ce_grad, check_inputs
from sgtlab.device import eval_mode, model_device
from sgtlab.data.base import TensorData
from sgtlab.device import eval_batch_size
from sgtlab.errors import SgtlabError
from sgtlab.fast.graphs import graphed
from sgtlab.io import write_json_atomic, write_text_atomic

AttackSpec = Sequence[str | Attack] | Mapping[str, str | Attack]


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

    def table(self) -> str:
        """A plain-text table: attack x eps, robust accuracy in %."""
        head = ["attack"] + [f"{e:g}" for e in self.eps]
        lines = [head] + [[a] + [f"{100 * v:.1f}" for v in d.values()] for a, d in self.robust_accuracy.items()]
        width = [max(len(r[i]) for r in lines) for i in range(len(head))]
        out = [f"clean accuracy: {100 * self.clean_accuracy:.1f} % ({self.n} images)"]
        out += ["  ".join(c.rjust(w) for c, w in zip(r, width)) for r in lines]
        return "\n".join(out)


def resolve_attacks(attacks: AttackSpec) -> dict[str, Attack | None]:
    """Names/objects -> {label: Attack}; checked before any work. `ensemble` among other attacks is
    derived from them (None here: no extra work); alone, it runs its default members."""
    items = list(attacks.items()) if isinstance(attacks, Mapping) else [
        (a, a) if isinstance(a, str) else (a.name, a) for a in attacks]
    if not items:
        raise SgtlabError("no attacks given")
    out: dict[str, Attack | None] = {}
    for label, a in items:
        if label in out:
            raise SgtlabError(f"attack {label!r} is given twice")
        # open detail: the name "ensemble" among other attacks is the worst case over those (no extra work)
        out[label] = None if (a == "ensemble" and len(items) > 1) else build_attack(a) if isinstance(a, str) else a
    return out


def check_eps_grid(eps: Sequence[float]) -> list[float]:
    eps = [float(e) for e in eps]
    if not eps:
        raise SgtlabError("no eps values given")
    bad = [e for e in eps if not (e >= 0 and math.isfinite(e))]
    if bad:
        raise SgtlabError(f"eps must be finite and >= 0, got {bad[0]!r}")
    return sorted(set(eps))


def robustness_sweep(model: nn.Module, data: TensorData | tuple[torch.Tensor, torch.Tensor], attacks: AttackSpec,
                     eps: Sequence[float], n: int | None = None, batch_size: int | None = None, progress: bool = True,
                     seed: int = 0, from_scratch: bool = False, autocast: str | None = None,
                     cuda_graphs: bool = False) -> RobustnessResult:
    """Clean and robust accuracy for each attack at each eps (see the module doc; `from_scratch`:
    every eps on its own instead of the nested walk).

    `autocast="bf16"`: the attacks' forward and backward passes run under bfloat16 autocast (faster
    on GPUs and on CPUs with bf16 units); the clean pass and the verdict on each adversarial image
    stay in float32, so every image counted as fooled is fooled by the float32 model (a weaker attack
    at worst, never a wrong verdict; docs/attacks.md gives the measured difference).

    `cuda_graphs=True`: on CUDA the attacks' forwards and backwards replay as CUDA graphs
    (`sgtlab.fast.graphs`: the same numbers, fewer launches); elsewhere, or for a hooked model, a
    warning and the plain model.

    Random starts (PGD) at the j-th eps (ascending) are drawn for the whole evaluated set as
    `torch.manual_seed(seed + j); torch.empty_like(x).uniform_(-eps, eps)` on the CPU, so each
    sample starts exactly where a from-scratch torchattacks run with that seed starts it.
    """
    from tqdm.auto import tqdm

    from sgtlab.data.inputs import as_data

    data = as_data(data)  # (x, y), TensorDataset, DataLoader or TensorData; checked
    x, y = data.x, data.y
    if n is not None:
        if n < 1:
            raise SgtlabError(f"n must be >= 1, got {n}")
        x, y = x[:n], y[:n]
    grid = check_eps_grid(eps)
    plan = resolve_attacks(attacks)
    if autocast not in (None, "bf16"):
        raise SgtlabError(f"autocast must be None or 'bf16', got {autocast!r}")
    check_inputs(x, y, grid[-1])
    device = model_device(model)
    batch_size = eval_batch_size(batch_size, device)
    x, y = x.detach().cpu(), y.detach().cpu()
    attacked = graphed(model, device, cuda_graphs)  # the attacks' passes; verdicts on the plain model

    with eval_mode(model):
        need_grad = any(a is not None and a.uses_clean_grad for a in plan.values())
        clean_pred, clean_grad = _clean_pass(model, x, y, batch_size, device, need_grad)
        correct = clean_pred == y
        first: dict[str, torch.Tensor] = {}
        outcomes: dict[str, torch.Tensor] = {}
        bar = tqdm(total=len(plan) * len(grid), disable=not progress, desc="attacks", unit="eps", leave=False)
        for label, attack in plan.items():
            if attack is None:
                continue
            # float64: the grid values are stored exactly, so CSV text compares as the tensors do
            f = torch.where(correct, math.inf, 0.0).double()
            robust = correct[:, None].repeat(1, len(grid))  # from scratch: outcome per (sample, eps)
            for j, e in enumerate(grid):
                bar.set_postfix_str(f"{label} eps={e:g}")
                todo = (correct if from_scratch else torch.isinf(f)).nonzero().squeeze(1)
                if e > 0 and len(todo):
                    start = None
                    if attack.takes_init_delta:
                        g = torch.Generator().manual_seed(seed + j)
                        start = torch.empty_like(x).uniform_(-e, e, generator=g)
                    for b in range(0, len(todo), batch_size):
                        idx = todo[b:b + batch_size]
                        xb, yb = x[idx].to(device), y[idx].to(device)
                        kw = {"early_stop": True} if attack.supports_early_stop else {}
                        if start is not None:
                            kw["init_delta"] = start[idx].to(device)
                        if clean_grad is not None and attack.uses_clean_grad:
                            kw["clean_grad"] = clean_grad[idx].to(device)
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"):
                            adv = attack.perturb(attacked, xb, yb, e, **kw).to(xb.dtype)
                        with torch.no_grad():
                            fooled = (model(adv).argmax(1) != yb).cpu()
                        hit = idx[fooled]
                        f[hit] = torch.minimum(f[hit], torch.tensor(e, dtype=f.dtype))
                        robust[hit, j] = False
                bar.update(1)
            first[label] = f
            outcomes[label] = robust
        bar.close()
    derived = [k for k, v in plan.items() if v is None]
    for k in derived:  # the ensemble over the other attacks: the per-sample worst case
        first[k] = torch.stack([first[a] for a in plan if plan[a] is not None]).amin(0)
        outcomes[k] = torch.stack([outcomes[a] for a in plan if plan[a] is not None]).all(0)
    return RobustnessResult(list(plan), grid, y, clean_pred, first,
                            info={"attacks_run": {k: repr(v) for k, v in plan.items() if v is not None},
                                  "seed": seed}, outcomes=outcomes if from_scratch else None)


def _clean_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device, need_grad: bool):
    """Clean predictions and, when an attack's first step needs it, the input gradient at the clean
    images: it does not depend on eps, so FGSM costs one gradient for the whole grid."""
    preds, grads = [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        if need_grad:
            logits, g = ce_grad(model, xb, yb)
            grads.append(g.cpu())
        else:
            with torch.no_grad():
                logits = model(xb)
        preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    return pred, (torch.cat(grads) if grads else None)
