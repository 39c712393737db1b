"""The report's text must follow the numbers and must not overstate: differences within the
spread over seeds are called so."""
from __future__ import annotations

from sgtlab.experiments.report import compare, findings


def rows_for(label, method, accs_by_seed, clean=0.98):
    return [{"run": f"{label}-{i}", "label": label, "method": method, "seed": i, "clean_accuracy": clean,
             "rob:pgd:0.1": a, "rob:pgd:0.2": a - 0.1} for i, a in enumerate(accs_by_seed)]


def test_clear_difference_is_reported_with_its_direction():
    rows = rows_for("ST", "st", [0.50, 0.52]) + rows_for("SGT", "sgt", [0.30, 0.31])
    c = compare({"ST": rows[:2], "SGT": rows[2:]}, "SGT", "ST", "pgd", [0.1, 0.2])
    assert c["clear"] and c["diff"] < 0
    text = " ".join(findings(rows))
    assert "lower robust accuracy" in text and "less robust here" in text


def test_difference_within_seed_spread_is_called_so():
    rows = rows_for("ST", "st", [0.40, 0.60]) + rows_for("SGT", "sgt", [0.45, 0.62])
    text = " ".join(findings(rows))
    assert "within the spread over seeds" in text and "more robust here" not in text


def test_single_seed_is_called_anecdotal():
    rows = rows_for("ST", "st", [0.5]) + rows_for("SGT", "sgt", [0.1])
    assert "single seed" in " ".join(findings(rows))


def test_asgt_is_compared_with_sgt_and_adversarial_training():
    rows = (rows_for("ST", "st", [0.5, 0.5]) + rows_for("SGT", "sgt", [0.5, 0.5])
            + rows_for("AT-FGSM", "at-fgsm", [0.6, 0.6]) + rows_for("ASGT", "asgt", [0.8, 0.8]))
    text = findings(rows)
    assert any(t.startswith("Does ASGT beat SGT?") for t in text)
    assert any(t.startswith("Does ASGT beat AT-FGSM?") and "more robust here" in t for t in text)
