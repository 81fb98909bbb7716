"""ResNet with layer3 and layer4 dilated (output stride 8): the CMP image encoder of the ResNet results.

``resnet18_l3`` and the other ``_l3`` names stop after layer3 (beyond the paper): at
stride 8, ResNet-18's layer4 is most of the network's cost on a CPU (a training step
of the quickstart's network takes 0.36x the time without it), and layer3 is the
layer that video-correspondence work reads (CRW's videowalk drops layer4).

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``downsample.0``), plus ``conv5``, the 1x1 projection to the feature width, so
that both the original CMP checkpoints and torchvision-style weights map onto it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_dim: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided or dilated) -> 1x1 with a residual connection (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_dim: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm_layer(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet at output stride 8: layer3 and layer4 keep the resolution of layer2 and dilate every 3x3 conv.

    As in the original CMP code, every block of layer3 (the first included) uses
    dilation 2 and every block of layer4 dilation 4. ``depth=3`` leaves layer4
    out: ``conv5`` then projects layer3's output.
    """

    PROJECTION = "conv5"
    """The CMP-only 1x1 projection to the feature width (not part of a torchvision ResNet)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], output_dim: int = 256,
                 norm_layer: NormLayer = nn.BatchNorm2d, depth: int = 4):
        super().__init__()
        if depth not in (3, 4):
            raise ValueError(f"depth must be 3 or 4, got {depth}")
        self.depth = depth
        self._norm_layer = norm_layer
        self._in_dim = 64
        self.output_stride = 8
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], dilation=2)
        if depth == 4:
            self.layer4 = self._make_layer(block, 512, layers[3], dilation=4)
        self.conv5 = nn.Conv2d(self._in_dim, output_dim, kernel_size=1)
        # Channels of the skip features returned with return_skips=True: conv1 (1/2), layer1 (1/4).
        self.skip_dims = (64, 64 * block.expansion)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, num_blocks: int,
                    stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        out_dim = planes * block.expansion
        if stride != 1 or self._in_dim != out_dim:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_dim, out_dim, 1, stride=stride, bias=False),
                self._norm_layer(out_dim),
            )
        blocks = [block(self._in_dim, planes, stride, dilation, downsample, self._norm_layer)]
        self._in_dim = out_dim
        blocks += [block(out_dim, planes, 1, dilation, None, self._norm_layer) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def forward(self, image: torch.Tensor, return_skips: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """image (B,3,H,W) -> features (B, output_dim, H/8, W/8) [, (conv1 (B,64,H/2,W/2), layer1 (B,C,H/4,W/4))]."""
        conv1 = self.relu(self.bn1(self.conv1(image)))
        layer1 = self.layer1(self.maxpool(conv1))
        x = self.layer3(self.layer2(layer1))
        if self.depth == 4:
            x = self.layer4(x)
        features = self.conv5(x)
        if return_skips:
            return features, (conv1, layer1)
        return features


RESNET_LAYOUTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


LAYER3_SUFFIX = "_l3"
"""``resnet18_l3`` = ``resnet18`` without layer4."""

RESNET_NAMES: tuple[str, ...] = tuple(RESNET_LAYOUTS) + tuple(name + LAYER3_SUFFIX for name in RESNET_LAYOUTS)


def dilated_resnet(name: str, output_dim: int, norm_layer: NormLayer = nn.BatchNorm2d) -> DilatedResNet:
    """Build ``resnet18`` ... ``resnet152`` at output stride 8, or one of them without layer4 (``resnet18_l3``)."""
    depth = 3 if name.endswith(LAYER3_SUFFIX) else 4
    block, layers = RESNET_LAYOUTS[name.removesuffix(LAYER3_SUFFIX)]
    return DilatedResNet(block, layers, output_dim, norm_layer, depth)
