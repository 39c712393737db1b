"""Issue 25's report parts: under-trained runs are flagged with their reason and marked in every
table; runs made by `sgtlab.fit` carry provenance and their images (the per-run table's n and
Wilson intervals); eps prints as k/255 on colour data."""
from __future__ import annotations

import html
import json
import math

import pytest
import torch

from sgtlab.reporting.eps import eps_text
from sgtlab.reporting.flags import MARK, under_trained
from sgtlab.reporting.summary import Table
from sgtlab.reporting.tables import accuracy_table, headline_table, per_run_table


def row(run, method, acc, seed=0, **kw):
    return {"run": run, "label": method.upper(), "method": method, "seed": seed, "dataset": "mnist",
            "clean_accuracy": acc, "n_test": 300, "rob:pgd:0.1": acc / 2, **kw}


def test_a_run_at_chance_is_flagged_with_its_reason():
    rows = [row("st-s0", "st", 0.95, final_loss=0.12, num_classes=10),
            row("asgt-s0", "asgt", 0.10, final_loss=2.29, num_classes=10),
            row("at-s0", "at-pgd", 0.93, final_loss=2.18, num_classes=10)]
    flags = under_trained(rows)
    assert set(flags) == {"asgt-s0", "at-s0"}
    assert "at or below chance (1/10 = 10.0 %)" in flags["asgt-s0"]
    assert "final training loss 2.29 is within 10 % of ln 10 = 2.30 (chance)" in flags["asgt-s0"]
    # the loss alone flags a run (0.9 ln 10 = 2.07 <= 2.18), though its accuracy is fine
    assert flags["at-s0"] == "final training loss 2.18 is within 10 % of ln 10 = 2.30 (chance)"
    # ln C follows the number of classes: 2.18 is far from ln 100 = 4.61
    assert under_trained([row("a", "at-pgd", 0.5, final_loss=2.18, num_classes=100)]) == {}


def test_chance_without_num_classes_comes_from_the_data_set_else_10():
    assert "1/10" in under_trained([row("a", "sgt", 0.08)])["a"]  # mnist: 10 classes, registered
    odd = {**row("b", "sgt", 0.3), "dataset": "own-tensors"}
    assert under_trained([odd]) == {}  # 10 classes assumed: 30 % is above chance
    assert "1/4" in under_trained([{**odd, "clean_accuracy": 0.25, "num_classes": 4}])["b"]


def test_more_than_10_pp_below_st_of_the_same_seed_is_flagged_9_pp_is_not():
    rows = [row("st-s0", "st", 0.95), row("st-s1", "st", 0.80, seed=1),
            row("sgt-s0", "sgt", 0.84), row("sgt-s1", "sgt", 0.71, seed=1),  # 11 pp / 9 pp below
            row("at-s0", "at-pgd", 0.64)]
    flags = under_trained(rows)  # no final_loss (an older folder): judged on accuracy only
    assert set(flags) == {"sgt-s0", "at-s0"}
    assert flags["sgt-s0"] == "clean accuracy 84.0 % is 11.0 pp below ST's 95.0 % (seed 0)"
    assert flags["at-s0"] == "clean accuracy 64.0 % is 31.0 pp below ST's 95.0 % (seed 0)"
    # another data set's ST is not the reference
    other = {**row("st-s0-c", "st", 0.99), "dataset": "fashion-mnist"}
    assert "sgt-s1" not in under_trained(rows + [other]) and "at-s0" in under_trained(rows + [other])


def test_tables_mark_flagged_runs_and_name_them_in_a_footnote(tmp_path):
    rows = [row("st-s0", "st", 0.95), row("at-s0", "at-pgd", 0.64), row("sgt-s0", "sgt", 0.94)]
    per_run = per_run_table(rows, "pgd", [0.1])
    assert [r[0] for r in per_run.rows] == ["st-s0", f"at-s0 {MARK}", "sgt-s0"]
    for t in (per_run, headline_table(rows, "pgd", [0.1]), accuracy_table(rows)):
        assert t.note.startswith(f"{MARK} under-trained") and "at-s0: clean accuracy 64.0 % is 31.0 pp below" in t.note
        assert "st-s0" not in t.note and html.escape(t.note) in t.html() and t.note in t.markdown()
        assert r"\dag{}" in t.latex() and "footnotesize" in t.latex()
    assert [r[0] for r in headline_table(rows, "pgd", [0.1]).rows] == ["ST", f"AT-PGD {MARK}", "SGT"]
    assert per_run_table(rows[:1], "pgd", [0.1]).note == "" and "note" not in Table("t", ["a"], [["1"]]).html()


def test_eps_prints_as_k_over_255_on_colour_data():
    assert eps_text(8 / 255, "cifar10") == "8/255"
    assert eps_text(float(f"{8 / 255:g}"), "cifar10") == "8/255"  # as a results.csv column holds it
    assert eps_text(0.3, "mnist") == "0.3" and eps_text(0.05, "mnist") == "0.05"
    assert eps_text(2 / 255, (3, 32, 32)) == "2/255" and eps_text(0.1, (1, 28, 28)) == "0.1"
    assert eps_text(0.03, "cifar10") == "0.03"  # not a whole number of 255ths: the value
    assert eps_text(8 / 255, "own-tensors") == "0.0314" and eps_text(0, "cifar10") == "0"
    rows = [{**row("st-s0", "st", 0.9), "dataset": "cifar10", "rob:pgd:0.0313725": 0.4}]
    assert per_run_table(rows, "pgd", [8 / 255]).header[-1] == "PGD eps 8/255"
    assert "pgd ≤8/255" in accuracy_table(rows).header


def test_the_setup_sentence_gives_suite_and_check_budgets_as_k_over_255(tmp_path):
    from sgtlab.reporting.data import setup_text

    rows = []
    for seed, (restarts, square) in enumerate([(40, 31), (52, 29)]):  # two runs, different counts
        rows.append({**row(f"st-s{seed}", "st", 0.9), "dataset": "cifar10", "run": f"st-seed{seed}"})
        folder = tmp_path / "runs" / f"st-seed{seed}"
        folder.mkdir(parents=True)
        (folder / "robustness.json").write_text(json.dumps({
            "attacks_run": {"pgd": "PGD(steps=10)"}, "n": 100,
            "suite": {"eps": [8 / 255, 16 / 255], "attacks": {"pgd-restarts": "PGD", "square": "Square"},
                      "images": {"0.0313725": {"n": 100, "pgd-restarts": restarts, "square": square},
                                 "0.0627451": {"n": 100, "pgd-restarts": 0, "square": 0}}},
            "folded": {"checks:square@0.0313725": {"n": 50, "eps": 8 / 255}}}))
    text = setup_text(rows, tmp_path, "ensemble")
    assert "at eps 8/255 and 16/255 on every image also PGD and Square" in text
    assert "first 50 images at eps 8/255" in text and "0.0313" not in text
    # how many images the expensive attacks really ran on: the range over the runs
    assert "(images attacked per run, of 100: eps 8/255: PGD restarts 40-52, Square 29-31; eps 16/255: none)" in text


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def bars(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.4
    for k in range(3):
        x[y == k, :, 2 * k + 1, :] = 0.9
    return x, y


def test_a_fit_made_run_carries_provenance_and_its_images(tmp_path):
    """fit(out=RUN) + robustness(out=RUN): the row has sgtlab/torch/device/date/command and n_test,
    so the per-run table shows 20 images and Wilson intervals (it showed '–')."""
    import sgtlab
    from sgtlab.experiments.store import rows_from_folders
    from sgtlab.reporting.html import PROVENANCE

    torch.manual_seed(0)
    net, run = Net(), tmp_path / "run"
    sgtlab.fit(net, bars(30, 0), bars(20, 1), method="st", epochs=1, out=run, batch_size=10, lr=0.1, device="cpu")
    sgtlab.robustness(net, bars(20, 1), eps=[0.1], attacks="fgsm", out=run)
    (r,) = rows_from_folders([run])
    assert all(r.get(k) not in (None, "") for k in PROVENANCE if k != "git_commit"), r
    assert r["device"] == "cpu" and r["torch_version"] == torch.__version__ and r["threads"] >= 1
    assert r["n_test"] == 20 and r["sweep"] == "nested"
    cells = per_run_table([r], "fgsm", [0.1]).rows[0]
    assert cells[1] == "20"
    for c in cells[2:]:
        v, lo, hi = (float(s) for s in c.replace("[", "").replace("]", "").replace(",", "").split())
        assert 0 <= lo <= v <= hi <= 100 and hi - lo > 5  # 20 images: a wide interval
    assert not math.isnan(float(cells[2].split()[0]))


@pytest.mark.parametrize("flagged", [True, False])
def test_report_lists_flagged_runs(tmp_path, flagged):
    from tests.test_report_text import make_experiment

    from sgtlab.experiments.store import read_results, write_results
    from sgtlab.reporting import build_report

    make_experiment(tmp_path, {("ST", "st"): [0.5, 0.5], ("SGT", "sgt"): [0.5, 0.5]}, seeds=(0, 1))
    rows = read_results(tmp_path)
    if flagged:
        rows[2]["clean_accuracy"] = 0.8  # sgt-seed0, 18 pp below ST's 0.98
        write_results(tmp_path, rows)
    page = build_report(tmp_path, n_boot=200).read_text()
    md = (tmp_path / "report" / "findings.md").read_text()
    assert ("Flagged runs" in page and "sgt-seed0: clean accuracy 80.0 % is 18.0 pp below ST" in md) == flagged
    assert ("Flagged runs" in md) == flagged and (f"SGT {MARK}" in page) == flagged


def test_the_setup_sentence_names_the_methods_that_trained_longer():
    from sgtlab.reporting.data import _epochs_text

    rows = [{**row(f"{m}-s{s}", m, 0.9), "label": m.upper(), "epochs": 4 if m == "sga" else 2}
            for m in ("st", "asgt", "sga") for s in range(2)]
    assert _epochs_text(rows) == "2 epoch(s) (SGA 4)"
    assert _epochs_text([{**r, "epochs": 3} for r in rows]) == "3 epoch(s)"
    assert _epochs_text([{k: v for k, v in r.items() if k != "epochs"} for r in rows]) == "? epoch(s)"
