"""The claims of the studies, each in the setting where it was made (SPEC.md, "Claims of the
studies, and where they were made"), and the rule that turns comparisons into a verdict.

A claim's *primary* tests are at its own attack and budget (Guesmi et al.: FGSM eps 0.25 on MNIST);
its *secondary* tests are the other attacks the study names at that budget, the data set's standard
budgets under the headline attack, and the mean over the eps grid (the area under the curve, a view
no single budget can miss). Verdicts:

- "supported": a primary test significant in the claimed direction, none against it;
- "contradicted": a primary test significant against the claim, none for it;
- "partly supported" / "partly contradicted": tests disagree, or only secondary tests are significant;
- "no effect": no test significant and every primary interval within +-margin;
- "inconclusive": fewer than `min_seeds` seeds, the primary budget not on the grid, at the floor,
  or nothing significant without equivalence (the minimal detectable effect says what could be seen);
- on a data set outside the claim's family: listed, no verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

from sgtlab.reporting.comparisons import Result

#: data-set names -> the family a claim names (MNIST-5k is a subset of MNIST's own images)
FAMILIES = {"mnist": "MNIST", "mnist5k": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
            "caltech101": "Caltech-101"}


@dataclass(frozen=True)
class Claim:
    study: str
    text: str
    a: str                               # method whose runs are compared...
    b: str                               # ...with this method's
    sign: int                            # +1: a more robust than b; -1: less
    families: tuple[str, ...]            # data families where the study made it
    primary: tuple[tuple[str, float], ...] = ()   # (attack, eps); () = the standard budgets
    also: tuple[tuple[str, float], ...] = ()      # further attacks the study names

    def setting(self) -> str:
        where = " / ".join(self.families)
        if not self.primary:
            return f"{where}, the data set's standard budgets"
        tests = ", ".join(f"{a.upper().replace('MIFGSM', 'MI-FGSM')} eps {e:g}" for a, e in self.primary + self.also)
        return f"{where}, {tests}"


_G = "Guesmi et al. 2024"
CLAIMS = (
    Claim(_G, "SGT raises robust accuracy over ST", "sgt", "st", +1, ("MNIST",), (("fgsm", 0.25),),
          (("pgd", 0.25), ("mifgsm", 0.25))),
    Claim(_G, "SGT raises robust accuracy over ST", "sgt", "st", +1, ("CIFAR-10",), (("fgsm", 0.025),)),
    Claim("Karkehabadi et al.", "SGT lowers robust accuracy compared with ST", "sgt", "st", -1,
          ("MNIST", "CIFAR-10", "CIFAR-100", "Caltech-101")),
    *(Claim(_G, f"ASGT is more robust than {name}", "asgt", b, +1, ("MNIST",), (("pgd", 0.2),))
      for b, name in (("st", "ST"), ("sgt", "SGT"), ("sga", "SGA"), ("at-fgsm", "AT-FGSM"))),
    Claim(_G, "ASGT is more robust than ST", "asgt", "st", +1, ("CIFAR-10",), (("fgsm", 0.025),)),
    Claim(_G, "AT-FGSM is weaker than SGT", "sgt", "at-fgsm", +1, ("MNIST",), (("pgd", 0.2),)),
    Claim("sgtlab (fair baseline)", "ASGT is more robust than AT-PGD, the same training attack without the "
          "saliency term", "asgt", "at-pgd", +1, ("MNIST",), (("pgd", 0.2),)),
)
#: claims about saliency-map quality: measured by the saliency sections, not by these comparisons
SALIENCY_CLAIMS = (
    ("Xu et al. (SCAAT)", "SCAAT gives better saliency maps than ST, at little cost in accuracy"),
    ("Ismail et al. 2021 (SGT)", "SGT gives more faithful saliency maps than ST at similar clean accuracy"),
)


def family(dataset: str | None) -> str | None:
    return FAMILIES.get(str(dataset).lower()) if dataset else None


def verdict(claim: Claim, primary: list[Result], secondary: list[Result], min_seeds: int) -> tuple[str, str]:
    """(verdict, why) of one claim for one pair of labels from its tests (Holm already applied)."""
    measured = [r for r in primary + secondary if r.measured]
    if not measured:
        return "not measured here", "no runs paired by seed with per-image results"
    seeds = max(r.n_seeds for r in measured)
    if seeds < min_seeds:
        return (f"inconclusive: {seeds} seed{'s' * (seeds != 1)}, at least {min_seeds} needed",
                "a claim about methods replicates over training seeds; the trained models are compared under Measured")
    if not primary:
        return "inconclusive", f"the claim's budget is not on this experiment's eps grid ({claim.setting()})"
    sign = claim.sign
    p_for = [r for r in primary if r.direction == sign]
    p_against = [r for r in primary if r.direction == -sign]
    s_for = [r for r in secondary if r.direction == sign]
    s_against = [r for r in secondary if r.direction == -sign]
    if p_for and not (p_against or s_against):
        return "supported", ""
    if p_against and not (p_for or s_for):
        return "contradicted", ""
    if p_for:
        return "partly supported", "some tests go against the claim"
    if p_against:
        return "partly contradicted", "some tests go the claimed way"
    if s_for and not s_against:
        return "partly supported", "the primary test is not significant; other attacks or budgets are"
    if s_against and not s_for:
        return "partly contradicted", "the primary test is not significant; other attacks or budgets go against it"
    if s_for and s_against:
        return "partly supported, partly contradicted", "only secondary tests are significant, both ways"
    if all(r.at_floor for r in primary if r.measured):
        return "inconclusive", "the primary test is at the floor (both methods near 0 %): no information"
    if all(r.equivalent for r in primary):
        return "no effect", f"every primary interval lies within +-{100 * primary[0].opts.margin:g} pp"
    mdes = [r.method.mde for r in primary if r.method is not None]
    could = f"; effects of {100 * max(mdes):.1f} pp or more would have been detected" if mdes else ""
    return "inconclusive", f"no significant difference{could}"
