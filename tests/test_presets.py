"""Presets: every shipped preset expands into valid runs; overrides; bad values refused before work."""
from __future__ import annotations

import pytest

from sgtlab.errors import SgtlabError
from sgtlab.experiments.presets import apply_overrides, describe, expand, load_preset, preset_names


def test_all_presets_ship_and_expand():
    assert {"quick", "paper-mnist", "paper-cifar10", "decoy-mnist", "fashion-mnist"} <= set(preset_names())
    for name in preset_names():
        runs = expand(load_preset(name))
        assert len({r.name for r in runs}) == len(runs)
        assert "runs" in describe(name)


def test_runs_are_ordered_seed_major_so_a_partial_experiment_is_balanced():
    runs = expand(load_preset("dispute-mnist"))
    labels = list(dict.fromkeys(r.label for r in runs))
    # the first len(labels) runs are every method on the first seed, in the preset's order
    assert [r.label for r in runs[:len(labels)]] == labels
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)


def test_quick_preset_is_the_offline_default():
    cfg = load_preset("quick")
    assert cfg["dataset"] == "mnist5k" and cfg["model"] == "sgt-cnn" and len(cfg["seeds"]) == 2
    methods = {m["method"] for m in cfg["methods"]}
    assert {"st", "sgt", "at-fgsm", "sga", "asgt", "scaat"} <= methods
    # the standard budgets (0.1, 0.3) and the claims' own (PGD 0.2, FGSM 0.25: SPEC.md)
    assert {0.1, 0.2, 0.25, 0.3} <= set(cfg["attack"]["eps"])


def test_paper_mnist_matches_the_spec_table():
    runs = expand(load_preset("paper-mnist"))
    t = runs[0].train
    assert (t["dataset"], t["model"], t["epochs"], t["batch_size"], t["lr"], t["optimizer"]) == \
        ("mnist", "alexnet-mnist", 20, 128, 0.01, "sgd")
    assert len({r.seed for r in runs}) == 5
    ks = sorted(r.train["method_cfg"]["k"] for r in runs if r.train["method"] == "sgt")
    assert set(ks) == {0.3, 0.5}
    # the papers' presets add AutoAttack-standard to the headline suite (on every headline image)
    for name in ("paper-mnist", "paper-cifar10"):
        assert load_preset(name)["attack"]["autoattack"] is True
        assert expand(load_preset(name))[0].attack["suite"] == {"restarts": 5, "square_queries": 300}  # default


def test_the_headline_suite_is_written_into_every_runs_identity():
    """The suite is part of what a run's numbers mean: written out (defaults filled in) into the
    identity, so a folder evaluated with another suite (or none: made before it) is not reused."""
    quick = expand(load_preset("quick"))[0]
    assert quick.attack["suite"] == {"restarts": 1, "square_queries": 50}
    assert quick.identity()["attack"]["suite"] == {"restarts": 1, "square_queries": 50}
    off = expand(apply_overrides(load_preset("quick"), ["attack.suite=false"]))[0]
    more = expand(apply_overrides(load_preset("quick"), ["attack.suite={restarts: 3}"]))[0]
    assert off.attack["suite"] is False and more.attack["suite"] == {"restarts": 3, "square_queries": 300}
    assert len({quick.config_hash(), off.config_hash(), more.config_hash()}) == 3
    unset = load_preset("quick")
    del unset["attack"]["suite"]
    assert expand(unset)[0].attack["suite"] == {"restarts": 5, "square_queries": 300}  # on by default


def test_overrides_reach_every_run():
    cfg = apply_overrides(load_preset("quick"), ["train.epochs=1", "seeds=[3]", "attack.n=50", "methods.1.k=0.3"])
    runs = expand(cfg)
    assert all(r.train["epochs"] == 1 and r.seed == 3 and r.attack["n"] == 50 for r in runs)
    assert [r.train["method_cfg"].get("k") for r in runs if r.train["method"] == "sgt"] == [0.3]
    assert len(runs) == len(cfg["methods"])


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "epochs must be >= 1"),
    ("methods.1.k=1.5", "k must be in"),
    ("attack.eps=[-0.1]", "eps must be"),
    ("attack.n=0", "positive integer"),
    ("seeds=[a]", "seeds must be"),
    ("nonsense=1", "unknown preset key"),
    ("train.epochs", "KEY=VALUE"),
    ("attack.autoattack=often", "attack.autoattack must be"),
    ("attack.autoattack={n: 1000}", "attack.autoattack.n is gone"),
    ("attack.autoattack={m: 5}", "attack.autoattack must be true or false"),
    ("attack.suite=often", "attack.suite must be true, false or a mapping"),
    ("attack.suite={restarts: -1}", r"attack.suite.restarts must be an integer in 0\.\.1000000"),
    ("attack.suite={square_queries: 1.5}", "attack.suite.square_queries must be an integer"),
    ("attack.suite={steps: 0}", r"attack.suite.steps must be an integer in 1\.\."),
    ("attack.suite={queries: 5}", "unknown attack.suite options: queries; known: restarts, square_queries, steps"),
    ("attack.autocast=fp16", "attack.autocast must be bf16"),
    # an option the entry's method does not read, even at its default value
    ("methods.0.lam=1.0", r"methods entry 'ST': method 'st' does not use lam; its options: none"),
    ("methods.1.train_eps=0.3", r"methods entry 'SGT \(k=0.5\)': method 'sgt' does not use train_eps"),
])
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(SgtlabError, match=message):
        expand(apply_overrides(load_preset("quick"), [override]))


def test_unknown_preset_lists_the_choices():
    with pytest.raises(SgtlabError, match="quick"):
        load_preset("nope")
