"""An AlexNet-style stack scaled to 28x28 inputs (five convolutions, three max-pools, three
fully connected layers with dropout), as the SGT/ASGT papers use for MNIST."""
from torch import nn

from sgtlab.models.base import register_model
from sgtlab.models.layers import MaxPool2d


@register_model("alexnet-mnist")
def alexnet_mnist(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, padding=1), nn.ReLU(inplace=True), MaxPool2d(2),      # 14
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), MaxPool2d(2),              # 7
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 128, 3, padding=1), nn.ReLU(inplace=True), MaxPool2d(2),             # 3
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(128 * 3 * 3, 512), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )
