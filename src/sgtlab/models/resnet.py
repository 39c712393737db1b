"""ResNet-18 (He et al. 2016) for any class count: the CIFAR form for 32x32 inputs (3x3 stem, no
max-pool) and the ImageNet form for larger ones (7x7 stride-2 stem, 3x3 stride-2 max-pool: the
first block sees a quarter of the input size). Both end in a global average pool, so they take
any input size; the ImageNet form wants at least 32x32 (1x1 maps in the last stage)."""
from torch import nn

from sgtlab.models.base import check_size, register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, stem: str = "cifar"):
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


@register_model("resnet18-cifar")
def resnet18_cifar(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return ResNet18(in_channels, num_classes)


@register_model("resnet18")
def resnet18_imagenet(in_channels: int = 3, num_classes: int = 1000, input_size=None) -> nn.Module:
    if input_size is not None:
        check_size("resnet18", input_size, lambda h, w: h >= 32 and w >= 32,
                   "any size from 32x32 (224x224 as on ImageNet; resnet18-cifar for 32x32 images)")
    return ResNet18(in_channels, num_classes, stem="imagenet")
