"""The saliency evidence of issue 13: one class throughout, ABPC, ROAD (against quantus 0.6.0),
sanity checks (cascading randomisation), captum's metrics, and fast paths that refuse hooked
models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.evaluate.interpretability import aopc, saliency_quality
from sgtlab.evaluate.road import noisy_linear_imputation, removal_masks, road
from sgtlab.evaluate.saliency_metrics import abpc, clearly_positive, ratio_where_defined, spearman_abs, ssim
from sgtlab.evaluate.sanity_checks import cascading_randomisation
from test_interpretability import H, N, W, KnownPixels, good_map, known_pixel_data


RELEVANT_MASK = np.zeros((H, W), dtype=bool)
RELEVANT_MASK[2:8, 4:10] = True


# -- one class throughout -----------------------------------------------------------------------------

def test_map_and_score_use_the_same_class_on_a_misclassified_image():
    model = KnownPixels()
    x, y = known_pixel_data(6)
    x[0, 0] = 0.2  # relevant pixels dark: the model says class 0, the label is 1
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    assert p[0].argmax() == 0 and y[0] == 1
    res = saliency_quality(model, x, y, ["grad"], ["aopc"], aopc_steps=3)
    assert res["per_image"]["grad"]["class"] == y.tolist() and res["options"]["target"] == "true"
    # the map is the gradient of class 1's logit: on the relevant pixels only, positive
    g = torch.autograd.functional.jacobian(lambda t: model(t)[0, 1], x[:1])[0, 0]
    assert bool((g[~torch.tensor(RELEVANT_MASK)] == 0).all()) and bool((g[torch.tensor(RELEVANT_MASK)] > 0).all())
    # AOPC of that image scores class 1 (the label), not class 0 (the prediction)
    fill = torch.zeros_like(x)
    maps = good_map(6)
    out = aopc(model, x, maps, classes=y, steps=3, fill=fill)
    assert out["prob"][0, 0].item() == pytest.approx(p[0, 1].item()) and out["cls"][0] == 1
    by_pred = aopc(model, x, maps, steps=3, fill=fill)
    assert by_pred["prob"][0, 0].item() == pytest.approx(p[0, 0].item())
    # target="pred" explains and scores the prediction
    res_pred = saliency_quality(model, x, y, ["grad"], ["aopc"], aopc_steps=3, target="pred")
    assert res_pred["per_image"]["grad"]["class"][0] == 0
    with pytest.raises(SgtlabError, match="'true'.*'pred'"):
        saliency_quality(model, x, y, ["grad"], ["aopc"], target="label")


def test_abpc_of_a_map_on_the_relevant_pixels_beats_a_random_map():
    model = KnownPixels()
    x, y = known_pixel_data()
    fill = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    rnd = torch.rand(N, H, W, generator=torch.Generator().manual_seed(4))
    scores = {}
    for name, maps in (("good", good_map()), ("random", rnd)):
        morf, lerf = (aopc(model, x, maps, classes=y, order=o, steps=12, fill=fill)["aopc"] for o in ("morf", "lerf"))
        scores[name] = abpc(morf, lerf)
    diff = (scores["good"] - scores["random"]).numpy()
    ok, lo, _ = clearly_positive(diff)
    assert ok and lo > 0.05, (lo, diff)


def test_aopc_ratio_only_where_lerf_is_clearly_positive():
    rng = np.random.default_rng(0)
    assert math.isnan(ratio_where_defined(rng.normal(0.3, 0.1, 50), rng.normal(0.0, 0.1, 50)))
    r = ratio_where_defined(np.full(50, 0.4) + rng.normal(0, 0.01, 50), np.full(50, 0.2) + rng.normal(0, 0.01, 50))
    assert r == pytest.approx(2.0, rel=0.05)


# -- ROAD against quantus 0.6.0 ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus")


def _small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10)).eval()


def test_road_imputation_and_accuracy_match_quantus(quantus, mnist5k_test):
    from quantus.functions.perturb_func import noisy_linear_imputation as q_impute

    x, y = mnist5k_test.x[:24], mnist5k_test.y[:24]
    model = _small_cnn()
    with torch.no_grad():
        model[-1].weight.mul_(30)  # confident, varied predictions
        y = model(x).argmax(1)  # score the model's own classes, so removal changes the accuracy
    maps = torch.rand(24, 28, 28, generator=torch.Generator().manual_seed(0))  # no ties: quantus's sort is unstable
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
    # the imputation itself: the same values (quantus solves each image with spsolve in float64 and
    # stores float32; ours stops at a residual of 1e-5 of the pixel range)
    masks = removal_masks(maps, fractions, "morf")
    ours = noisy_linear_imputation(x, masks[:, 2], noise=0.0)
    for i in range(0, 24, 6):
        ref = q_impute(x[i].numpy(), np.flatnonzero(masks[i, 2].numpy()), noise=0.0)
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-4)
    # the metric: accuracy per removal fraction, MoRF (quantus's only order)
    q = quantus.ROAD(percentages=[int(f * 100) for f in fractions], noise=0.0, disable_warnings=True,
                     display_progressbar=False)
    q_acc = q(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    res = road(model, x, maps, y, order="morf", fractions=fractions, noise=0.0)
    # a pixel difference of ~1e-5 can flip only an image whose two best classes are that close: at
    # most one image in 24 per fraction
    assert np.abs(np.array(res["accuracy"]) - np.array([q_acc[int(f * 100)] for f in fractions])).max() <= 1 / 24 + 1e-9
    assert res["accuracy"][0] > res["accuracy"][-1]  # removing 90 % changes predictions: the check can fail


def test_imputation_stops_each_image_near_the_exact_solution():
    # images leave the conjugate-gradient stack as they converge: each must still be within 2e-5 of
    # the exact (float64, tol 1e-12) solution, colour channels included, and an image with nothing
    # removed comes back unchanged
    g = torch.Generator().manual_seed(0)
    x, maps = torch.rand(12, 3, 32, 32, generator=g), torch.rand(12, 32, 32, generator=g)
    for f in (0.2, 0.6, 0.9):
        removed = removal_masks(maps, [f], "morf")[:, 0]
        removed[0] = False
        exact = noisy_linear_imputation(x, removed, 0.0, tol=1e-12, dtype=torch.float64)
        out = noisy_linear_imputation(x, removed, 0.0)
        assert (out - exact).abs().max() < 2e-5
        assert torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1])


def test_road_lerf_keeps_the_class_of_a_map_on_the_relevant_pixels():
    model = KnownPixels()
    x, y = known_pixel_data()
    good, rnd = good_map(), torch.rand(N, H, W, generator=torch.Generator().manual_seed(2))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    lerf_good = road(model, x, good, y, order="lerf", fractions=[0.2, 0.5], generator=gen())
    morf_good = road(model, x, good, y, order="morf", fractions=[0.2, 0.5], generator=gen())
    morf_rnd = road(model, x, rnd, y, order="morf", fractions=[0.2, 0.5], generator=gen())
    assert lerf_good["accuracy"] == [1.0, 1.0]  # only irrelevant pixels removed
    assert morf_good["drop"].mean() > morf_rnd["drop"].mean() + 0.1
    with pytest.raises(SgtlabError, match="fractions"):
        road(model, x, good, y, fractions=[1.0])


# -- sanity checks -------------------------------------------------------------------------------------

def test_similarity_measures():
    a = torch.rand(3, 16, 16)
    torch.testing.assert_close(spearman_abs(a, 2 * a + 1), torch.ones(3), rtol=0, atol=1e-6)
    torch.testing.assert_close(ssim(a, a), torch.ones(3), rtol=0, atol=1e-6)
    skimage = pytest.importorskip("skimage.metrics")
    b = torch.rand(3, 16, 16)
    ref = [skimage.structural_similarity((a[i] / a[i].max()).double().numpy(), (b[i] / b[i].max()).double().numpy(),
                                         data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(ssim(a, b).numpy(), ref, atol=1e-5)
    scipy_stats = pytest.importorskip("scipy.stats")
    ties = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]]).expand(1, 2, 2).repeat(1, 4, 4)
    other = torch.rand(1, 8, 8)
    assert spearman_abs(ties, other).item() == pytest.approx(
        scipy_stats.spearmanr(ties.flatten(), other.flatten()).statistic, abs=1e-6)


def test_sanity_check_flags_the_input_as_map_and_passes_gradients(trained_model, mnist5k_test):
    from sgtlab.explain import saliency_maps

    x, y = mnist5k_test.x[:16], mnist5k_test.y[:16]
    explainers = {"input": lambda m, xx, cc: xx[:, 0].clone(),  # ignores the model: must fail
                  "grad": lambda m, xx, cc: saliency_maps(m, xx, cc, "grad")}
    before = [p.clone() for p in trained_model.parameters()]
    res = cascading_randomisation(trained_model, x, y, explainers, seed=0)
    assert res["layers"] == ["body.10", "body.7", "body.2", "body.0"]  # output layer first
    assert res["methods"]["input"]["verdict"] == "fail"
    assert res["methods"]["input"]["spearman_mean"][-1] == pytest.approx(1.0)
    assert res["methods"]["grad"]["verdict"] == "pass"
    assert res["methods"]["grad"]["spearman_mean"][-1] < 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, trained_model.parameters()))  # the caller's model untouched


# -- captum's metrics ----------------------------------------------------------------------------------

def test_infidelity_and_sensitivity_run_through_captum():
    model = KnownPixels()
    x, y = known_pixel_data(6)
    res = saliency_quality(model, x, y, ["grad", "input-x-grad"], ["infidelity", "sensitivity"], captum_n=4,
                           captum_perturb=3)
    grad, ixg = res["per_image"]["grad"], res["per_image"]["input-x-grad"]
    for per in (grad, ixg):  # the first captum_n images are scored, the rest are NaN
        assert all(math.isnan(v) for v in per["infidelity"][4:] + per["sensitivity"][4:])
    # the logits are linear in the input: the gradient explains every perturbation exactly
    # (infidelity 0 up to rounding) and does not move when the input does (sensitivity 0);
    # input x gradient does neither
    assert max(abs(v) for v in grad["infidelity"][:4]) < 1e-9 and max(grad["sensitivity"][:4]) < 1e-6
    assert min(ixg["infidelity"][:4]) > 1e-9 and min(ixg["sensitivity"][:4]) > 1e-3


# -- fast paths refuse models with hooks -----------------------------------------------------------------

def _hooked_sgt_cnn():
    from sgtlab.models import build_model

    torch.manual_seed(0)
    model = build_model("sgt-cnn", 1, 10, (0.13,), (0.31,)).eval()
    return model


@pytest.mark.parametrize("where", ["root", "leaf", "global"])
def test_fast_paths_give_the_numbers_of_model_x_with_a_forward_pre_hook(where):
    from torch.nn.modules.module import register_module_forward_pre_hook

    from sgtlab.fast.aopc_local import local_plan
    from sgtlab.saliency import saliency, saliency_and_clean_logits

    model = _hooked_sgt_cnn()
    assert local_plan(model) is not None  # eligible without a hook
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    maps, fill = torch.rand(6, 28, 28), torch.rand(6, 1, 28, 28)

    def invert(m, args):  # a pre-hook that changes the function: the input flipped
        return (1 - args[0],)

    if where == "global":
        handle = register_module_forward_pre_hook(lambda m, args: args[0] * 0.5 if m is model else None)
    else:
        target = model if where == "root" else model.body[0] if hasattr(model, "body") else list(model.modules())[1]
        handle = target.register_forward_pre_hook(invert)
    try:
        assert local_plan(model) is None
        fast = aopc(model, x, maps, steps=8, fill=fill, classes=y)
        ref = aopc(model, x, maps, steps=8, fill=fill, classes=y, local=False)
        with torch.no_grad():
            direct = F.softmax(model(x), 1).gather(1, y[:, None])[:, 0]
        torch.testing.assert_close(fast["prob"], ref["prob"])
        torch.testing.assert_close(fast["prob"][:, 0], direct)
        # the shared-prefix saliency pass: the same maps and logits as the plain saliency and model(x)
        model.train()
        torch.manual_seed(1)
        s, logits = saliency_and_clean_logits(model, x, y)
        assert logits is None  # refused: the caller runs model(x) itself
        torch.testing.assert_close(s, saliency(model, x, y))
        # the no-grad max-pool: same values as PyTorch's
        pool = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)][0]
        h = torch.rand(2, 3, 8, 8)
        torch.testing.assert_close(pool(h), F.max_pool2d(h, pool.kernel_size))
    finally:
        handle.remove()
    assert local_plan(model.eval()) is not None  # eligible again once the hook is gone
    # and the hook mattered: without it the numbers differ
    with torch.no_grad():
        assert not torch.allclose(F.softmax(model(x), 1).gather(1, y[:, None])[:, 0], direct)
