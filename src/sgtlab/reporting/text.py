"""The report's words: the findings (each names its setup, interval and test) and the claims of
the papers with what this experiment measured and a verdict.

Every comparison is made under the headline attack (the per-image worst case over the attacks
that ran) at the data set's standard budgets, paired by seed and image, and Holm-corrected over all
comparisons of the report (`sgtlab.reporting.comparisons`). No difference is called an effect without
that test behind it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sgtlab.experiments.tables import fmt_ms, mean_std
from sgtlab.reporting.comparisons import Result, apply_holm, compare_labels
from sgtlab.reporting.data import (ATTACK_NAMES, by_label, headline_attack, headline_eps, labels_in_order,
                                setup_text)


@dataclass(frozen=True)
class Claim:
    study: str
    text: str
    a: str          # method whose runs are compared...
    b: str          # ...with this method's
    sign: int       # +1: the study says a is more robust than b; -1: less


CLAIMS = (
    Claim("Guesmi et al. 2024", "SGT raises robust accuracy over ST (MNIST)", "sgt", "st", +1),
    Claim("Karkehabadi et al.", "SGT lowers robust accuracy compared with ST", "sgt", "st", -1),
    Claim("Guesmi et al. 2024", "AT-FGSM is weaker than SGT", "sgt", "at-fgsm", +1),
    Claim("Guesmi et al. 2024", "ASGT beats SGA", "asgt", "sga", +1),
    Claim("Guesmi et al. 2024", "ASGT beats adversarial training (AT-FGSM)", "asgt", "at-fgsm", +1),
    Claim("Guesmi et al. 2024 (fair baseline)", "ASGT beats adversarial training with the same attack (AT-PGD)",
          "asgt", "at-pgd", +1),
)
#: claims about saliency-map quality: measured by the saliency section, not by these comparisons
SALIENCY_CLAIMS = (
    ("Xu et al. (SCAAT)", "SCAAT gives better saliency maps than ST, at little cost in accuracy"),
    ("Ismail et al. 2021 (SGT)", "SGT gives more faithful saliency maps than ST at similar clean accuracy"),
)


@dataclass
class Analysis:
    attack: str | None
    eps: list[float]
    setup: str
    results: list[Result]          # every comparison, Holm-adjusted together
    pairs: dict[tuple[str, str], list[Result]]  # (label a, label b) -> one result per headline eps


def labels_of(rows: list[dict], method: str) -> list[str]:
    return [l for l in labels_in_order(rows) if any(r["label"] == l and r["method"] == method for r in rows)]


def analyse(rows: list[dict], root: Path, cfg: dict, n_boot: int = 10_000) -> Analysis:
    """Run every comparison the findings and claims need, once each, and Holm-correct them together."""
    attack = headline_attack(rows)
    if attack is None:
        return Analysis(None, [], "", [], {})
    eps = headline_eps(rows, cfg)
    groups = by_label(rows)
    wanted: list[tuple[str, str]] = []
    for c in CLAIMS:
        for a in labels_of(rows, c.a):
            for b in labels_of(rows, c.b):
                if (a, b) not in wanted:
                    wanted.append((a, b))
    for a in labels_of(rows, "asgt"):  # ASGT is also compared with each SGT
        for b in labels_of(rows, "sgt"):
            if (a, b) not in wanted:
                wanted.append((a, b))
    pairs = {(a, b): [compare_labels(root, groups, a, b, attack, e, n_boot) for e in eps] for a, b in wanted}
    results = apply_holm([r for rs in pairs.values() for r in rs])
    return Analysis(attack, eps, setup_text(rows, root, attack), results, pairs)


def _attack_at(an: Analysis, e: float) -> str:
    return f"{ATTACK_NAMES.get(an.attack, an.attack)} at eps {e:g}"


def findings(rows: list[dict], an: Analysis) -> list[str]:
    if an.attack is None:
        return ["No robustness results yet."]
    out = [f"Setup of every comparison below: {an.setup}. Differences are in percentage points (pp) of robust "
           f"accuracy, paired by seed and test image; the 95 % CI and p come from a two-level paired bootstrap "
           f"(seeds, then images within them; 10,000 replicates), p Holm-corrected over the "
           f"{sum(r.comparison is not None for r in an.results)} comparisons of this report."]
    for (a, b), rs in an.pairs.items():
        parts = "; ".join(f"{_attack_at(an, r.eps)}: {r.text()}" for r in rs)
        out.append(f"{a} vs {b}. {parts}.")
    groups = by_label(rows)
    labels = labels_in_order(rows)
    clean = {l: mean_std([r["clean_accuracy"] for r in groups[l]]) for l in labels}
    out.append("Clean accuracy (mean ± sd over seeds): "
               + "; ".join(f"{l} {fmt_ms(*clean[l], percent=True)} %" for l in labels) + ".")
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
    """One entry per (claim, pair of labels): what was measured and the verdict."""
    out = []
    for c in CLAIMS:
        pairs = [(a, b) for a in labels_of(rows, c.a) for b in labels_of(rows, c.b)]
        if not pairs or an.attack is None:
            missing = [m for m in (c.a, c.b) if not labels_of(rows, m)]
            out.append({"study": c.study, "claim": c.text, "measured": "–", "verdict": "not measured here",
                        "why": f"no {', '.join(m.upper() for m in missing) or 'robustness'} runs in this experiment"})
            continue
        for a, b in pairs:
            rs = [r for r in an.pairs[(a, b)] if r.comparison is not None]
            if not rs:
                out.append({"study": c.study, "claim": c.text, "measured": f"{a} vs {b}: no paired per-image results",
                            "verdict": "not measured here", "why": ""})
                continue
            agree = [r for r in rs if r.direction == c.sign]
            disagree = [r for r in rs if r.direction == -c.sign]
            if agree and not disagree:
                verdict = "supported"
            elif disagree and not agree:
                verdict = "contradicted"
            elif agree and disagree:
                verdict = ("mixed: supported at eps " + ", ".join(f"{r.eps:g}" for r in agree)
                           + ", contradicted at eps " + ", ".join(f"{r.eps:g}" for r in disagree))
            else:
                verdict = "not significant"
            measured = f"{a} minus {b}: " + "; ".join(f"{_attack_at(an, r.eps)}: {r.text()}" for r in rs)
            out.append({"study": c.study, "claim": c.text, "measured": measured, "verdict": verdict, "why": ""})
    for study, text in SALIENCY_CLAIMS:
        out.append({"study": study, "claim": text, "measured": "–", "verdict": "not measured here",
                    "why": "a saliency-quality claim: see the saliency sections of this report"})
    return out


def claims_markdown(verdicts: list[dict], an: Analysis) -> str:
    lines = ["## Claims of the papers", "",
             f"Measured under {ATTACK_NAMES.get(an.attack, an.attack)} at the standard eps "
             f"({', '.join(f'{e:g}' for e in an.eps)}); setup: {an.setup}.", ""]
    for v in verdicts:
        why = f" ({v['why']})" if v["why"] else ""
        lines.append(f"- **{v['claim']}** ({v['study']}): **{v['verdict']}**{why}. Measured: {v['measured']}")
    return "\n".join(lines) + "\n"
