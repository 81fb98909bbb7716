"""ShallowNet: the small encoder of the sparse guidance (flow x, flow y, mask, mask)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


class ShallowNet(nn.Module):
    """conv 5x5 -> norm -> ReLU -> max-pool -> conv 3x3 -> norm -> ReLU -> avg-pool.

    ``strides`` are those of the first conv, the max-pool and the avg-pool:
    (2, 2, 2) encodes at 1/8, (2, 2, 8) at 1/32. Max-pooling keeps a guidance
    vector alive however few there are; average pooling then smooths.
    """

    def __init__(self, input_dim: int = 4, output_dim: int = 16, strides: Sequence[int] = (2, 2, 2),
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        s_conv, s_max, s_avg = strides
        self.output_stride = s_conv * s_max * s_avg
        self.features = nn.Sequential(
            nn.Conv2d(input_dim, 16, 5, stride=s_conv, padding=2),
            norm_layer(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(s_max, stride=s_max),
            nn.Conv2d(16, output_dim, 3, padding=1),
            norm_layer(output_dim),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(s_avg, stride=s_avg),
        )

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        """sparse (B,4,H,W) = flow x, flow y, mask, mask -> (B, output_dim, H/s, W/s)."""
        return self.features(sparse)
