"""Training losses of CMP: cross-entropy over flow bins (the paper's), or direct regression."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .models.bins import FlowBins


def upsample_like(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=True) upsampling of ``output`` to ``target``'s spatial size, as the original."""
    if output.shape[-2:] == target.shape[-2:]:
        return output
    return F.interpolate(output, size=target.shape[-2:], mode="bilinear", align_corners=True)


class DiscreteLoss(nn.Module):
    """Cross-entropy of the x bins plus cross-entropy of the y bins, each averaged over pixels.

    logits (B, 2*nbins, h, w) are upsampled to the target's resolution first, as
    in the original; target flow (B,2,H,W) in pixels is clamped to +-fmax and quantized.
    """

    def __init__(self, nbins: int = 99, fmax: float = 50.0):
        super().__init__()
        self.bins = FlowBins(nbins, fmax)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = upsample_like(logits, target)
        labels = self.bins.quantize(target)
        logits_x, logits_y = self.bins.split(logits)
        return F.cross_entropy(logits_x, labels[:, 0]) + F.cross_entropy(logits_y, labels[:, 1])


class RegressionLoss(nn.Module):
    """SmoothL1 or MSE between upsampled predicted flow (B,2,h,w) and target flow (B,2,H,W)."""

    def __init__(self, kind: str = "smooth_l1"):
        super().__init__()
        self.loss = nn.SmoothL1Loss() if kind == "smooth_l1" else nn.MSELoss()

    def forward(self, flow: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(upsample_like(flow, target), target)


def build_flow_loss(model_config: ModelConfig) -> nn.Module:
    """The loss that matches the model's output: bins -> DiscreteLoss, direct flow -> regression."""
    if model_config.flow_loss == "discrete":
        return DiscreteLoss(model_config.nbins, model_config.fmax)
    return RegressionLoss(model_config.flow_loss)
