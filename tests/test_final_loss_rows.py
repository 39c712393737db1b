"""Every result row carries what an under-trained flag needs: `final_loss` (the last epoch's mean
training CE on the clean input where the method logs it, else the adversarial CE, else the total
loss) and `num_classes` (the model's), in rows of reproduce runs (`execute_run`) and of any run
folder (`row_from_run`)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sgtlab.experiments.store import final_loss, row_from_run


def _last(folder):
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])["train"]


def test_final_loss_prefers_the_clean_ce_then_the_adversarial_ce_then_the_total():
    assert final_loss({"train": {"loss": 3.0, "ce": 1.0, "ce_adv": 2.0, "kl": 0.5}}) == 1.0
    assert final_loss({"train": {"loss": 3.0, "ce_adv": 2.0}}) == 2.0
    assert final_loss({"train": {"loss": 3.0}}) == 3.0
    assert final_loss({}) is None and final_loss({"train": {"ce": None, "loss": "x"}}) is None


def test_reproduce_rows_carry_the_final_loss_and_the_classes(tmp_path):
    from sgtlab.experiments.presets import apply_overrides, load_preset
    from sgtlab.experiments.runner import read_results, run_experiment

    cfg = apply_overrides(load_preset("quick"), [
        "train.epochs=1", "train.train_subset=64", "attack.n=20", "attack.eps=[0.1]", "attack.attacks=[fgsm]",
        "attack.checks=false", "explain.methods=[]", "seeds=[0]",
        "methods=[{label: ST, method: st}, {label: AT, method: at-fgsm}, {label: AT+clean, method: at-fgsm, "
        "clean_loss: true}]"])
    rows = {r["label"]: r for r in run_experiment(cfg, tmp_path, progress=False)}
    runs = tmp_path / "runs"
    assert rows["ST"]["final_loss"] == _last(runs / "st-seed0")["ce"]
    assert rows["AT"]["final_loss"] == _last(runs / "at-seed0")["ce_adv"]  # no clean term: the adversarial CE
    clean = _last(runs / "at-clean-seed0")
    assert rows["AT+clean"]["final_loss"] == clean["ce"] != clean["ce_adv"]
    assert all(r["num_classes"] == 10 for r in rows.values())
    table = {r["label"]: r for r in read_results(tmp_path)}  # and in results.csv
    assert table["AT"]["final_loss"] == pytest.approx(rows["AT"]["final_loss"]) and table["AT"]["num_classes"] == 10
    assert row_from_run(runs / "at-seed0")["final_loss"] == rows["AT"]["final_loss"]  # result.json's row


class Four(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_any_run_folder_row_carries_them(tmp_path):
    """A run made by sgtlab.fit on 4 classes, and one made by `train`-style fit on MNIST-5k."""
    import sgtlab
    from sgtlab.train import MethodConfig, TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8, generator=g), torch.arange(32) % 4
    torch.manual_seed(0)
    sgtlab.fit(Four(), (x, y), (x, y), method="at-pgd", epochs=2, out=tmp_path / "four", batch_size=16,
               train_eps=0.1, train_steps=2, device="cpu")
    row = row_from_run(tmp_path / "four")
    assert row["num_classes"] == 4 and row["final_loss"] == _last(tmp_path / "four")["ce_adv"]
    cfg = TrainConfig(dataset="mnist5k", method="sgt", epochs=1, batch_size=32, device="cpu", train_subset=64,
                      eval_subset=32, method_cfg=MethodConfig())
    fit(cfg, tmp_path / "sgt", progress=False)
    row = row_from_run(tmp_path / "sgt")
    assert row["num_classes"] == 10 and row["final_loss"] == _last(tmp_path / "sgt")["ce"]
