"""The MNIST network of the reference SGT code: conv32-conv64-maxpool-dropout-fc128-dropout-fc10."""
from torch import nn

from sgtlab.models.base import register_model
from sgtlab.models.layers import MaxPool2d


@register_model("sgt-cnn")
def sgt_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )
