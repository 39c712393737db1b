"""captum parity (issue 27): IG's `baselines`, `n_steps`, `target`; any captum attribution (class,
object, dotted name) or a callable `(model, x, target) -> maps` as a saliency method."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgtlab
from sgtlab.errors import SgtlabError

captum = pytest.importorskip("captum.attr")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 4).flatten(1))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return Net().eval(), torch.rand(10, 3, 8, 8), torch.arange(10) % 4


def test_ig_baselines_n_steps_and_target_as_captum(setup):
    model, x, y = setup
    base = torch.full_like(x, 0.5)
    want = captum.IntegratedGradients(model).attribute(x, baselines=base, target=y, n_steps=8)
    got = sgtlab.saliency_maps(model, x, target=y, method="ig", baselines=base, n_steps=8, reduce=False,
                               batch_size=4)  # per-image baselines follow the batches
    assert torch.allclose(got, want, atol=1e-6)
    one = sgtlab.saliency_maps(model, x, y, method="ig", baselines=0.5, n_steps=8)
    assert torch.allclose(one, want.abs().sum(1), atol=1e-6)
    with pytest.raises(SgtlabError, match="baselines must have"):
        sgtlab.saliency_maps(model, x, y, method="ig", baselines=torch.zeros(2, 3))
    with pytest.raises(SgtlabError, match="once"):
        sgtlab.saliency_maps(model, x, y, target=y)


def test_captum_objects_classes_names_and_callables_are_methods(setup):
    model, x, y = setup
    cam = captum.LayerGradCam(model, model.conv)
    want = captum.LayerAttribution.interpolate(cam.attribute(x, target=y), (8, 8), "bilinear")
    assert torch.allclose(sgtlab.saliency_maps(model, x, y, method=cam), want.abs().sum(1), atol=1e-6)
    deeplift = captum.DeepLift(model).attribute(x, target=y).abs().sum(1)
    assert torch.allclose(sgtlab.saliency_maps(model, x, y, method=captum.DeepLift), deeplift, atol=1e-6)
    assert torch.allclose(sgtlab.saliency_maps(model, x, y, method="captum.attr.DeepLift"), deeplift, atol=1e-6)
    mine = sgtlab.saliency_maps(model, x, y, method=lambda m, xx, t: xx.mean(1))
    assert torch.allclose(mine, x.mean(1))
    with pytest.raises(SgtlabError, match="must return maps"):
        sgtlab.saliency_maps(model, x, y, method=lambda m, xx, t: xx.mean())
    with pytest.raises(SgtlabError, match="needs more than the model"):
        sgtlab.saliency_maps(model, x, y, method=captum.LayerGradCam)


def test_saliency_metrics_take_them_with_the_sanity_check(setup):
    model, x, y = setup
    res = sgtlab.saliency_metrics(model, (x, y), methods={"gradcam": captum.LayerGradCam(model, model.conv),
                                                          "mean": lambda m, xx, t: xx.mean(1)},
                                  metrics=["entropy", "gini", "aopc", "sanity"], n=10, aopc_steps=4)
    assert set(res["summary"]) == {"gradcam", "mean"}
    assert all("entropy_mean" in v for v in res["summary"].values())
