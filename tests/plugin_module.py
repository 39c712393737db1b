"""Source of the test plug-in: a model (with a batch-norm), a data set and a training method defined
outside sgtlab. `plugin_source(prefix, register)` gives a module that registers them under
`PREFIX-tiny`, `PREFIX-bars`, `PREFIX-smooth` (the --import way) or only defines them (the entry-point way)."""

BODY = '''
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.data.base import DatasetInfo, TensorData


class TinyBN(nn.Module):
    def __init__(self, in_channels=1, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def bars(split="train", data_dir=None, download=True):
    """Three classes of 8 x 8 images: a bright row at a class-dependent height, on noise."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    n = 48 if split == "train" else 24
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.4
    for k in range(3):
        x[y == k, :, 2 * k + 1, :] = 0.9
    return TensorData(x, y, "PREFIX-bars")


def smooth_ce(model, x, y, cfg, ctx):
    """Cross-entropy with label smoothing (a plug-in training method)."""
    loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
    return loss, {"ce": loss.detach()}


BARS = DatasetInfo("PREFIX-bars", bars, (1, 8, 8), 3, (0.5,), (0.25,), "PREFIX-tiny", "test bars")
'''

REGISTER = '''
from sgtlab.data.base import register_dataset
from sgtlab.models import register_model
from sgtlab.train.methods import register_method

register_model("PREFIX-tiny")(TinyBN)
register_dataset(BARS)
register_method("PREFIX-smooth")(smooth_ce)
'''


def plugin_source(prefix: str, register: bool) -> str:
    return (BODY + (REGISTER if register else "")).replace("PREFIX", prefix)
