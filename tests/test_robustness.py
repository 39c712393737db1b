"""The robustness sweep, the gradient-masking checks and `sgtlab attack`, on the trained MNIST-5k model."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from sgtlab.attacks import fgsm, mifgsm, pgd
from sgtlab.cli import main
from sgtlab.errors import SgtlabError
from sgtlab.evaluate import accuracy
from sgtlab.evaluate.masking_checks import gradient_masking_checks, tolerance
from sgtlab.evaluate.robustness import robustness_sweep

N = 100
EPS = [0.1, 0.2, 0.5]


@pytest.fixture(scope="module")
def sweep(trained_model, mnist5k_test):
    return robustness_sweep(trained_model, mnist5k_test, ["fgsm", "pgd", "mifgsm", "ensemble"], EPS, n=N,
                            batch_size=100, progress=False, seed=3)


def test_clean_accuracy_and_strength(sweep, trained_model, mnist5k_test):
    assert sweep.clean_accuracy == pytest.approx(accuracy(trained_model, mnist5k_test.subset(N)))
    acc = sweep.robust_accuracy
    for e in EPS:
        assert acc["pgd"][e] <= acc["fgsm"][e]
        assert acc["ensemble"][e] <= min(acc["fgsm"][e], acc["pgd"][e], acc["mifgsm"][e])
    assert acc["pgd"][0.5] <= 0.10
    assert acc["fgsm"][0.1] > 0.5  # a real model, not a broken one


def test_curves_non_increasing(sweep):
    for a, curve in sweep.robust_accuracy.items():
        values = [sweep.clean_accuracy] + [curve[e] for e in EPS]
        assert all(b <= a_ for a_, b in zip(values, values[1:])), (a, values)


def test_sweep_never_weaker_than_from_scratch(sweep, trained_model, mnist5k_test):
    """Each eps from scratch on all images (PGD seeded as the sweep seeds it): the sweep's robust
    samples are a subset of the from-scratch robust samples."""
    x, y = mnist5k_test.x[:N], mnist5k_test.y[:N]
    for j, e in enumerate(EPS[:2]):
        torch.manual_seed(3 + j)
        scratch = {"fgsm": fgsm(trained_model, x, y, e), "pgd": pgd(trained_model, x, y, e),
                   "mifgsm": mifgsm(trained_model, x, y, e)}
        for a, adv in scratch.items():
            with torch.no_grad():
                robust_scratch = trained_model(adv).argmax(1) == y
            assert not (sweep.robust(a, e) & ~robust_scratch).any(), (a, e)


def test_per_sample_table_and_files(sweep, tmp_path):
    paths = sweep.save(tmp_path)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == N
    for a in sweep.attacks:  # every aggregate follows from the per-sample columns
        for e in EPS:
            robust = sum(int(r[f"{a}@{e:g}"]) for r in rows) / N
            assert robust == pytest.approx(sweep.robust_accuracy[a][e])
            from_first = sum(float(r[f"{a}:first_fooled_eps"]) > e for r in rows) / N
            assert from_first == pytest.approx(robust)
    assert sum(int(r["clean_correct"]) for r in rows) / N == pytest.approx(sweep.clean_accuracy)
    saved = json.loads(paths["json"].read_text())
    assert saved["clean_accuracy"] == pytest.approx(sweep.clean_accuracy)
    assert saved["robust_accuracy"]["pgd"]["0.1"] == pytest.approx(sweep.robust_accuracy["pgd"][0.1])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_clean_misclassified_are_never_attacked(sweep):
    wrong = ~sweep.clean_correct
    for a in sweep.attacks:
        assert (sweep.first_fooled[a][wrong] == 0).all()
        assert (sweep.first_fooled[a][~wrong] > 0).all()


@pytest.mark.parametrize("kw,match", [
    ({"attacks": ["fgsm", "nope"]}, "unknown attack 'nope'"),
    ({"eps": [0.1, -0.2]}, "eps must be"),
    ({"eps": []}, "no eps"),
    ({"n": 0}, "n must be"),
    ({"batch_size": 0}, "batch size"),
    ({"x_scale": 255.0}, r"\[0, 1\]"),
])
def test_sweep_bad_input_before_work(mnist5k_test, kw, match):
    class Untouchable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise AssertionError("the model was run")

    args = {"attacks": ["fgsm"], "eps": [0.1], "n": 10, "batch_size": 10}
    args.update(kw)
    data = (mnist5k_test.x[:10] * args.pop("x_scale", 1.0), mnist5k_test.y[:10])
    with pytest.raises(SgtlabError, match=match):
        robustness_sweep(Untouchable(), data, progress=False, **args)


@pytest.mark.slow  # about 100 s on a loaded 2-core machine
def test_gradient_masking_checks_pass_on_honest_model(trained_model, mnist5k_test):
    checks = gradient_masking_checks(trained_model, mnist5k_test, n=100, square_queries=200)
    assert set(checks) == {"iterative_not_weaker_than_fgsm", "chance_at_large_eps", "more_steps_not_weaker",
                           "gradient_free_not_stronger", "fgsm_curve_not_rising"}
    for name, c in checks.items():  # pyautoattack is a dependency: no check is skipped
        assert c["passed"] is True, (name, c)
    assert checks["chance_at_large_eps"]["pgd_accuracy"] <= 0.1


@pytest.mark.slow  # Square on a model no gradient attack can touch: the longest check
def test_gradient_masking_checks_flag_a_masked_model(trained_model, mnist5k_test):
    """A model whose input gradient is zero (quantised input) must be flagged."""

    class Quantised(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            q = torch.round(x * 4) / 4
            return self.inner(x * 0 + q.detach())  # the value of q, a zero gradient w.r.t. x

    checks = gradient_masking_checks(Quantised(trained_model), mnist5k_test, n=60, square_queries=200)
    assert not checks["chance_at_large_eps"]["passed"] or checks["gradient_free_not_stronger"]["passed"] is False


# --- from-scratch sweeps and the rising-FGSM check ------------------------------------------------

SCRATCH_EPS = [0.1, 0.2, 0.3]


def test_from_scratch_is_each_eps_on_its_own(trained_model, mnist5k_test):
    data = (mnist5k_test.x[:60], mnist5k_test.y[:60])
    scratch = robustness_sweep(trained_model, data, ["fgsm", "pgd", "ensemble"], SCRATCH_EPS, progress=False, seed=3,
                               from_scratch=True)
    nested = robustness_sweep(trained_model, data, ["fgsm", "pgd"], SCRATCH_EPS, progress=False, seed=3)
    assert scratch.sweep == "from-scratch" and nested.sweep == "nested"
    for j, e in enumerate(SCRATCH_EPS):  # the j-th eps's random starts are seeded seed + j, as a one-eps sweep's
        alone = robustness_sweep(trained_model, data, ["fgsm", "pgd"], [e], progress=False, seed=3 + j)
        for a in ("fgsm", "pgd"):
            assert torch.equal(scratch.robust(a, e), alone.robust(a, e)), (a, e)
            assert not (nested.robust(a, e) & ~scratch.robust(a, e)).any()  # nested: never weaker
        assert torch.equal(scratch.robust("ensemble", e), scratch.robust("fgsm", e) & scratch.robust("pgd", e))
    assert scratch.to_dict()["from_scratch"] is True


class Periodic(torch.nn.Module):
    """Two classes; class 0's logit is cos(2 pi (mean(x) - 0.5) / 0.4): FGSM shifts the mean by eps,
    so it fools the model at eps ~0.2 and not at 0.4 (the cosine comes back): a rising FGSM curve,
    the textbook sign of a gradient that misleads a single-step attack."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = torch.cos(2 * math.pi * (x.mean(dim=(1, 2, 3)) - 0.5) / 0.4) + self.dummy
        return torch.stack([z, -z], 1)


def test_rising_fgsm_curve_is_flagged_with_a_tolerance_from_n():
    g = torch.Generator().manual_seed(0)
    x = 0.51 + 0.02 * torch.rand(40, 1, 28, 28, generator=g)  # mean just above 0.5: FGSM pushes it up
    y = torch.zeros(40, dtype=torch.long)
    checks = gradient_masking_checks(Periodic(), (x, y), n=None, square_queries=20)
    c = checks["fgsm_curve_not_rising"]
    assert c["passed"] is False and "rise" in c
    assert c["fgsm@0.2"] < 0.1 and c["fgsm@0.4"] > 0.9
    assert c["tol_from"].endswith("n = 40") and c["tol"] == max(tolerance(40, a, b) for a in (0, 1) for b in (0, 1))
    # tolerances shrink with n: 1.96 sqrt(p (1 - p) / n)
    assert tolerance(400, 0.5) == tolerance(100, 0.5) / 2 and math.isclose(tolerance(100, 0.5), 0.098, abs_tol=1e-3)


def test_standard_autoattack_runs_in_the_ball_and_is_not_weaker_than_pgd():
    """The registered `autoattack` is the reference standard AutoAttack (pyautoattack, a dependency)."""
    from sgtlab.attacks import build_attack

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = torch.rand(6, 1, 28, 28)
    y = model(x).argmax(1)
    adv, adv_pgd = build_attack("autoattack")(model, x, y, 0.05), pgd(model, x, y, 0.05)
    assert (adv - x).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        robust_aa = (model(adv).argmax(1) == y).sum()
        robust_pgd = (model(adv_pgd).argmax(1) == y).sum()
    assert robust_aa <= robust_pgd


def test_reference_attacks_leave_the_models_parameter_grads_as_they_were():
    """AutoAttack's FAB-T calls backward() on the logits; the model's parameter grads must come back as
    the caller left them: None stays None, a grad already there keeps its values (nothing added)."""
    from sgtlab.attacks import build_attack

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = torch.rand(2, 1, 28, 28)
    y = model(x).argmax(1)
    kept = torch.ones(10)
    model[1].bias.grad = kept
    # eps 0.001 fools neither image, so every attack of AutoAttack runs, FAB-T included
    adv = build_attack("autoattack")(model, x, y, 0.001)
    with torch.no_grad():
        assert (model(adv).argmax(1) == y).all()
    assert model[1].weight.grad is None
    assert model[1].bias.grad is kept and torch.equal(kept, torch.ones(10))
    for name, params in (("apgd-ce", {"steps": 5}), ("square", {"queries": 20})):
        build_attack(name, **params)(model, x, y, 0.001)
        assert model[1].weight.grad is None and model[1].bias.grad is kept and torch.equal(kept, torch.ones(10))


# --- the CLI -------------------------------------------------------------------------------------
def test_cli_json_end_to_end(trained_run, tmp_path, capsys):
    out = tmp_path / "att"
    code = main(["attack", str(trained_run), "--attacks", "fgsm,pgd,ensemble", "--eps", "0.1:0.3:0.1",
                 "--n", "80", "--json", "--out", str(out), "--device", "cpu", "--batch-size", "40"])
    assert code == 0
    obj = json.loads(capsys.readouterr().out)
    assert set(obj["robust_accuracy"]) == {"fgsm", "pgd", "ensemble"}
    assert list(obj["robust_accuracy"]["pgd"]) == ["0.1", "0.2", "0.3"]
    assert 0.5 < obj["clean_accuracy"] <= 1
    for curve in obj["robust_accuracy"].values():
        vals = list(curve.values())
        assert all(0 <= v <= obj["clean_accuracy"] for v in vals) and vals == sorted(vals, reverse=True)
    assert (out / "robustness.json").exists() and (out / "robustness_per_sample.csv").exists()


def test_cli_table(trained_run, tmp_path, capsys):
    assert main(["attack", str(trained_run), "--attacks", "fgsm", "--eps", "0.1,0.2", "--n", "40",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "clean accuracy" in text and "fgsm" in text and "0.2" in text


def _other_arch_checkpoint(path):
    from sgtlab.models import build_model
    from sgtlab.train.checkpoint import save_checkpoint

    model = build_model("sgt-cnn", 3, 10, (0.5,) * 3, (0.25,) * 3)
    arch = {"model": "sgt-cnn", "in_channels": 3, "num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3,
            "dataset": "cifar10"}
    save_checkpoint(path, model, {"arch": arch})
    return path


@pytest.mark.parametrize("argv,match", [
    (["--eps=-0.1,0.2"], "eps must be"),
    (["--eps", "0.1,abc"], "cannot read"),
    (["--attacks", "fgsm,cw"], "unknown attack 'cw'"),
    (["--n", "0"], "--n must be"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_cli_bad_input(trained_run, capsys, argv, match):
    import re

    assert main(["attack", str(trained_run), *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_other_architecture(tmp_path, capsys):
    ckpt = _other_arch_checkpoint(tmp_path / "rgb.safetensors")
    assert main(["attack", str(ckpt), "--dataset", "mnist5k", "--n", "10"]) == 2
    assert "3-channel" in capsys.readouterr().err


# --- attacks run outside the sweep, folded into the ensemble ----------------------------------------

def _result(from_scratch: bool = False):
    """4 samples, all clean-correct, grid 0.1 / 0.3; PGD fools sample 0 at 0.1, FGSM sample 1 at 0.3."""
    from sgtlab.evaluate.robustness import RobustnessResult

    inf = math.inf
    first = {"pgd": torch.tensor([0.1, inf, inf, inf], dtype=torch.float64),
             "fgsm": torch.tensor([inf, 0.3, inf, inf], dtype=torch.float64)}
    first["ensemble"] = torch.minimum(first["pgd"], first["fgsm"])
    outcomes = None
    if from_scratch:
        outcomes = {a: torch.stack([f > 0.1, f > 0.3], 1) for a, f in first.items()}
    y = torch.zeros(4, dtype=torch.long)
    return RobustnessResult(["pgd", "fgsm", "ensemble"], [0.1, 0.3], y, y.clone(), first, outcomes=outcomes)


@pytest.mark.parametrize("eps", [0.3, 0.2])
def test_fold_counts_a_folded_fool_from_the_next_grid_eps_on(eps, tmp_path):
    """Square (say) fools sample 2 at eps, run on the first 3 samples only: the ensemble counts it
    fooled at every grid eps >= eps (nesting), leaves smaller eps and sample 3 alone, and keeps the
    outcome as its own per-sample column with blanks where it did not run."""
    from sgtlab.reporting.data import outcomes

    r = _result()
    r.fold("checks:square", eps, torch.tensor([True, True, False]))
    assert r.robust("ensemble", 0.1).tolist() == [False, True, True, True]
    assert r.robust("ensemble", 0.3).tolist() == [False, False, False, True]
    assert r.robust_accuracy["pgd"][0.3] == 0.75  # the sweep's own attacks are untouched
    r.save(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "robustness_per_sample.csv")))
    assert [row[f"checks:square@{eps:g}"] for row in rows] == ["1", "1", "0", ""]
    ids, robust = outcomes(tmp_path.parent, {"run": "x", "folder": str(tmp_path)}, "ensemble", 0.3)
    assert robust.tolist() == [0, 0, 0, 1]
    stored = json.loads((tmp_path / "robustness.json").read_text())
    assert stored["robust_accuracy"]["ensemble"]["0.3"] == 0.25
    assert stored["folded"] == {f"checks:square@{eps:g}": {"eps": eps, "n": 3, "accuracy": pytest.approx(2 / 3)}}


def test_fold_from_scratch_changes_that_eps_only_and_refuses_clashes():
    r = _result(from_scratch=True)
    r.fold("autoattack", 0.1, torch.tensor([True, True, True, False]))
    assert r.robust("ensemble", 0.1).tolist() == [False, True, True, False]
    assert r.robust("ensemble", 0.3).tolist() == [False, False, True, True]  # no nesting from scratch
    r.fold("autoattack", 0.3, torch.tensor([True, True, False, True]))
    assert r.robust("ensemble", 0.3).tolist() == [False, False, False, True]
    for label, eps, n in (("autoattack", 0.3, 4), ("pgd", 0.2, 4), ("x", 0.3, 5)):
        with pytest.raises(SgtlabError, match="cannot fold"):
            r.fold(label, eps, torch.ones(n, dtype=torch.bool))


def test_bf16_autocast_runs_the_attacks_only_and_keeps_float32_verdicts(trained_model, mnist5k_test):
    """Under `autocast="bf16"` the attacks' passes (with gradients) run in bfloat16; the clean pass and
    the verdict on each adversarial image (no gradients) run in float32, so clean accuracy is exactly
    the float32 one and the robust accuracies stay close to float32's."""
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            seen.append((torch.is_grad_enabled() and x.requires_grad, torch.is_autocast_enabled("cpu")))
            return self.inner(x)

    data = (mnist5k_test.x[:48], mnist5k_test.y[:48])
    kw = dict(attacks=["pgd"], eps=[0.1], progress=False)
    ref = robustness_sweep(trained_model, data, **kw)
    half = robustness_sweep(Spy(trained_model), data, autocast="bf16", **kw)
    attack_passes = {a for g, a in seen if g}
    verdicts = {a for g, a in seen if not g}  # the clean pass and the verdicts
    assert attack_passes == {True} and verdicts == {False}
    assert half.clean_accuracy == ref.clean_accuracy
    assert abs(half.robust_accuracy["pgd"][0.1] - ref.robust_accuracy["pgd"][0.1]) <= 0.1
    with pytest.raises(SgtlabError, match="autocast"):
        robustness_sweep(trained_model, data, autocast="fp16", **kw)


def test_checks_through_the_cli_and_the_api_judge_and_leave_the_numbers_alone(trained_run, trained_model,
                                                                             mnist5k_test, tmp_path, capsys):
    """`sgtlab attack --checks` and `sgtlab.robustness(..., checks=True)` run the gradient-masking
    checks (checks.json, `info["checks"]`) and change no robust accuracy: the checks judge the
    evaluation, they are not part of the headline (sgtlab.evaluate.headline_suite is)."""
    import sgtlab

    out, plain = tmp_path / "att", tmp_path / "plain"
    argv = ["attack", str(trained_run), "--attacks", "pgd,ensemble", "--eps", "0.1,0.3", "--n", "24", "--json",
            "--device", "cpu"]
    assert main([*argv, "--checks", "--out", str(out)]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert "gradient_free_not_stronger" in obj["checks"] and (out / "checks.json").exists()
    assert main([*argv, "--out", str(plain)]) == 0
    capsys.readouterr()
    assert (out / "robustness_per_sample.csv").read_text() == (plain / "robustness_per_sample.csv").read_text()
    assert "folded" not in json.loads((out / "robustness.json").read_text())
    data = (mnist5k_test.x[:24], mnist5k_test.y[:24])
    res = sgtlab.robustness(trained_model, data, [0.1, 0.3], ["pgd", "ensemble"], checks=True)
    ref = sgtlab.robustness(trained_model, data, [0.1, 0.3], ["pgd", "ensemble"])
    assert "more_steps_not_weaker" in res.info["checks"] and not res.folded
    assert res.robust_accuracy == ref.robust_accuracy
