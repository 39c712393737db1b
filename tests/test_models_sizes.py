"""The models for the other studies' setups: ResNet-18 in its ImageNet form, the small vision
transformer, the small CNNs at other input sizes. Each trains a few steps with every training
method and is attacked; a size a model cannot take is a one-line error naming the sizes it takes."""
from __future__ import annotations

import pytest
import torch

from sgtlab.attacks import FGSM, PGD
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.robustness import robustness_sweep
from sgtlab.models import build_model
from sgtlab.train.methods import METHODS, MethodConfig, StepContext

ALL = ["st", "sgt", "at-fgsm", "at-pgd", "sga", "asgt", "scaat"]


@pytest.mark.parametrize("name,shape,classes", [
    ("resnet18", (3, 32, 32), 7),        # ImageNet form at its smallest size
    ("vit-tiny", (1, 28, 28), 5),
    ("sgt-cnn", (3, 20, 24), 4),         # adapted: not the 28 x 28 it was written for
    ("alexnet-mnist", (3, 16, 16), 100),
])
def test_model_trains_with_every_method_and_is_attacked(name, shape, classes):
    torch.manual_seed(0)
    model = build_model(name, shape[0], classes, [0.5] * shape[0], [0.25] * shape[0], input_size=shape[1:])
    x = torch.rand(3, *shape)
    y = torch.arange(3) % classes
    cfg = MethodConfig(train_eps=8 / 255, train_steps=1, warmup_epochs=0).validate()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    for method in ALL:
        m = METHODS.get(method)
        state = m.init_state(len(x), cfg, torch.device("cpu")) if m.init_state else {}
        model.train()
        for step in range(2 if method == "st" else 1):  # 8 steps in all, each method's loss once or twice
            ctx = StepContext(idx=torch.arange(len(x)), epoch=1, step=step, state=state, module=model)
            loss, parts = m.fn(model, x, y, cfg, ctx)
            assert torch.isfinite(loss), (name, method)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.numel() > 1)
    model.eval()
    assert model(x).shape == (3, classes)
    res = robustness_sweep(model, (x, y), {"fgsm": FGSM(), "pgd": PGD(steps=3)}, [0.0, 0.03], progress=False)
    assert set(res.robust_accuracy) == {"fgsm", "pgd"} and res.n == 3
    assert res.robust_accuracy["pgd"][0.03] <= res.robust_accuracy["pgd"][0.0]


def test_resnet18_imagenet_form():
    model = build_model("resnet18", 3, 1000)
    stem = model.body.stem
    assert stem[0].kernel_size == (7, 7) and stem[0].stride == (2, 2)
    assert isinstance(stem[3], torch.nn.MaxPool2d) and stem[3].stride == 2
    n = sum(p.numel() for p in model.parameters())
    assert 11.6e6 < n < 11.8e6  # torchvision's resnet18: 11,689,512 parameters
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 1000)  # any size from 32


def test_vit_patch_follows_the_size():
    for size, patch, tokens in ((28, 4, 49), (32, 4, 64), (64, 8, 64), (96, 8, 144), (224, 16, 196)):
        body = build_model("vit-tiny", 3, 10, input_size=(size, size)).body
        assert body.patch.kernel_size == (patch, patch) and body.pos.shape[1] == tokens + 1
        assert isinstance(body.encoder.layers[0], torch.nn.TransformerEncoderLayer)
    assert build_model("vit-tiny", 3, 10, input_size=64).eval()(torch.rand(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize("name,size,message", [
    ("vit-tiny", (30, 30), "vit-tiny cannot take 30x30 images; it takes square images of 16 to 32 px"),
    ("vit-tiny", (32, 48), "vit-tiny cannot take 32x48"),
    ("sgt-cnn", (4, 4), "sgt-cnn cannot take 4x4 images; it takes any size from 6x6"),
    ("alexnet-mnist", (7, 9), "alexnet-mnist cannot take 7x9 images; it takes any size from 8x8"),
    ("resnet18", (16, 16), "resnet18 cannot take 16x16 images; it takes any size from 32x32"),
])
def test_sizes_a_model_cannot_take_are_refused(name, size, message):
    with pytest.raises(SgtlabError, match=message) as e:
        build_model(name, 3, 10, input_size=size)
    assert "\n" not in str(e.value)


def test_wrong_input_size_at_run_time_is_one_line():
    """The issue's case: sgt-cnn (built for 28 x 28) fed 32 x 32 colour images."""
    model = build_model("sgt-cnn", 3, 10)
    with pytest.raises(SgtlabError) as e:
        model(torch.rand(2, 3, 32, 32))
    msg = str(e.value)
    assert "sgt-cnn was built for 28x28 images, got 32x32" in msg and "input_size=(32, 32)" in msg
    assert "\n" not in msg and "mat1" not in msg
    assert build_model("sgt-cnn", 3, 10, input_size=(32, 32))(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    vit = build_model("vit-tiny", 3, 10, input_size=32)
    with pytest.raises(SgtlabError, match="vit-tiny was built for 32x32 images, got 64x64"):
        vit(torch.rand(1, 3, 64, 64))
