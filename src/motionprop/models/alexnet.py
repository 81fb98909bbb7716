"""AlexNet with BatchNorm, fully convolutional: the CMP image encoder of the paper's AlexNet results."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


def conv_norm_relu(in_dim: int, out_dim: int, kernel_size: int, norm_layer: NormLayer, stride: int = 1,
                   padding: int | None = None, dilation: int = 1) -> nn.Sequential:
    """Conv (with bias, as the original) -> norm -> ReLU; indices 0, 1, 2 match the released checkpoints."""
    if padding is None:
        padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size, stride=stride, padding=padding, dilation=dilation),
        norm_layer(out_dim),
        nn.ReLU(inplace=True),
    )


class AlexNetFCN(nn.Module):
    """AlexNet-BN where fc6/fc7 are convolutions (3x3 and 1x1), ending in a 1x1 conv to ``output_dim``.

    ``strides`` are those of conv1, pool1, pool2 and pool5: (4, 2, 2, 2) gives
    output stride 32, (2, 2, 2, 1) output stride 8.
    """

    PROJECTION = "conv8"
    """The CMP-only 1x1 projection to the feature width (``conv5`` is AlexNet's own fifth conv)."""

    def __init__(self, output_dim: int = 256, strides: Sequence[int] = (4, 2, 2, 2),
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        if len(strides) != 4:
            raise ValueError(f"AlexNetFCN needs 4 strides (conv1, pool1, pool2, pool5), got {list(strides)}")
        s_conv1, s_pool1, s_pool2, s_pool5 = strides
        self.output_stride = s_conv1 * s_pool1 * s_pool2 * s_pool5
        self.conv1 = conv_norm_relu(3, 96, 11, norm_layer, stride=s_conv1, padding=5)
        self.pool1 = nn.MaxPool2d(3, stride=s_pool1, padding=1)
        self.conv2 = conv_norm_relu(96, 256, 5, norm_layer)
        self.pool2 = nn.MaxPool2d(3, stride=s_pool2, padding=1)
        self.conv3 = conv_norm_relu(256, 384, 3, norm_layer)
        self.conv4 = conv_norm_relu(384, 384, 3, norm_layer)
        self.conv5 = conv_norm_relu(384, 256, 3, norm_layer)
        self.pool5 = nn.MaxPool2d(3, stride=s_pool5, padding=1)
        self.fc6 = conv_norm_relu(256, 4096, 3, norm_layer)
        self.drop6 = nn.Dropout(0.5)
        self.fc7 = conv_norm_relu(4096, 4096, 1, norm_layer)
        self.drop7 = nn.Dropout(0.5)
        self.conv8 = nn.Conv2d(4096, output_dim, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B,3,H,W) normalized -> features (B, output_dim, H/s, W/s)."""
        x = self.pool1(self.conv1(image))
        x = self.pool2(self.conv2(x))
        x = self.pool5(self.conv5(self.conv4(self.conv3(x))))
        x = self.drop6(self.fc6(x))
        x = self.drop7(self.fc7(x))
        return self.conv8(x)
