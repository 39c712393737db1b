"""Saliency-quality metrics pinned on hand-made maps and a hand-built model that depends on known
pixels; agreement with quantus; the one-call API; the pictures."""
from __future__ import annotations

import json
import math
import zlib

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.data import TensorData
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.interpretability import (QUICK_OPTIONS, aopc, interpretability_metrics, localisation, low_saliency_curve,
                                              masked_accuracy, saliency_entropy, saliency_gini, saliency_size,
                                              summary_rows)
from sgtlab.figures import (aopc_plot, entropy_plot, low_saliency_plot, masked_accuracy_plot, saliency_grid)

H = W = 12
N = 16


def one_hot_and_uniform(n=4):
    one_hot = torch.zeros(n, H, W)
    one_hot[torch.arange(n), torch.arange(n) % H, 3] = 2.5
    return one_hot, torch.full((n, H, W), 0.7)


def test_entropy_one_hot_zero_uniform_log_n():
    one_hot, uniform = one_hot_and_uniform()
    torch.testing.assert_close(saliency_entropy(one_hot), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(saliency_entropy(uniform), torch.full((4,), math.log(H * W)))
    mixed = torch.rand(4, H, W)
    assert bool(((saliency_entropy(mixed) > 0) & (saliency_entropy(mixed) < math.log(H * W))).all())
    assert bool(torch.isnan(saliency_entropy(torch.zeros(1, H, W))).all())  # no distribution


def test_gini_uniform_zero_one_hot_near_one():
    one_hot, uniform = one_hot_and_uniform()
    torch.testing.assert_close(saliency_gini(uniform), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(saliency_gini(one_hot), torch.full((4,), 1 - 1 / (H * W)))
    # sign does not matter (|s|); sparser maps score higher
    half = torch.rand(4, H, W) * (torch.rand(4, H, W) > 0.5)
    assert bool((saliency_gini(-half) > saliency_gini(half + 1)).all())


def test_size_is_zlib_of_the_scaled_map():
    maps = torch.rand(3, H, W)
    maps[1] = 0.5  # constant: scales to all zeros
    sizes = saliency_size(maps)
    a = maps[0].numpy()
    scaled = np.round((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)
    assert sizes[0].item() == pytest.approx(len(zlib.compress(scaled.tobytes(), 9)) / 1024)
    assert sizes[1].item() == pytest.approx(len(zlib.compress(bytes(H * W), 9)) / 1024)
    assert sizes[1] < sizes[0]


@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus")


def test_entropy_and_gini_agree_with_quantus(quantus):
    torch.manual_seed(0)
    maps = torch.rand(6, 1, H, W) ** 4  # skewed, like real saliency
    maps[0] = 1.0
    maps[1] = 0.0
    maps[1, 0, 2, 2] = 1.0
    a = maps.numpy().astype(np.float64)
    x = np.random.rand(6, 1, H, W).astype(np.float32)
    y = np.zeros(6, dtype=int)
    kw = dict(abs=True, normalise=False, disable_warnings=True, return_aggregate=False)
    q_entropy = quantus.Complexity(**kw)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    q_gini = quantus.Sparseness(**kw)(model=None, x_batch=x, y_batch=y, a_batch=a.copy())
    np.testing.assert_allclose(saliency_entropy(maps[:, 0]).numpy(), np.asarray(q_entropy), atol=1e-5)
    # quantus adds 1e-7 to every value before the Gini index: agreement to that order
    np.testing.assert_allclose(saliency_gini(maps[:, 0]).numpy(), np.asarray(q_gini), atol=1e-4)


def test_localisation_shares():
    maps = torch.rand(5, H, W)
    region = torch.zeros(5, H, W, dtype=torch.bool)
    region[:, :4, :4] = True
    inside, outside = localisation(maps, region), localisation(maps, ~region)
    torch.testing.assert_close(inside + outside, torch.ones(5))
    torch.testing.assert_close(inside, maps[:, :4, :4].sum((1, 2)) / maps.sum((1, 2)))
    with pytest.raises(SgtlabError, match="region mask"):
        localisation(maps, region[:, :6])


# -- a model that depends on known pixels ------------------------------------------------------------

RELEVANT = torch.zeros(H, W, dtype=torch.bool)
RELEVANT[2:8, 4:10] = True  # 36 pixels = 9 patches of 2 x 2


class KnownPixels(nn.Module):
    """Two classes; class 1 iff the mean of the relevant pixels is above 0.75. Other pixels have
    no effect at all."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(12.0))

    def forward(self, x):
        z = self.w * (x[:, 0][:, RELEVANT].mean(1) - 0.75)
        return torch.stack([-z, z], 1)


def known_pixel_data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, H, W, generator=g) * 0.3
    x[:, 0, RELEVANT] = 0.9 + 0.1 * torch.rand(n, int(RELEVANT.sum()), generator=g)
    return x, torch.ones(n, dtype=torch.long)


def good_map(n=N):
    return RELEVANT.float().expand(n, H, W) + 0.01 * torch.rand(n, H, W)


def test_aopc_ranks_relevant_pixels_first_better_than_random():
    model = KnownPixels()
    x, _ = known_pixel_data()
    fill = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    rnd = torch.rand(N, H, W, generator=torch.Generator().manual_seed(4))
    res = {(name, o): aopc(model, x, m, order=o, steps=12, fill=fill)["aopc"].mean().item()
           for name, m in (("good", good_map()), ("random", rnd)) for o in ("morf", "lerf")}
    assert res["good", "morf"] > res["random", "morf"] + 0.1
    assert res["good", "lerf"] < res["random", "lerf"]
    assert abs(res["good", "lerf"]) < 1e-6  # only irrelevant patches replaced: no change at all


def test_aopc_matches_a_per_image_per_step_loop():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    x = torch.rand(4, 2, 10, 10)
    maps = torch.rand(4, 10, 10)
    fill = torch.rand(x.shape)
    steps, patch = 7, 3  # 10 px with 3 px patches: the last row/column of patches is smaller
    ours = aopc(model, x, maps, order="morf", patch=patch, steps=steps, fill=fill, batch_size=5)
    for i in range(4):
        scores = {(r, c): maps[i, r:r + patch, c:c + patch].sum().item() for r in range(0, 10, patch)
                  for c in range(0, 10, patch)}
        ranked = sorted(scores, key=lambda rc: -scores[rc])
        with torch.no_grad():
            p0 = F.softmax(model(x[i:i + 1]), 1)[0]
            c = p0.argmax()
            xk, drops = x[i].clone(), [0.0]
            for r, cc in ranked[:steps]:
                xk[:, r:r + patch, cc:cc + patch] = fill[i, :, r:r + patch, cc:cc + patch]
                drops.append((p0[c] - F.softmax(model(xk[None]), 1)[0, c]).item())
        assert ours["aopc"][i].item() == pytest.approx(np.mean(drops), abs=1e-6)
        assert ours["pred"][i] == c


def test_masked_accuracy_top_falls_faster_than_random():
    model = KnownPixels()
    x, y = known_pixel_data(64)
    res = masked_accuracy(model, x, y, good_map(64), ps=[0, 10, 30, 50], generator=torch.Generator().manual_seed(0))
    assert res["top"][0] == res["random"][0] == 1.0
    assert res["top"][2] < 0.1  # 30 % of 144 px > the 36 relevant ones: all replaced by noise
    assert res["random"][1] > 0.9 and res["top"][1] < res["random"][1]
    assert res["top_correct"].shape == (64, 4)


def test_low_saliency_curve_uses_the_least_salient_support():
    """Noise and PGD on the least-salient pixels: as long as the support holds only irrelevant
    pixels (q <= 0.75), nothing changes; at q = 1 PGD with a large budget flips everything."""
    model = KnownPixels()
    x, y = known_pixel_data()
    res = low_saliency_curve(model, x, y, good_map(), qs=[0, 0.5, 0.75, 1.0], eps=0.5, pgd_steps=5,
                             generator=torch.Generator().manual_seed(0))
    assert res["noise"][:3] == [1.0, 1.0, 1.0]
    assert res["pgd"][:3] == [1.0, 1.0, 1.0]
    assert res["pgd"][3] == 0.0


def test_low_saliency_pgd_stops_per_sample():
    """At q = 1 a budget of 0.5 fools every image within two steps of 0.25: with per-sample early
    stopping the model sees far fewer rows than noise + 5 PGD steps + the final check (7 n)."""
    rows = []

    class Counting(KnownPixels):
        def forward(self, x):
            rows.append(len(x))
            return super().forward(x)

    x, y = known_pixel_data()
    res = low_saliency_curve(Counting(), x, y, good_map(), qs=[1.0], eps=0.5, pgd_steps=5,
                             generator=torch.Generator().manual_seed(0))
    assert res["pgd"] == [0.0]
    assert sum(rows) <= 5 * len(x) < 7 * len(x)


@pytest.mark.parametrize("call", [
    lambda m, x, y, s: aopc(m, x, s[:, :6]),
    lambda m, x, y, s: aopc(m, x, s[:3]),
    lambda m, x, y, s: masked_accuracy(m, x, y, s[..., None]),
    lambda m, x, y, s: low_saliency_curve(m, x, y, s.transpose(1, 2)[:, :5]),
    lambda m, x, y, s: aopc(m, x, s, steps=1000),
    lambda m, x, y, s: low_saliency_curve(m, x, y, s, qs=[0.5, 1.5]),
])
def test_maps_and_images_of_different_shapes_are_refused(call):
    x, y = known_pixel_data(4)
    with pytest.raises(SgtlabError):
        call(KnownPixels(), x, y, good_map(4))


# -- one call for a model ----------------------------------------------------------------------------

def test_interpretability_metrics_api(trained_model, mnist5k_test):
    n = 10
    digit = mnist5k_test.x[:n, 0] > 0.3
    patch = torch.zeros(n, 28, 28, dtype=torch.bool)
    patch[:, :4, :4] = True
    data = TensorData(mnist5k_test.x[:n], mnist5k_test.y[:n], "mnist5k", {"patch_mask": patch, "digit_mask": digit})
    res = interpretability_metrics(trained_model, data, ["grad", "ig"], "all", n=8,
                                   method_options={"ig": {"steps": 4}}, aopc_steps=5, qs=[0, 1], pgd_steps=2,
                                   road_fractions=[0.3, 0.7], captum_perturb=2)
    json.dumps(res)  # plain JSON (the runner stores it as is)
    s = res["summary"]["grad"]
    for key in ("entropy_mean", "size_kib_mean", "gini_mean", "aopc_morf_mean", "aopc_lerf_mean", "abpc_mean",
                "abpc_lo", "road_morf_mean", "road_gap_mean", "infidelity_mean", "sensitivity_mean",
                "sanity_spearman_last", "masked_acc_top_mean", "low_sal_noise_mean", "low_sal_pgd_mean",
                "decoy_share_mean", "digit_share_mean"):
        assert math.isfinite(s[key]), key
    # the MoRF / LeRF ratio only where LeRF is clearly above 0
    from sgtlab.evaluate.saliency_metrics import clearly_positive
    lerf_positive = clearly_positive(res["per_image"]["grad"]["aopc_lerf"])[0]
    assert math.isfinite(s["aopc_rel"]) == lerf_positive
    assert res["sanity"]["methods"]["grad"]["verdict"] in ("pass", "fail", "unclear") and res["sanity"]["n"] == 8
    assert s["sanity_passed"] == {"pass": 1.0, "fail": 0.0}.get(res["sanity"]["methods"]["grad"]["verdict"], s["sanity_passed"])
    assert res["per_image"]["grad"]["class"] == data.y[:8].tolist()  # the true label by default
    assert s["digit_share_mean"] > s["decoy_share_mean"]  # an ST model looks at the digit, not a blank corner
    assert len(res["per_image"]["ig"]["entropy"]) == 8 and len(res["curves"]["ig"]["aopc"]["morf"]) == 6
    assert len(res["examples"]["maps"]["ig"]) == 8
    rows = summary_rows(res, model="st")
    assert [r["method"] for r in rows] == ["grad", "ig"] and rows[0]["model"] == "st"
    # same seed, same numbers; the masked-accuracy random baseline is shared by all methods
    again = interpretability_metrics(trained_model, data, ["grad"], ["aopc", "masked_accuracy"], n=8, aopc_steps=5)
    assert again["summary"]["grad"]["aopc_morf_mean"] == pytest.approx(s["aopc_morf_mean"], abs=1e-7)
    assert res["curves"]["grad"]["masked_accuracy"]["random"] == res["curves"]["ig"]["masked_accuracy"]["random"]
    quick = interpretability_metrics(trained_model, data, ["smoothgrad"], n=4, **QUICK_OPTIONS)
    assert quick["curves"]["smoothgrad"]["masked_accuracy"]["p"] == list(QUICK_OPTIONS["masked_ps"])
    assert quick["curves"]["smoothgrad"]["low_saliency"]["pgd_q"] == list(QUICK_OPTIONS["pgd_qs"])
    with pytest.raises(SgtlabError, match="localisation metric needs"):
        interpretability_metrics(trained_model, mnist5k_test, ["grad"], ["localisation"], n=4)
    with pytest.raises(SgtlabError, match="unknown interpretability metric"):
        interpretability_metrics(trained_model, mnist5k_test, ["grad"], ["sharpness"], n=4)
    with pytest.raises(SgtlabError, match="unknown saliency method"):
        interpretability_metrics(trained_model, mnist5k_test, ["gradcam"], n=4)


# -- pictures ----------------------------------------------------------------------------------------

def check_picture(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[1].stat().st_size > 3000 and paths[1].read_bytes()[:4] == b"%PDF"
    img = mpimg.imread(paths[0])
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05  # not blank


def test_pictures(tmp_path):
    x, _ = known_pixel_data(5)
    check_picture(saliency_grid(x, {"good": good_map(5), "random": torch.rand(5, H, W)}, tmp_path / "grid.png",
                                labels=list("abcde")))
    check_picture(masked_accuracy_plot({"st": {"p": [0, 50], "top": [1, 0.2], "random": [1, 0.8]}}, tmp_path / "ma"))
    check_picture(aopc_plot({"st": {"k": [0, 1, 2], "morf": [0, 0.3, 0.5], "lerf": [0, 0, 0.1]}}, tmp_path / "aopc"))
    check_picture(low_saliency_plot({"st": {"q": [0, 0.5, 1], "noise": [1, 0.9, 0.5], "pgd_q": [0, 1],
                                            "pgd": [1, 0.0]}}, tmp_path / "low"))
    check_picture(entropy_plot({"st": np.random.rand(50) + 5, "sgt": np.random.rand(50) + 4}, tmp_path / "ent"))
    with pytest.raises(SgtlabError, match="do not fit"):
        saliency_grid(x, {"bad": torch.rand(4, H, W)}, tmp_path / "bad")


def test_localisation_on_decoy_mnist(trained_model):
    """The Decoy-MNIST masks feed the localisation metric ("all" includes it there): an ST model
    trained on clean digits puts more saliency mass on the digit than on the random decoy patch."""
    from sgtlab.data import load_dataset

    data = load_dataset("decoy-mnist5k", "test")
    res = interpretability_metrics(trained_model, data, ["grad"], ["entropy", "localisation"], n=16)
    s = res["summary"]["grad"]
    assert 0 <= s["decoy_share_mean"] < s["digit_share_mean"] <= 1
    assert len(res["per_image"]["grad"]["digit_share"]) == 16
    assert "localisation" in interpretability_metrics(trained_model, data, ["grad"], "all", n=2, aopc_steps=2,
                                                      pgd=False, qs=[0, 1], road_fractions=[0.5],
                                                      captum_perturb=1)["metrics"]


# --- AOPC by local recomputation (aopc_local) against a forward of every perturbed image -------------

def _custom_local_net() -> nn.Module:
    """Padding, eval-mode batch-norm, a max-pool of 3 (floor mode leaves a row out) and an in-place
    ReLU after Flatten: the cases the window arithmetic and the head must get right."""
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3), nn.Flatten(),
                         nn.ReLU(inplace=True), nn.Linear(8 * 9 * 9, 10)).eval()


def _rgb_local_net() -> nn.Module:
    """Three input channels, a padded convolution and a Linear straight after Flatten (the Linear
    is then updated from the changed inputs alone)."""
    from sgtlab.models import Normalize

    return nn.Sequential(Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3)), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 10)).eval()


@pytest.mark.parametrize("name", ["sgt-cnn", "alexnet-mnist", "custom", "rgb"])
@pytest.mark.parametrize("patch,steps,order", [(2, 40, "morf"), (3, 20, "lerf"), (5, 6, "morf")])
def test_local_aopc_gives_the_numbers_of_a_forward_per_image(name, patch, steps, order):
    from sgtlab.fast.aopc_local import local_plan
    from sgtlab.models import build_model

    torch.manual_seed(0)
    nets = {"custom": _custom_local_net, "rgb": _rgb_local_net}
    model = nets[name]() if name in nets else build_model(name, 1, 10, (0.13,), (0.31,))
    if name == "custom":
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # sharper outputs than at initialisation, so a wrong window would show
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.mul_(50)
    assert local_plan(model.eval()) is not None
    x, maps = torch.rand(12, 3 if name == "rgb" else 1, 28, 28), torch.rand(12, 28, 28)
    fill = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    fast = aopc(model, x, maps, patch=patch, steps=steps, order=order, fill=fill)
    ref = aopc(model, x, maps, patch=patch, steps=steps, order=order, fill=fill, local=False)
    assert torch.equal(fast["pred"], ref["pred"])
    assert (fast["prob"] - ref["prob"]).abs().max() < 1e-5
    assert (fast["prob"][:, 1:] - fast["prob"][:, :1]).abs().max() > 1e-3  # the steps change the outputs (100x the tolerance)


def test_local_aopc_applies_only_to_models_that_start_with_local_layers():
    from sgtlab.fast.aopc_local import local_plan
    from sgtlab.models import build_model

    assert local_plan(build_model("resnet18-cifar", 3, 10, (0.5,) * 3, (0.25,) * 3).eval()) is None
    assert local_plan(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()) is None
    strided = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    assert local_plan(strided.eval()) is None
