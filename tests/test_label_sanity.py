"""The label-randomisation sanity check (Adebayo et al. 2018, data randomisation test): training on
seeded permuted labels, the library check, the experiment's stage and table, the preset option."""
from __future__ import annotations

import pytest
import torch

from sgtlab.errors import SgtlabError
from sgtlab.evaluate.sanity_checks import label_randomization_check


@pytest.fixture(scope="module")
def random_label_run(tmp_path_factory):
    """sgt-cnn trained as `trained_run` but on permuted labels (1 epoch on 1000 images: enough to
    move every layer away from its initial weights, not to memorise)."""
    from sgtlab.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("random") / "st-random"
    last = fit(TrainConfig(dataset="mnist5k", method="st", epochs=1, batch_size=64, lr=0.05, seed=0, device="cpu",
                           train_subset=1000, eval_subset=1000, random_labels=True), out, progress=False)
    return out, last


def test_permuted_labels_are_a_seeded_permutation():
    from sgtlab.data.random_labels import permuted_labels

    y = torch.arange(10).repeat_interleave(30)
    a, b, c = permuted_labels(y, 0), permuted_labels(y, 0), permuted_labels(y, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)  # seeded
    assert torch.equal(torch.bincount(a, minlength=10), torch.bincount(y, minlength=10))  # same label counts
    assert (a == y).float().mean() < 0.3  # images and labels decoupled (chance: 0.1)


def test_random_labels_option_round_trips_and_keeps_old_run_identities():
    from sgtlab.experiments.presets import RunSpec
    from sgtlab.train import TrainConfig

    cfg = TrainConfig(random_labels=True)
    assert TrainConfig.from_dict(cfg.to_dict()).random_labels is True
    plain = TrainConfig().to_dict()
    spec = RunSpec("st-seed0", "ST", 0, plain, {}, {})
    assert "random_labels" not in spec.identity()["train"]  # runs made before the option keep their hash
    assert RunSpec("r", "R", 0, cfg.to_dict(), {}, {}).config_hash() != spec.config_hash()


def test_random_label_model_passes_gradients_and_fails_the_input(trained_model, mnist5k_test, random_label_run):
    from sgtlab.explain import saliency_maps
    from sgtlab.train.checkpoint import load_model

    folder, last = random_label_run
    assert last["test_accuracy"] < 0.3  # it learnt no image-label relation (the real model: ~0.97)
    random_model, meta = load_model(folder)
    x, y = mnist5k_test.x[:16], mnist5k_test.y[:16]
    explainers = {"input": lambda m, xx, cc: xx[:, 0].clone(),  # ignores the model: must fail
                  "grad": lambda m, xx, cc: saliency_maps(m, xx, cc, "grad")}
    res = label_randomization_check(trained_model, random_model, x, y, explainers)
    assert res["n"] == 16 and res["threshold"] == 0.5
    assert res["methods"]["input"]["verdict"] == "fail"
    assert res["methods"]["input"]["spearman_mean"] == pytest.approx(1.0)
    assert res["methods"]["grad"]["verdict"] == "pass"
    assert res["methods"]["grad"]["spearman_ci"]["hi"] < 0.5
    assert len(res["methods"]["grad"]["ssim"]) == 16
    with pytest.raises(SgtlabError, match="no saliency method"):
        label_randomization_check(trained_model, random_model, x, y, {})


def test_experiment_stage_result_and_report_table(trained_run, random_label_run):
    from sgtlab.experiments.label_sanity import label_sanity_run
    from sgtlab.reporting.saliency_findings import label_sanity_table
    from sgtlab.train import TrainConfig

    train = TrainConfig(dataset="mnist5k", method="st", epochs=3, batch_size=64, lr=0.05, seed=0,
                        device="cpu").to_dict()
    explain = {"methods": ["grad"], "n": 40, "sanity_n": 12}
    res = label_sanity_run(trained_run, random_label_run[0], train, explain, seed=0)
    assert res["n"] == 12 and res["methods"]["grad"]["verdict"] == "pass"
    failing = {**res, "methods": {"grad": {**res["methods"]["grad"], "verdict": "fail"}}}
    runs = {0: {**res, "real": "ST"}, 1: {**failing, "real": "ST"}}
    table, flagged = label_sanity_table({"ST (random labels)": runs}, ["grad", "smoothgrad"])
    assert flagged == ["ST / grad"]  # a method failing on any seed is flagged
    assert len(table.rows) == 1 and table.rows[0][-1] == "FAIL" and table.rows[0][5] == "2"
    assert label_sanity_table({}, ["grad"]) == (None, [])


def _preset(label_sanity, extra_entry):
    from sgtlab.experiments.presets import load_preset

    cfg = load_preset("quick")
    cfg["methods"] = [{"label": "ST", "method": "st"}, {"label": "SGT", "method": "sgt", "k": 0.5}, extra_entry]
    cfg["explain"] = {**cfg["explain"], "label_sanity": label_sanity}
    return cfg


def test_preset_label_sanity_is_validated_in_one_line():
    from sgtlab.experiments.label_sanity import label_sanity_pair
    from sgtlab.experiments.presets import expand

    rnd = {"label": "ST (random labels)", "method": "st", "random_labels": True}
    cfg = _preset("ST (random labels)", rnd)
    assert label_sanity_pair(cfg) == ("ST (random labels)", "ST")
    runs = expand(cfg)
    assert {r.label for r in runs if r.train["random_labels"]} == {"ST (random labels)"}
    for bad, entry, match in (("Nope", rnd, "no method entry is labelled"),
                              ("ST (random labels)", {**rnd, "random_labels": False}, "does not train on random"),
                              ("ST (random labels)", {**rnd, "method": "scaat"}, "on the true labels"),
                              (3, rnd, "must be the label")):
        with pytest.raises(SgtlabError, match=match) as e:
            expand(_preset(bad, entry))
        assert "\n" not in str(e.value)
