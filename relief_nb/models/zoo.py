"""The paper's architectures, built by name from a registry (in the spirit of timm).

Every model is a chain of standard layers (``nn.Sequential``) and :class:`ResidualBlock`. The pruning pass traces
them (and user-defined networks) with ``torch.fx`` (:mod:`relief_nb.graph`), so one implementation serves all.
Weights are kaiming-normal; biases and BatchNorm keep PyTorch's defaults (docs/method.md, "Architectures").
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODELS",
    "ModelSpec",
    "OptionAShortcut",
    "ResidualBlock",
    "create_model",
    "input_shape_of",
    "list_models",
]


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut (He et al. 2016, option A): subsample by ``stride`` and zero-pad channels.

    Input channel ``c`` lands on output channel ``c + pad`` with ``pad = (out_channels - in_channels) // 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if (out_channels - in_channels) % 2:
            raise ValueError(f"option-A shortcut needs an even channel increase, got {in_channels}->{out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pad = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad, self.pad))
        return x


class ResidualBlock(nn.Module):
    """CIFAR BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + m * shortcut(x))``.

    ``shortcut_mask`` (one entry per output channel) is NNrelief's shortcut mask: a channel whose residual
    branch dominates can drop the shortcut, one whose shortcut dominates can drop the conv2 filter.
    """

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = OptionAShortcut(in_channels, planes, stride)
        self.relu2 = nn.ReLU(inplace=True)
        self.register_buffer("shortcut_mask", torch.ones(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        short = self.shortcut(x) * self.shortcut_mask.view(1, -1, 1, 1)
        return self.relu2(out + short)


def _init_weights(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return model


def lenet300_100(num_classes: int = 10, in_features: int = 784) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(in_features, 300)), ("relu1", nn.ReLU(inplace=True)),
        ("fc2", nn.Linear(300, 100)), ("relu2", nn.ReLU(inplace=True)),
        ("fc3", nn.Linear(100, num_classes)),
    ]))


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Sequential:
    """Caffe LeNet-5: two 5x5 convs (20, 50 filters), two max-pools, Linear 800-500-classes (on 28x28)."""
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"LeNet-5 needs inputs of at least 12x12 pixels, got {input_size}x{input_size}")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 20, 5)), ("relu1", nn.ReLU(inplace=True)), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(20, 50, 5)), ("relu2", nn.ReLU(inplace=True)), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(50 * side * side, 500)), ("relu3", nn.ReLU(inplace=True)),
        ("fc2", nn.Linear(500, num_classes)),
    ]))


VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
VGG_CONFIGS["vgg-like"] = VGG_CONFIGS["vgg16"]


class VGG(nn.Module):
    """CIFAR VGG: Conv3x3(bias)-BN-ReLU blocks, max-pools, no average pool, then the classifier."""

    def __init__(self, config: list[int | str], classifier: nn.Sequential, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def vgg(name: str, num_classes: int = 10, input_size: int = 32, in_channels: int = 3) -> VGG:
    """``vgg11/13/16/19`` (three-layer classifier) or ``vgg-like`` (one hidden Linear), for any input size."""
    spatial = input_size // 32  # five max-pools
    if spatial < 1:
        raise ValueError(f"{name} has five 2x2 max-pools and needs inputs of at least 32x32, got {input_size}")
    flat = 512 * spatial * spatial
    if name == "vgg-like":
        classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(flat, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )
    else:
        classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(flat, 512), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
    return VGG(VGG_CONFIGS[name], classifier, in_channels)


class ResNet(nn.Module):
    """CIFAR ResNet (option-A shortcuts): stem conv-BN-ReLU, stages of ResidualBlocks, avgpool, Linear."""

    def __init__(self, blocks_per_stage: list[int], widths: list[int], num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, (n, width) in enumerate(zip(blocks_per_stage, widths)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResidualBlock(channels, width, stride))
                channels = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNet([n, n, n], [16, 32, 64], num_classes, in_channels)


def resnet18_64(num_classes: int = 200, in_channels: int = 3) -> ResNet:
    """ResNet-18 layout for 64x64 inputs (Tiny-ImageNet): 3x3 stem, no max-pool, stages 64/128/256/512 with
    two blocks each. Shortcuts are option A (parameter-free) as in the CIFAR ResNets, so that one residual
    pruning rule covers every ResNet here; this is a documented deviation from torchvision's 1x1 projections.
    """
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build the model and which input it expects (channels, height, width)."""

    build: Callable[[int, tuple[int, ...]], nn.Module]  # (num_classes, input shape) -> model
    input_shape: tuple[int, int, int]  # the shape it was designed for (others work where the layers allow)
    family: str  # "lenet" (rewound before retraining), "vgg" or "resnet" (fine-tuned)
    description: str


MODELS: dict[str, ModelSpec] = {
    "lenet300-100": ModelSpec(lambda c, s: lenet300_100(c, math.prod(s)), (1, 28, 28), "lenet",
                              "LeNet-300-100 (784-300-100-C)"),
    "lenet5": ModelSpec(lambda c, s: lenet5(c, s[0], s[-1]), (1, 28, 28), "lenet",
                        "Caffe LeNet-5 (conv 20, conv 50, 800-500-C)"),
    **{
        name: ModelSpec(lambda c, s, name=name: vgg(name, c, s[-1], s[0]), (3, 32, 32), "vgg",
                        f"{name} for 32x32 inputs")
        for name in ("vgg-like", "vgg11", "vgg13", "vgg16", "vgg19")
    },
    **{
        f"resnet{d}": ModelSpec(
            lambda c, s, d=d: cifar_resnet(d, c, s[0]), (3, 32, 32), "resnet", f"CIFAR ResNet-{d}, option-A shortcuts"
        )
        for d in (20, 32, 44, 56, 110)
    },
    "vgg19-64": ModelSpec(lambda c, s: vgg("vgg19", c, s[-1], s[0]), (3, 64, 64), "vgg",
                          "VGG-19 for 64x64 (Tiny-ImageNet)"),
    "resnet18-64": ModelSpec(lambda c, s: resnet18_64(c, s[0]), (3, 64, 64), "resnet",
                             "ResNet-18 for 64x64, option-A shortcuts"),
}


def list_models() -> list[str]:
    return sorted(MODELS)


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return MODELS[name]


def create_model(name: str, num_classes: int = 10, seed: int | None = None,
                 input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Build a registered model with fresh kaiming-normal weights (seeded if ``seed`` is given).

    ``input_shape`` (channels, height, width) adapts the first layer and the classifier's input to other data
    (for example VGG or ResNet on 1-channel images); default: the shape the model was designed for."""
    spec = _spec(name)
    shape = tuple(input_shape or spec.input_shape)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _init_weights(spec.build(num_classes, shape))
    return _init_weights(spec.build(num_classes, shape))


def input_shape_of(name: str) -> tuple[int, int, int]:
    return _spec(name).input_shape


def family_of(name: str) -> str:
    return _spec(name).family
