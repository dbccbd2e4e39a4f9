"""Plain-torch models for the graph tests, written in the style of torchvision (which does not import here)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatNet(nn.Module):
    """The issue's example: stem 3->8, two parallel convs 8->8 on the stem's output, cat, pool, Linear 16->10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        return self.fc(torch.flatten(self.pool(y), 1))


class ForwardResidual(nn.Module):
    """A residual addition written in forward: ``out = conv2(relu(conv1 x)) + x``, with a shared ``self.relu``."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        out = self.conv2(self.relu(self.conv1(x))) + x
        out = self.relu(out)
        return self.fc(out.mean((2, 3)))


class GeluMLP(nn.Module):
    """MLP with GELU, SiLU and Tanh and ``torch.flatten`` in forward."""

    def __init__(self, in_features: int = 784, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(x))
        x = nn.functional.silu(self.fc2(x))
        x = torch.tanh(self.fc3(x))
        return self.out(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet layout (CIFAR-size stem: 3x3 conv, no max-pool), ``width`` channels in stage 1."""

    def __init__(self, block: type, layers: list[int], width: int = 8, classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(width: int = 8, classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], width, classes, in_channels)


def resnet50(width: int = 4, classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], width, classes, in_channels)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 layout, scaled down (``width`` multiplies the channel counts / 32)."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1)]

    def __init__(self, width: float = 0.25, classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()

        def c(n: int) -> int:
            return max(4, int(n * width))
        inp = c(32)
        features: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, inp, 3, 1, 1, bias=False),
                                                   nn.BatchNorm2d(inp), nn.ReLU6(inplace=True))]
        for t, ch, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(inp, c(ch), s if i == 0 else 1, t))
                inp = c(ch)
        last = c(160)
        features.append(nn.Sequential(nn.Conv2d(inp, last, 1, bias=False), nn.BatchNorm2d(last),
                                      nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small ViT: patch embedding conv, class token, learned positions, pre-norm blocks, class-token head."""

    def __init__(self, image: int = 28, patch: int = 7, dim: int = 32, depth: int = 2, heads: int = 4,
                 classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_attention_paths(model: ViT) -> list[str]:
    return [f"blocks.{i}.attn" for i in range(len(model.blocks))]


# name -> (factory, input shape, paths to leave dense): the test zoo as the device guard and benchmarks/gpu_check.py
# build it (ViT's attention left dense, as the graph tests do)
ZOO = {
    "concat": (ConcatNet, (3, 16, 16), lambda m: ()),
    "forward_residual": (ForwardResidual, (3, 16, 16), lambda m: ()),
    "gelu_mlp": (GeluMLP, (1, 28, 28), lambda m: ()),
    "resnet18": (resnet18, (3, 32, 32), lambda m: ()),
    "resnet50": (resnet50, (3, 32, 32), lambda m: ()),
    "mobilenet_v2": (MobileNetV2, (3, 32, 32), lambda m: ()),
    "vit": (ViT, (1, 28, 28), vit_attention_paths),
}


# ---------------------------------------------------------------------------------------------------------------
# Every layer family (issue 29): plain-torch networks written here from the architectures' usual layouts.

class KeywordSpotting1d(nn.Module):
    """A DS-CNN-style keyword spotter on MFCC frames (N, 20, 49): Conv1d with 'same' padding, BatchNorm1d, a
    depthwise-separable pair, a reflect-padded dilated conv, global pooling, 12 keywords."""

    def __init__(self, features: int = 20, width: int = 24, classes: int = 12) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(features, width, 5, padding="same", bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.dw = nn.Conv1d(width, width, 3, stride=2, padding=1, groups=width, bias=False)
        self.bn2 = nn.BatchNorm1d(width)
        self.pw = nn.Conv1d(width, 2 * width, 1)
        self.dilated = nn.Conv1d(2 * width, 2 * width, 3, padding=2, dilation=2, padding_mode="reflect")
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.pw(torch.relu(self.bn2(self.dw(x)))))
        x = torch.relu(self.dilated(x))
        return self.fc(self.pool(x).flatten(1))


class Volume3d(nn.Module):
    """A small 3-D CNN for volumes (N, 1, 8, 16, 16): Conv3d, BatchNorm3d, MaxPool3d, global pooling."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1, bias=False), nn.BatchNorm3d(width), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv3d(2 * width, 2 * width, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(), nn.AdaptiveAvgPool3d(1))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class UNet(nn.Module):
    """A two-level U-Net (Ronneberger et al.): encoder, a transposed-convolution decoder with BatchNorm, the
    encoder's map concatenated as the skip, a per-pixel head (N, classes, H, W)."""

    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2, bias=False)
        self.up_bn = nn.BatchNorm2d(width)
        self.dec = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        up = torch.relu(self.up_bn(self.up(self.enc2(skip))))
        return self.head(self.dec(torch.cat([up, skip], dim=1)))


class Denoiser1d(nn.Module):
    """A 1-D convolutional autoencoder: strided Conv1d down, ConvTranspose1d (with output padding) back up."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.down = nn.Conv1d(2, width, 4, stride=2, padding=1)
        self.mid = nn.Conv1d(width, width, 3, padding=1)
        self.up = nn.ConvTranspose1d(width, width, 3, stride=2, padding=1, output_padding=1)
        self.out = nn.Conv1d(width, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.silu(self.up(torch.relu(self.mid(torch.relu(self.down(x)))))))


class GroupNormResNet(nn.Module):
    """A residual network with GroupNorm (Wu & He) in place of BatchNorm (groups of 2 channels): stem, two basic
    blocks, a head."""

    def __init__(self, width: int = 16, groups: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.GroupNorm(groups, width),
                                  nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"conv1": nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
                           "gn1": nn.GroupNorm(2 * groups, 2 * width),
                           "conv2": nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
                           "gn2": nn.GroupNorm(groups, width)}) for _ in range(2))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(b["gn2"](b["conv2"](torch.relu(b["gn1"](b["conv1"](x))))) + x)
        return self.fc(x.mean((2, 3)))


class InstanceNormNet(nn.Module):
    """Style-transfer-like encoder: InstanceNorm2d with and without affine parameters and running statistics."""

    def __init__(self, width: int = 12, classes: int = 5) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1)
        self.n1 = nn.InstanceNorm2d(width, affine=True)
        self.c2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.n2 = nn.InstanceNorm2d(2 * width, track_running_stats=True)
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.n3 = nn.InstanceNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.n1(self.c1(x)))
        x = torch.relu(self.n2(self.c2(x)))
        x = torch.relu(self.n3(self.c3(x)))
        return self.fc(x.amax((2, 3)))


class ActivationsNet(nn.Module):
    """Per-channel PReLU after a conv, Mish, SiLU, a single-slope PReLU in the classifier, zero padding."""

    def __init__(self, width: int = 12, classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3)
        self.pad = nn.ZeroPad2d(1)
        self.a1 = nn.PReLU(width)
        self.c2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.a2 = nn.Mish()
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width, 32)
        self.a4 = nn.PReLU()
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a1(self.pad(self.c1(x)))
        x = nn.functional.silu(self.c3(self.a2(self.c2(x))))
        return self.fc2(self.a4(self.fc1(x.mean((2, 3)))))


class TextCNN(nn.Module):
    """A text classifier fed token ids (N, T) (Kim 2014): an embedding table, Conv1d over the token axis,
    max over time, a Linear head."""

    def __init__(self, vocab: int = 200, dim: int = 24, width: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, width, 3, padding=1)
        self.fc = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids).transpose(1, 2)  # (N, dim, T)
        return self.fc(torch.relu(self.conv(x)).amax(dim=2))


class BagOfEmbeddings(nn.Module):
    """fastText-style: token ids -> embedding -> mean over tokens -> MLP."""

    def __init__(self, vocab: int = 200, dim: int = 32, hidden: int = 48, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.embed(ids).mean(1))))


class RecurrentTagger(nn.Module):
    """Token ids -> embedding -> LSTM (kept whole, and said so) -> Linear per token."""

    def __init__(self, vocab: int = 100, dim: int = 16, hidden: int = 24, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        return self.fc2(torch.relu(self.fc1(out)))


class TwoInputNet(nn.Module):
    """A forward with two inputs: an image and a feature vector, fused before the head (fed as a tuple or dict)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.tab = nn.Linear(6, 16)
        self.fc1 = nn.Linear(12 + 16, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(image)).mean((2, 3))
        b = torch.relu(self.tab(features))
        return self.fc2(torch.relu(self.fc1(torch.cat([a, b], dim=1))))


def token_batch(n: int, length: int = 12, vocab: int = 200, seed: int = 0) -> torch.Tensor:
    """Token ids with a Zipf-like frequency (a few common tokens, a long tail), as text has."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    return torch.multinomial(weights.expand(n, -1), length, replacement=True, generator=g)


def _uniform(*shape: int):
    return lambda n, seed: torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _normal(*shape: int):
    return lambda n, seed: torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _two_inputs(as_dict: bool):
    def make(n: int, seed: int):
        image, features = _uniform(3, 8, 8)(n, seed), _normal(6)(n, seed + 1)
        return {"features": features, "image": image} if as_dict else (image, features)
    return make


# name -> (factory, example batch maker (n, seed) -> batch): every layer family, each fed what its forward takes
FAMILIES = {
    "kws_conv1d": (KeywordSpotting1d, _normal(20, 49)),
    "volume_conv3d": (Volume3d, _uniform(1, 8, 16, 16)),
    "unet_transposed": (UNet, _uniform(3, 16, 16)),
    "denoiser_transposed1d": (Denoiser1d, _normal(2, 32)),
    "groupnorm_resnet": (GroupNormResNet, _uniform(3, 12, 12)),
    "instancenorm": (InstanceNormNet, _uniform(3, 12, 12)),
    "prelu_mish_silu": (ActivationsNet, _uniform(3, 12, 12)),
    "text_cnn_embedding": (TextCNN, lambda n, seed: token_batch(n, seed=seed)),
    "bag_of_embeddings": (BagOfEmbeddings, lambda n, seed: token_batch(n, seed=seed)),
    "two_inputs_tuple": (TwoInputNet, _two_inputs(as_dict=False)),
    "two_inputs_dict": (TwoInputNet, _two_inputs(as_dict=True)),
}


# ---------------------------------------------------------------------------------------------------------------
# Gates and activations with f(0) != 0 (issue 24): squeeze-and-excitation, MobileNetV3's block, sigmoid MLPs.

class SqueezeExcite(nn.Module):
    """Hu et al.'s SE gate, as torchvision writes it: pool, reduce, ReLU, expand, sigmoid (or hardsigmoid), scale."""

    def __init__(self, channels: int, squeeze: int, conv: bool = True, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.conv = conv
        self.fc1 = nn.Conv2d(channels, squeeze, 1) if conv else nn.Linear(channels, squeeze)
        self.fc2 = nn.Conv2d(squeeze, channels, 1) if conv else nn.Linear(squeeze, channels)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.gate(self.fc2(torch.relu(self.fc1(s))))
        s = x.mean((2, 3))
        s = self.gate(self.fc2(torch.relu(self.fc1(s))))
        return x * s.view(s.shape[0], s.shape[1], 1, 1)


class SENet(nn.Module):
    """A small SE-ResNet-like network: conv, BN, ReLU, an SE gate written with Linear layers, conv, an SE gate with
    1x1 convs, global pool, head."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.se1 = SqueezeExcite(width, 4, conv=False)
        self.c2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.se2 = SqueezeExcite(2 * width, 8, conv=True)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(torch.relu(self.bn1(self.c1(x))))
        x = self.se2(torch.relu(self.c2(x)))
        return self.fc(x.mean((2, 3)))


class InvertedResidualV3(nn.Module):
    """MobileNetV3's block (Howard et al.): 1x1 expand, BN, hardswish, depthwise 3x3, BN, hardswish, SE with a
    hardsigmoid gate, 1x1 project, BN, residual addition."""

    def __init__(self, channels: int = 16, expand: int = 48) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(channels, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(expand, expand, 3, padding=1, groups=expand, bias=False),
                                nn.BatchNorm2d(expand), nn.Hardswish())
        self.se = SqueezeExcite(expand, 12, gate=nn.Hardsigmoid)
        self.project = nn.Sequential(nn.Conv2d(expand, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.dw(self.expand(x))))


class MobileNetV3Like(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidualV3(), InvertedResidualV3())
        self.head = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class SigmoidMLP(nn.Module):
    """A classic MLP with sigmoid and softplus hidden units (f(0) != 0: a removed unit still emits f(0))."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 48), nn.Linear(48, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.fc1(x.flatten(1)))
        return self.fc3(nn.functional.softplus(self.fc2(x)))


GATES = {
    "se_net": (SENet, _uniform(3, 12, 12)),
    "mobilenet_v3_block": (MobileNetV3Like, _uniform(3, 16, 16)),
    "sigmoid_mlp": (SigmoidMLP, _uniform(1, 8, 8)),
}


class MHABlock(nn.Module):
    """A pre-norm transformer block with torch's own ``nn.MultiheadAttention`` (batch first)."""

    def __init__(self, dim: int, heads: int, ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTMHA(ViT):
    """The small ViT with ``nn.MultiheadAttention`` blocks: pruned without ignore= (attention is kept whole)."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4) -> None:
        super().__init__(dim=dim, depth=depth, heads=heads)
        self.blocks = nn.Sequential(*[MHABlock(dim, heads) for _ in range(depth)])


class TorchEncoder(nn.Module):
    """Token ids through torch's own ``nn.TransformerEncoder`` (kept whole), then an MLP head that is pruned."""

    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc1 = nn.Linear(dim, 48)
        self.fc2 = nn.Linear(48, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.encoder(self.embed(ids)).mean(1))))


class MixerBlock(nn.Module):
    """MLP-Mixer's block (Tolstikhin et al.): token mixing (a Linear over the token axis), channel mixing."""

    def __init__(self, tokens: int, dim: int, token_hidden: int = 24, channel_hidden: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, dim, 7, 7)
        self.blocks = nn.Sequential(*[MixerBlock(16, dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (N, 16 tokens, dim)
        return self.head(self.norm(self.blocks(x)).mean(1))


class WindowBlock(nn.Module):
    """Swin's window partition and reverse (Liu et al.) around a per-token projection, channels last (N, H, W, C),
    then an MLP: the reshapes move the batch dim and keep the channel axis whole."""

    def __init__(self, dim: int, window: int = 2) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        s = self.window
        windows = self.norm1(x).view(n, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        windows = self.proj(windows)
        y = windows.view(n, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinLike(nn.Module):
    def __init__(self, dim: int = 24, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, 4)
        self.blocks = nn.Sequential(WindowBlock(dim), WindowBlock(dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).permute(0, 2, 3, 1)  # (N, 7, 7, dim) -> windows of 2 need an even size: crop to 6
        return self.head(self.blocks(x[:, :6, :6]).mean((1, 2)))


# ---------------------------------------------------------------------------------------------------------------
# Library-style modules (timm's layers, written here): known only through relief_nb.declare_layer.

class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by its activation in one module, as timm writes it."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's downsampling layers, timm's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RandomDepth(nn.Module):
    """Stochastic depth that draws its coin even in eval mode (fx cannot trace it): the identity when p = 0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) < self.p:
            return torch.zeros_like(x)
        return x


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block (Liu et al. 2022): 7x7 depthwise conv, channels-last LayerNorm, pointwise MLP as Linear
    layers with GELU, layer scale, stochastic depth, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.drop_path = RandomDepth()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(nn.functional.gelu(self.pwconv1(y)))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtLike(nn.Module):
    def __init__(self, dim: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), LayerNorm2d(dim))
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.down = nn.Sequential(LayerNorm2d(dim), nn.Conv2d(dim, 2 * dim, 2, 2), BatchNormAct2d(2 * dim))
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.blocks(self.stem(x))).mean((2, 3)))


class ShuffleViewNet(nn.Module):
    """ShuffleNet's channel shuffle as torchvision writes it (``view`` / ``transpose`` / ``view``) between grouped
    convolutions, inside a residual unit."""

    def __init__(self, groups: int = 4, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.groups = groups
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.gconv1 = nn.Sequential(nn.Conv2d(width, width, 1, groups=groups, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU())
        self.gconv2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, classes))

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.gconv2(self.shuffle(self.gconv1(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
