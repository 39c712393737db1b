"""The MNIST network of the reference SGT code: conv32-conv64-maxpool-dropout-fc128-dropout-fc10,
for 28 x 28 images or, with `input_size`, any size from 6 x 6 (the first Linear layer follows it)."""
from torch import nn

from sgtlab.models.base import check_size, register_model
from sgtlab.models.layers import MaxPool2d

SIZES = "any size from 6x6 (built for 28x28 unless given input_size)"


@register_model("sgt-cnn")
def sgt_cnn(in_channels: int = 1, num_classes: int = 10, input_size=(28, 28)) -> nn.Module:
    h, w = check_size("sgt-cnn", input_size, lambda h, w: h >= 6 and w >= 6, SIZES)
    body = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )
    body.input_size, body.sizes = (h, w), SIZES
    return body
