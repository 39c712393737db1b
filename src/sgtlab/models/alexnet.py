"""An AlexNet-style stack scaled to 28x28 inputs (five convolutions, three max-pools, three
fully connected layers with dropout), as the SGT/ASGT papers use for MNIST; with `input_size`,
any size from 8 x 8 (the first Linear layer follows it)."""
from torch import nn

from sgtlab.models.base import check_size, register_model
from sgtlab.models.layers import MaxPool2d

SIZES = "any size from 8x8 (built for 28x28 unless given input_size)"


@register_model("alexnet-mnist")
def alexnet_mnist(in_channels: int = 1, num_classes: int = 10, input_size=(28, 28)) -> nn.Module:
    h, w = check_size("alexnet-mnist", input_size, lambda h, w: h >= 8 and w >= 8, SIZES)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 64, 3, padding=1), nn.ReLU(inplace=True), MaxPool2d(2),      # 14
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), MaxPool2d(2),              # 7
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 128, 3, padding=1), nn.ReLU(inplace=True), MaxPool2d(2),             # 3
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(128 * (h // 8) * (w // 8), 512), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )
    body.input_size, body.sizes = (h, w), SIZES
    return body
