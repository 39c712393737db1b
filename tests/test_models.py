import pytest
import torch

from sgtlab.errors import SgtlabError
from sgtlab.models import MODELS, build_model


@pytest.mark.parametrize("name,shape", [("sgt-cnn", (1, 28, 28)), ("alexnet-mnist", (1, 28, 28)),
                                        ("resnet18-cifar", (3, 32, 32))])
def test_models_map_images_to_logits(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape[0], 10, [0.5] * shape[0], [0.25] * shape[0]).eval()
    x = torch.rand(4, *shape)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    # normalisation is the first layer: the body sees (x - mean) / std
    assert torch.allclose(model.body(model.norm(x)), out)
    assert torch.allclose(model.norm(x), (x - 0.5) / 0.25)


def test_resnet18_has_the_cifar_stem_and_resnet18_size():
    model = build_model("resnet18-cifar", 3, 10)
    first_conv = model.body.stem[0]
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    n = sum(p.numel() for p in model.parameters())
    assert 11.0e6 < n < 11.3e6  # ResNet-18 for CIFAR: ~11.17 M parameters


def test_unknown_model_lists_choices():
    with pytest.raises(SgtlabError, match="sgt-cnn"):
        build_model("vgg")
    assert {"sgt-cnn", "alexnet-mnist", "resnet18-cifar"} <= set(MODELS.names())


@pytest.mark.parametrize("shape,k", [((3, 5, 24, 24), 2), ((2, 4, 7, 9), 2), ((2, 3, 10, 11), 3), ((1, 2, 6, 6), (2, 3))])
def test_max_pool_forward_without_gradient_equals_pytorch(shape, k):
    """sgtlab's MaxPool2d takes its own CPU path when no gradient is taken (odd sizes: floor mode
    drops the last rows/columns) and PyTorch's with one; both give PyTorch's values, NaN included."""
    from sgtlab.models.layers import MaxPool2d

    torch.manual_seed(0)
    x = torch.randn(shape).relu()  # ties at 0
    x[0, 0, 0, 0] = float("nan")
    ours, ref = MaxPool2d(k), torch.nn.MaxPool2d(k)
    with torch.no_grad():
        assert torch.equal(ours(x).isnan(), ref(x).isnan())
        assert torch.equal(ours(x).nan_to_num(), ref(x).nan_to_num())
    xg = x.nan_to_num().requires_grad_(True)
    g_ours, = torch.autograd.grad(ours(xg).sum(), xg)
    g_ref, = torch.autograd.grad(ref(xg).sum(), xg)
    assert torch.equal(g_ours, g_ref)  # with a gradient: PyTorch's layer, one maximum per window


@pytest.mark.parametrize("args", [dict(kernel_size=2), dict(kernel_size=3, stride=2), dict(kernel_size=2, padding=1),
                                  dict(kernel_size=2, ceil_mode=True), dict(kernel_size=2, dilation=2),
                                  dict(kernel_size=(2, 3))])
def test_max_pool_with_gradient_takes_the_channels_last_kernel_and_equals_pytorch(args):
    """With a gradient, on a contiguous CPU input, the layer runs PyTorch's channels-last kernel:
    the same values, the same maximum per window (ties at 0 and NaN), the same input gradient and
    the same double backward (the gradient of the input gradient w.r.t. the output gradient)."""
    from sgtlab.models.layers import MaxPool2d

    torch.manual_seed(0)
    x = torch.randint(0, 3, (3, 5, 11, 13)).float()
    x[0, 0, 0, 0] = x[1, 2, 3, 4] = float("nan")
    ours, ref = MaxPool2d(**args), torch.nn.MaxPool2d(**args)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = ours(xa), ref(xb)
    assert "ChannelsLast" in type(a.grad_fn).__name__  # the fast path ran
    assert a.is_contiguous() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    g = torch.randn(a.shape, requires_grad=True)
    ga, = torch.autograd.grad(a, xa, g, create_graph=True)
    gb, = torch.autograd.grad(b, xb, g, create_graph=True)
    assert torch.equal(ga, gb)
    w = torch.randn(ga.shape)
    assert torch.equal(torch.autograd.grad((ga * w).sum(), g)[0], torch.autograd.grad((gb * w).sum(), g)[0])


def test_max_pool_with_gradient_keeps_pytorchs_path_where_the_copy_buys_nothing():
    from sgtlab.models.layers import MaxPool2d

    layer = MaxPool2d(2)
    for x in (torch.rand(2, 1, 8, 8), torch.rand(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)):
        out = layer(x.requires_grad_(True))
        assert "ChannelsLast" not in type(out.grad_fn).__name__


def test_max_pool_fast_path_only_where_it_is_exact():
    from sgtlab.models.layers import MaxPool2d

    x = torch.rand(2, 3, 9, 9)
    for layer in (MaxPool2d(3, stride=2), MaxPool2d(2, padding=1), MaxPool2d(2, ceil_mode=True),
                  MaxPool2d(2, dilation=2)):
        with torch.no_grad():
            ref = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                     ceil_mode=layer.ceil_mode)(x)
            assert torch.equal(layer(x), ref)
