"""The report's words: the findings (each names its setup, interval and test) and the claims of
the studies, each tested where it was made, with a verdict.

`analyse` makes every comparison once: for each pair of method labels (the claims' pairs, or those
the user asks for with `compare`), the headline attack at the data set's standard budgets and the
mean over the eps grid; for each claim on its own data family, its primary and secondary tests
(`sgtlab.reporting.claims`). Runs flagged under-trained are left out. The method-level tests that
can give a verdict are Holm-corrected together (`sgtlab.reporting.comparisons`). No difference is
called an effect without that test behind it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sgtlab.errors import SgtlabError
from sgtlab.reporting import claims as C
from sgtlab.reporting.comparisons import Options, Result, apply_holm, compare
from sgtlab.reporting.data import (ATTACK_NAMES, by_label, headline_attack, headline_eps, labels_in_order,
                                   robust_columns, setup_text)
from sgtlab.reporting.eps import eps_text
from sgtlab.reporting.flags import under_trained
from sgtlab.reporting.summary import fmt_ms, mean_std

CLAIMS, SALIENCY_CLAIMS = C.CLAIMS, C.SALIENCY_CLAIMS


@dataclass
class ClaimTests:
    claim: C.Claim
    a: str
    b: str
    primary: list[Result]
    secondary: list[Result]
    missing: str = ""           # the primary budget not on the grid: what to add


@dataclass
class Analysis:
    attack: str | None
    eps: list[float]
    setup: str
    results: list[Result]                              # every comparison made, Holm-adjusted together
    pairs: dict[tuple[str, str], list[Result]]         # (a, b) -> headline eps ... + grid mean
    claims: list[ClaimTests] = field(default_factory=list)
    flagged: dict[str, str] = field(default_factory=dict)
    opts: Options = field(default_factory=Options)
    dataset: str | None = None
    grid: list[float] = field(default_factory=list)


def labels_of(rows: list[dict], method: str) -> list[str]:
    return [l for l in labels_in_order(rows) if any(r["label"] == l and r["method"] == method for r in rows)]


def parse_compare(spec, labels: list[str]) -> list[tuple[str, str]]:
    """`compare`: 'A:B' strings (or pairs), or one baseline label (every other label against it)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str) and ":" not in item:
            if item not in labels:
                raise SgtlabError(f"baseline {item!r} is not a label of these runs; labels: {', '.join(labels)}")
            out += [(l, item) for l in labels if l != item]
            continue
        a, b = item.split(":", 1) if isinstance(item, str) else item
        for x in (a, b):
            if x not in labels:
                raise SgtlabError(f"--compare {a}:{b}: {x!r} is not a label of these runs; labels: {', '.join(labels)}")
        out.append((a, b))
    return list(dict.fromkeys(out))


def _on_grid(grid: list[float], e: float) -> float | None:
    return next((g for g in grid if math.isclose(g, e, rel_tol=1e-4, abs_tol=1e-9)), None)


def analyse(rows: list[dict], root: Path, cfg: dict, n_boot: int = 0, *, compare_pairs=None,
            min_seeds: int | None = None, margin: float | None = None) -> Analysis:
    """Make every comparison the findings and claims need, once each, and Holm-correct them together.
    `compare_pairs`: the pairs of labels to compare (see `parse_compare`), besides the claims' pairs;
    default: the report section of the preset (`report.compare`), else the claims' pairs only.
    `n_boot` is kept for callers written for the bootstrap; the test is analytic now."""
    rep = cfg.get("report") or {}
    opts = Options(min_seeds=int(min_seeds if min_seeds is not None else rep.get("min_seeds", Options.min_seeds)),
                   margin=float(margin if margin is not None else rep.get("margin", 100 * Options.margin)) / 100,
                   dataset=rows[0].get("dataset") if rows else None)
    attack = headline_attack(rows)
    flagged = under_trained(rows, root)
    if attack is None:
        return Analysis(None, [], "", [], {}, flagged=flagged, opts=opts, dataset=opts.dataset)
    eps = headline_eps(rows, cfg)
    cols = robust_columns(rows)
    grid = cols[attack]
    groups = by_label([r for r in rows if str(r["run"]) not in flagged])
    labels = labels_in_order(rows)
    made: dict[tuple, Result] = {}

    def test(a: str, b: str, att: str, e: float | None) -> Result:
        key = (a, b, att, e)
        if key not in made:
            made[key] = compare(root, groups.get(a, []), groups.get(b, []), a, b, att, e, opts, grid)
        return made[key]

    wanted = parse_compare(compare_pairs if compare_pairs is not None else rep.get("compare"), labels)
    fam = C.family(opts.dataset)
    claim_tests: list[ClaimTests] = []
    for c in C.CLAIMS:
        if fam not in c.families:
            continue
        for a in labels_of(rows, c.a):
            for b in labels_of(rows, c.b):
                if (a, b) not in wanted:
                    wanted.append((a, b))
                prim, sec, missing = [], [], []
                for att, e in c.primary or tuple((attack, x) for x in eps):
                    g = _on_grid(cols.get(att, []), e) if att in cols else None
                    if g is None and _on_grid(grid, e) is not None:  # the claim's attack did not run: the headline's
                        att, g = attack, _on_grid(grid, e)
                    if g is None:
                        missing.append(f"{att.upper()} eps {eps_text(e, opts.dataset)}")
                        continue
                    prim.append(test(a, b, att, g))
                for att, e in c.also:
                    g = _on_grid(cols.get(att, []), e)
                    if g is not None:
                        sec.append(test(a, b, att, g))
                if c.primary:
                    sec += [test(a, b, attack, e) for e in eps]
                sec.append(test(a, b, attack, None))
                claim_tests.append(ClaimTests(c, a, b, prim, [r for r in sec if all(r is not p for p in prim)],
                                              ", ".join(missing)))
    pairs = {(a, b): [test(a, b, attack, e) for e in eps] + [test(a, b, attack, None)] for a, b in wanted}
    results = apply_holm(list(made.values()))
    return Analysis(attack, eps, setup_text(rows, root, attack), results, pairs, claim_tests, flagged, opts,
                    opts.dataset, grid)


def findings(rows: list[dict], an: Analysis) -> list[str]:
    if an.attack is None:
        return ["No robustness results yet."]
    n_test = sum(r.eligible for r in an.results)
    out = [f"Setup of every comparison below: {an.setup}. Differences are in percentage points (pp) of robust "
           f"accuracy, paired by seed and test image. The replicate is the training seed: each method-level "
           f"interval is a random-effects t interval over seeds, carrying the noise of the test set that every "
           f"seed shares (sgtlab.inference; calibrated by simulation: scripts/calibrate_verdicts.py). A verdict "
           f"needs at least {an.opts.min_seeds} seeds and neither method at the floor; "
           + (f"p is Holm-corrected over the {n_test} such comparison{'s' * (n_test != 1)} of this report. "
              if n_test else "no comparison of this report has that, so none gives a verdict. ")
           + f"An interval inside +-{100 * an.opts.margin:g} pp says there is no larger effect."]
    for (a, b), rs in an.pairs.items():
        out.append(f"{a} vs {b}. " + "; ".join(f"{r.where()}: {r.text()}" for r in rs) + ".")
    groups = by_label(rows)
    labels = labels_in_order(rows)
    clean = {l: mean_std([r["clean_accuracy"] for r in groups[l]]) for l in labels}
    out.append("Clean accuracy (mean ± sd over seeds): "
               + "; ".join(f"{l} {fmt_ms(*clean[l], percent=True)} %" for l in labels) + ".")
    if an.flagged:
        out.append("Left out of every comparison as under-trained: "
                   + "; ".join(f"{run} ({why})" for run, why in an.flagged.items()) + ".")
    out.append(checks_finding(rows))
    return [t for t in out if t]


def checks_finding(rows: list[dict]) -> str:
    flagged = sorted({f"{r['run']} ({k[6:]})" for r in rows for k, v in r.items() if k.startswith("check:") and v is False})
    if flagged:
        return ("Gradient-masking checks flagged: " + ", ".join(flagged) + ". Robust accuracies of these runs may be "
                "overestimated; see the checks table (a check flags only a difference larger than its images can "
                "show: the 95 % binomial half-width it prints).")
    if not any(k.startswith("check:") for r in rows for k in r):
        return ""
    skipped = sorted({k[6:] for r in rows for k, v in r.items() if k.startswith("check:") and v is None})
    if skipped:
        return ("No gradient-masking check flagged a run, but some could not run (" + ", ".join(skipped)
                + "): see the checks table.")
    return ("No gradient-masking check flagged a run (the gradient-free Square attack included): the attacks behave "
            "as expected on every run.")


def claim_verdicts(rows: list[dict], an: Analysis) -> list[dict]:
    """One entry per (claim, pair of labels): its setting, what was measured and the verdict."""
    out = []
    fam = C.family(an.dataset)
    tested = {(t.claim, t.a, t.b): t for t in an.claims}
    for c in C.CLAIMS:
        entry = {"study": c.study, "claim": c.text, "setting": c.setting()}
        if fam not in c.families:
            if any(c.text == d.text and fam in d.families for d in C.CLAIMS):
                continue  # the same claim is listed in the setting of this data set
            out.append({**entry, "measured": "–", "verdict": "no verdict",
                        "why": f"made on {' / '.join(c.families)}; this experiment is on {an.dataset}"})
            continue
        pairs = [(a, b) for a in labels_of(rows, c.a) for b in labels_of(rows, c.b)]
        if not pairs or an.attack is None:
            missing = [m for m in (c.a, c.b) if not labels_of(rows, m)]
            out.append({**entry, "measured": "–", "verdict": "not measured here",
                        "why": f"no {', '.join(m.upper() for m in missing) or 'robustness'} runs in this experiment"})
            continue
        for a, b in pairs:
            t = tested[(c, a, b)]
            v, why = C.verdict(c, t.primary, t.secondary, an.opts.min_seeds)
            if t.missing:
                why = "; ".join(x for x in (why, f"not on the eps grid: {t.missing} (add it with --set attack.eps=...)") if x)
            measured = (f"{a} minus {b}. Primary: "
                        + ("; ".join(f"{r.where()}: {r.text()}" for r in t.primary) or "none on this grid")
                        + ". Secondary: " + "; ".join(f"{r.where()}: {r.text()}" for r in t.secondary))
            out.append({**entry, "measured": measured, "verdict": v, "why": why})
    for study, text in C.SALIENCY_CLAIMS:
        out.append({"study": study, "claim": text, "setting": "saliency-map quality", "measured": "–",
                    "verdict": "not measured here",
                    "why": "a saliency-quality claim: see the saliency sections of this report"})
    return out


def claims_markdown(verdicts: list[dict], an: Analysis) -> str:
    lines = ["## Claims of the studies", "",
             f"Each claim is tested where the study made it (its data family, attack and eps: the primary test); "
             f"the other attacks it names, the standard budgets ({', '.join(eps_text(e, an.dataset) for e in an.eps)}) "
             f"under the headline attack and the mean over the eps grid are secondary. A method-level verdict needs "
             f"at least {an.opts.min_seeds} seeds. Setup: {an.setup}.", ""]
    for v in verdicts:
        why = f" ({v['why']})" if v["why"] else ""
        lines.append(f"- **{v['claim']}** ({v['study']}; {v['setting']}): **{v['verdict']}**{why}. "
                     f"Measured: {v['measured']}")
    return "\n".join(lines) + "\n"
