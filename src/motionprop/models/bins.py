"""Flow as classification: ``nbins`` uniform bins per axis over [-fmax, fmax].

The network predicts 2 x nbins logits per pixel (x bins, then y bins). Flow is
decoded as the expectation of the bin centres under the softmax, which gives
sub-bin precision; the spread of the distribution says how sure the network is.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


class FlowBins:
    """Quantization of flow into bins and decoding of bin logits back to flow (in pixels)."""

    def __init__(self, nbins: int = 99, fmax: float = 50.0):
        if nbins < 3 or nbins % 2 == 0:
            raise ValueError(f"nbins must be odd and >= 3, got {nbins}")
        self.nbins = nbins
        self.fmax = float(fmax)
        self.step = 2.0 * self.fmax / nbins

    def centers(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Bin centres (nbins,), from -fmax + step/2 to fmax - step/2."""
        return torch.arange(self.nbins, device=device, dtype=dtype) * self.step - self.fmax + self.step / 2

    def quantize(self, flow: torch.Tensor) -> torch.Tensor:
        """Flow (B,2,H,W) in pixels -> bin indices (B,2,H,W) long; values beyond +-fmax fall in the end bins."""
        eps = 1e-3
        clamped = flow.clamp(-self.fmax + eps, self.fmax - eps)
        return torch.floor((clamped + self.fmax) / self.step).long()

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 2*nbins, H, W) -> (x logits, y logits), each (B, nbins, H, W)."""
        if logits.shape[1] != 2 * self.nbins:
            raise ValueError(f"expected {2 * self.nbins} channels of bin logits, got {logits.shape[1]}")
        return logits[:, : self.nbins], logits[:, self.nbins :]

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2*nbins, H, W) -> flow (B,2,H,W): softmax expectation of the bin centres."""
        centers = self.centers(logits.device, torch.float32).view(1, -1, 1, 1)
        axes = [(F.softmax(part.float(), dim=1) * centers).sum(dim=1, keepdim=True) for part in self.split(logits)]
        return torch.cat(axes, dim=1)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-pixel entropy (B,2,H,W) in nats of the x and y bin distributions (0 = certain, log(nbins) = uniform)."""
        out = []
        for part in self.split(logits):
            log_p = F.log_softmax(part.float(), dim=1)
            out.append(-(log_p.exp() * log_p).sum(dim=1, keepdim=True))
        return torch.cat(out, dim=1)

    def confidence(self, logits: torch.Tensor) -> torch.Tensor:
        """Confidence (B,1,H,W) in [0, 1]: 1 - mean normalized entropy of the two axes.

        Low values mark pixels where the network hesitates between motions,
        i.e. where another guidance arrow would help most.
        """
        return 1.0 - self.entropy(logits).mean(dim=1, keepdim=True) / math.log(self.nbins)
