"""Saliency maps (`sgtlab.explain`): values on models whose gradients are known, mode and
parameter restoration, bad input, and the `sgtlab explain` command end to end."""
from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import pytest
import torch
from torch import nn

from sgtlab.cli import main
from sgtlab.errors import SgtlabError
from sgtlab.explain import saliency_maps, saliency_names


def linear_model(c=1, h=6, w=6, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k))


def test_registry_names():
    assert saliency_names() == ["grad", "ig", "input-x-grad", "smoothgrad"]


def test_linear_model_attributions_are_exact():
    """For logits W x + b: grad = W[y], input x grad = x * W[y], IG from 0 = x * W[y] (completeness),
    SmoothGrad = W[y] (the gradient is constant, signed averaging keeps it)."""
    model = linear_model(c=2)
    x = torch.rand(5, 2, 6, 6)
    y = torch.tensor([0, 1, 2, 0, 1])
    w = model[1].weight.detach()[y].view(5, 2, 6, 6)
    torch.testing.assert_close(saliency_maps(model, x, y, "grad"), w.abs().sum(1))
    torch.testing.assert_close(saliency_maps(model, x, y, "input-x-grad"), (x * w).abs().sum(1))
    torch.testing.assert_close(saliency_maps(model, x, y, "ig", steps=4), (x * w).abs().sum(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(saliency_maps(model, x, y, "smoothgrad", samples=3), w.abs().sum(1),
                               atol=1e-5, rtol=1e-4)
    raw = saliency_maps(model, x, y, "grad", reduce=False)
    torch.testing.assert_close(raw, w)  # signed, per channel


def test_smoothgrad_noise_is_a_fraction_of_the_input_range():
    """f(x)[0] = sum(x^2)/2 has gradient x; averaging |grad| over noisy copies of x = 0 gives
    E|noise| = std * sqrt(2/pi), with std = noise * (range width)."""
    class Quad(nn.Module):
        def forward(self, x):
            s = (x ** 2).flatten(1).sum(1, keepdim=True) / 2
            return torch.cat([s, -s], 1)

    x = torch.zeros(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    torch.manual_seed(0)
    m = saliency_maps(Quad(), x, y, "smoothgrad", samples=200, noise=0.15, abs_each=True, input_range=(0.0, 2.0))
    assert m.mean().item() == pytest.approx(0.3 * (2 / torch.pi) ** 0.5, rel=0.03)


def test_model_mode_and_parameters_restored(trained_model, mnist5k_test):
    model = trained_model
    model.train()
    model[1][0].eval()  # a submodule the user froze in eval mode stays so
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    try:
        x, y = mnist5k_test.x[:6], mnist5k_test.y[:6]
        for method in saliency_names():
            with torch.no_grad():  # grad mode is switched on inside
                maps = saliency_maps(model, x, y, method, **({"steps": 4} if method == "ig" else {}))
            assert maps.shape == (6, 28, 28) and bool((maps >= 0).all()) and maps.sum() > 0
            assert model.training and not model[1][0].training
            assert not frozen.requires_grad
            assert all(p.grad is None for p in model.parameters())
            assert all(p.requires_grad for p in list(model.parameters())[1:])
    finally:
        frozen.requires_grad_(True)
        model.eval()


def test_dropout_off_and_predicted_target(trained_model, mnist5k_test):
    """Eval mode during the attribution: two calls give the same maps although the model is in
    train mode (dropout would differ); y=None explains the predicted class."""
    x, y = mnist5k_test.x[:8], mnist5k_test.y[:8]
    trained_model.train()
    try:
        a, b = saliency_maps(trained_model, x, y, "grad"), saliency_maps(trained_model, x, y, "grad")
    finally:
        trained_model.eval()
    torch.testing.assert_close(a, b)
    pred = trained_model(x).argmax(1)
    torch.testing.assert_close(saliency_maps(trained_model, x, None, "grad"), saliency_maps(trained_model, x, pred, "grad"))


def test_batches_give_the_same_maps(trained_model, mnist5k_test):
    x, y = mnist5k_test.x[:10], mnist5k_test.y[:10]
    torch.testing.assert_close(saliency_maps(trained_model, x, y, "ig", steps=4, batch_size=3),
                               saliency_maps(trained_model, x, y, "ig", steps=4), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: saliency_maps(m, x, y, "lrp"), "unknown saliency method 'lrp'"),
    (lambda m, x, y: saliency_maps(m, x, y, "grad", steps=3), "takes no option steps"),
    (lambda m, x, y: saliency_maps(m, x[0], y, "grad"), "N x C x H x W"),
    (lambda m, x, y: saliency_maps(m, x, y[:2], "grad"), "labels must be"),
    (lambda m, x, y: saliency_maps(m, x, y, "ig", steps=0), "steps must be >= 1"),
    (lambda m, x, y: saliency_maps(m, x, y, "smoothgrad", samples=0), "samples must be >= 1"),
])
def test_bad_input(call, message):
    model, x, y = linear_model(), torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2])
    with pytest.raises(SgtlabError, match=message):
        call(model, x, y)


# -- the command -----------------------------------------------------------------------------------

FAST = ["--n", "12", "--smoothgrad-samples", "2", "--ig-steps", "4", "--aopc-steps", "6", "--qs", "0,0.5,1",
        "--pgd-qs", "0,1", "--pgd-steps", "2", "--road-fractions", "0.3,0.7", "--sanity-n", "6", "--captum-n", "6",
        "--captum-perturb", "2", "--no-progress"]


def test_cli_end_to_end(trained_run, tmp_path, capsys):
    out = tmp_path / "explain"
    rc = main(["explain", str(trained_run), str(trained_run / "checkpoint.safetensors"), "--dataset", "mnist5k",
               "--methods", "grad,ig", "--metrics", "all", "--out", str(out), *FAST])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "interpretability.csv")))
    assert len(rows) == 2 * 2  # two checkpoints x two saliency methods
    assert {r["method"] for r in rows} == {"grad", "ig"}
    assert len({r["model"] for r in rows}) == 2
    for r in rows:
        assert r["n"] == "12" and r["train_method"] == "st"
        for key in ("entropy", "size_kib", "gini", "aopc_morf", "aopc_lerf"):
            assert float(r[f"{key}_std"]) >= 0
        assert 0 < float(r["entropy_mean"]) < torch.log(torch.tensor(784.0)).item()
        assert 0 < float(r["gini_mean"]) < 1
        assert 0 <= float(r["masked_acc_top_mean"]) <= 1 and 0 <= float(r["low_sal_pgd_mean"]) <= 1
    stored = json.loads((out / "interpretability.json").read_text())
    assert len(stored) == 2 and len(next(iter(stored.values()))["per_image"]["ig"]["entropy"]) == 12
    figs = out / "figures"
    assert all(r["target"] == "true" and float(r["road_gap_mean"]) == float(r["road_gap_mean"]) for r in rows)
    assert len(list(figs.glob("sanity_*.png"))) == 2  # one cascading-randomisation picture per checkpoint
    for name in ("maps_grad", "maps_ig", "masked_accuracy_grad", "aopc_ig", "road_ig", "low_saliency_ig",
                 "entropy_grad"):
        for ext in ("png", "pdf"):
            assert (figs / f"{name}.{ext}").stat().st_size > 5000
        img = mpimg.imread(figs / f"{name}.png")
        assert img.shape[0] > 200 and img.shape[1] > 200 and img[..., :3].std() > 0.05
    assert "wrote" in capsys.readouterr().out


def test_cli_takes_a_captum_method_by_dotted_name(trained_run, tmp_path, capsys):
    """`--methods captum.attr.DeepLift` gets the metrics, the sanity check and the figures as a
    built-in method does; the csv names it as typed."""
    pytest.importorskip("captum.attr")
    import shutil

    # a copy: explain also writes RUN/interpretability.json, and the shared run may hold another request's
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("interpretability.json"))
    out = tmp_path / "captum"
    assert main(["explain", str(run), "--methods", "grad,captum.attr.DeepLift",
                 "--metrics", "entropy,gini,aopc,sanity", "--out", str(out), *FAST]) == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in csv.DictReader(open(out / "interpretability.csv"))}
    assert set(rows) == {"grad", "captum.attr.DeepLift"}
    deeplift = rows["captum.attr.DeepLift"]
    assert 0 < float(deeplift["gini_mean"]) < 1 and float(deeplift["aopc_morf_mean"]) == float(deeplift["aopc_morf_mean"])
    assert deeplift["entropy_mean"] != rows["grad"]["entropy_mean"]  # its own maps, not grad's
    assert any(f.name.startswith("maps_") and "DeepLift" in f.name for f in (out / "figures").glob("*.png"))
    assert main(["explain", str(run), "--methods", "captum.attr.NoSuchMethod", "--out",
                 str(tmp_path / "o2"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "NoSuchMethod" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_checkpoint_and_method(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    out = tmp_path / "o"
    assert main(["explain", str(trained_run), str(bad), "--out", str(out), *FAST]) == 2
    assert "not a readable sgtlab checkpoint" in capsys.readouterr().err
    assert not out.exists()  # nothing was computed or written
    assert main(["explain", str(tmp_path / "missing"), "--out", str(out), *FAST]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["explain", str(trained_run), "--methods", "grad,deeplift", "--out", str(out), *FAST]) == 2
    assert "unknown saliency method 'deeplift'" in capsys.readouterr().err
    assert main(["explain", str(trained_run), "--metrics", "entropy,localisation", "--out", str(out), *FAST]) == 2
    assert "localisation metric needs" in capsys.readouterr().err
    # after FAST, whose own values of these options would otherwise win
    assert main(["explain", str(trained_run), "--out", str(out), *FAST, "--sanity-n", "1"]) == 2
    assert "--sanity-n must be >= 2" in capsys.readouterr().err
    assert main(["explain", str(trained_run), "--metrics", "road", "--out", str(out), *FAST,
                 "--road-fractions", "0.5,1"]) == 2
    assert "ROAD removal fractions must be in [0, 1)" in capsys.readouterr().err
