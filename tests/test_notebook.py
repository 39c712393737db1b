"""A researcher's notebook (issue 27), small and fast: an own 3-channel CNN (BatchNorm, a residual
block, normalisation inside) on own tensors through `fit` with ST, SGT and ASGT at their default
options, the resolved budget 8/255 in config.json, `benchmark`'s JSON, and a captum LayerGradCam
and a lambda through `saliency_metrics`."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgtlab

CLASSES = 4


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


class OwnCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = Residual(8)
        self.fc = nn.Linear(8 * 4 * 4, CLASSES)

    def forward(self, x):
        x = (x - self.mean) / self.std  # normalisation inside: inputs stay in [0, 1]
        return self.fc(F.adaptive_avg_pool2d(self.block(self.stem(x)), 4).flatten(1))


def colour_tiles(n, seed):
    """Four classes: a bright square in one quadrant of a 3 x 16 x 16 noise image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.4
    for k in range(CLASSES):
        r, c = divmod(k, 2)
        x[y == k, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 0.5
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook")
    train, test = colour_tiles(128, 0), colour_tiles(48, 1)
    models = {}
    for method in ("st", "sgt", "asgt"):
        torch.manual_seed(0)
        model = OwnCNN()
        last = sgtlab.fit(model, train, test, method=method, epochs=2, out=root / method, lr=0.05, batch_size=32)
        models[method] = (model, last, json.loads((root / method / "config.json").read_text()))
    return models, test


def test_fit_defaults_learn_and_write_the_resolved_budget(trained):
    models, _ = trained
    for method, (_, last, cfg) in models.items():
        assert last["test_accuracy"] > 1 / CLASSES + 0.25, (method, last)  # well above chance
        assert cfg["model"] == "OwnCNN"
    assert models["asgt"][2]["method_cfg"]["train_eps"] == pytest.approx(8 / 255)  # colour: 8/255, not 0.3
    assert models["asgt"][2]["method_cfg"]["k"] == 0.1 and models["sgt"][2]["method_cfg"]["k"] == 0.5
    assert models["asgt"][2]["method_cfg"]["train_alpha"] == pytest.approx(2.5 * (8 / 255) / 10)
    with pytest.raises(sgtlab.SgtlabError, match="method 'st' does not use k"):
        sgtlab.fit(OwnCNN(), colour_tiles(8, 2), method="st", k=0.3, epochs=1)
    with pytest.raises(sgtlab.SgtlabError, match=r"8/255 is 0\.0313725"):
        sgtlab.fit(OwnCNN(), colour_tiles(8, 2), method="asgt", train_eps=8, epochs=1)


def test_benchmark_returns_its_json(trained, tmp_path, autoattack_small_budgets):
    models, test = trained
    res = sgtlab.benchmark(models["asgt"][0], test, n=16, checks={"n": 16, "queries": 20}, out=tmp_path)
    assert res["eps"] == pytest.approx(8 / 255) and res["eps_text"] == "8/255" and res["n"] == 16
    assert 0 <= res["robust_accuracy"] <= res["clean_accuracy"] <= 1
    assert res["clean_ci"][0] <= res["clean_accuracy"] <= res["clean_ci"][1]
    assert isinstance(res["flags"], list) and res["checks_run"]
    assert json.loads((tmp_path / "benchmark.json").read_text()) == json.loads(json.dumps(res))


def test_captum_layer_gradcam_and_a_lambda_through_saliency_metrics(trained):
    from captum.attr import LayerGradCam

    models, test = trained
    model = models["sgt"][0]
    res = sgtlab.saliency_metrics(model, test, methods=[LayerGradCam(model, model.block.conv),
                                                       lambda m, x, t: x.mean(1)],
                                  metrics=["entropy", "gini", "aopc", "low_saliency"], n=16, aopc_steps=4,
                                  qs=(0.0, 0.5, 1.0))
    assert set(res["summary"]) == {"LayerGradCam", "lambda"}
    assert res["options"].get("eps", 8 / 255) == pytest.approx(8 / 255)


def test_data_by_name(trained, tmp_path):
    import numpy as np

    models, _ = trained
    x, y = colour_tiles(64, 3)
    path = tmp_path / "tiles.npz"
    np.savez(path, x_train=x.numpy(), y_train=y.numpy(), x_test=x[:32].numpy(), y_test=y[:32].numpy())
    spec = f"npz:{path}"
    torch.manual_seed(0)
    last = sgtlab.fit(OwnCNN(), spec, method="st", epochs=1, lr=0.05, batch_size=32)
    assert last["test_accuracy"] is not None  # the spec's test split measured the epoch
    model = models["st"][0]
    res = sgtlab.robustness(model, spec, attacks=["fgsm"])  # eps: the colour grid, 1/255 .. 16/255
    assert min(res.eps) == pytest.approx(1 / 255) and max(res.eps) == pytest.approx(16 / 255)
    assert set(sgtlab.saliency_metrics(model, spec, metrics=["entropy"], n=8)["summary"]) == {"grad"}
    with pytest.raises(sgtlab.SgtlabError, match="not a data set name"):
        sgtlab.robustness(model, "tiles.npz")


def test_benchmark_command_on_a_factory(tmp_path, monkeypatch, capsys, autoattack_small_budgets):
    import numpy as np

    from sgtlab.cli import main

    x, y = colour_tiles(32, 4)
    np.savez(tmp_path / "tiles.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=x.numpy(), y_test=y.numpy())
    (tmp_path / "zoo.py").write_text(
        "import torch\nfrom torch import nn\n\ndef make():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["benchmark", "zoo:make", "--dataset", f"npz:{tmp_path / 'tiles.npz'}", "--n", "8",
                 "--checks-n", "8", "--checks-queries", "10", "--eps", "8/255"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == "zoo:make" and res["eps_text"] == "8/255" and res["n"] == 8
    assert main(["benchmark", "zoo:make", "--n", "8"]) == 2
    assert "needs --dataset" in capsys.readouterr().err


def test_cli_eps_lists_take_fractions_and_ranges():
    from sgtlab.cli.options import parse_float_list
    from sgtlab.reporting.eps import eps_text

    assert parse_float_list("2/255,8/255") == [2 / 255, 8 / 255]
    assert parse_float_list("1/255:4/255:1/255") == [k / 255 for k in range(1, 5)]  # exact k/255
    assert parse_float_list("0.1:0.3:0.1") == [0.1, 0.2, 0.3]
    with pytest.raises(sgtlab.SgtlabError, match="cannot read"):
        parse_float_list("a/255")
    assert eps_text(2 / 255, (3, 32, 32)) == "2/255" and eps_text(0.3, (1, 28, 28)) == "0.3"


def test_a_run_names_the_plug_in_it_needs(tmp_path, monkeypatch, capsys):
    """A run made with --import records it; a later command without it says "add --import ..." and
    imports nothing by itself (a subprocess: this process has the plug-in imported already)."""
    import os
    import subprocess
    import sys

    from plugin_module import plugin_source

    from sgtlab import plugins
    from sgtlab.cli import main

    (tmp_path / "recplug.py").write_text(plugin_source("rec", register=True))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "")  # restored at teardown: no later test imports the plug-in
    run = tmp_path / "run"
    assert main(["--import", "recplug", "train", "--dataset", "rec-bars", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV}
    r = subprocess.run([sys.executable, "-m", "sgtlab", "evaluate", str(run)], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 2 and "add --import recplug" in r.stderr and "\n" not in r.stderr.strip()


def test_train_step_refusals_and_a_run_at_chance_says_so():
    x, y = colour_tiles(16, 5)
    net = OwnCNN()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with pytest.raises(sgtlab.SgtlabError, match="method 'sgt' does not use train_eps; its options: k, lam"):
        sgtlab.train_step(net, x, y, opt, "sgt", train_eps=0.1)
    with pytest.raises(sgtlab.SgtlabError, match=r"in \[0, 1\]"):
        sgtlab.train_step(net, x, y, opt, "at-pgd", train_eps=8)
    parts = sgtlab.train_step(net, x, y, opt, "at-pgd", train_steps=1)  # eps: 8/255 from the colour images
    assert torch.isfinite(parts["loss"])

    constant = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, CLASSES))
    nn.init.zeros_(constant[1].weight)
    with pytest.warns(sgtlab.errors.SgtlabWarning, match="at or below chance"):
        sgtlab.fit(constant, (x, y), (x, y), method="st", epochs=1, lr=1e-12, batch_size=16)
