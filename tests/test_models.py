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
