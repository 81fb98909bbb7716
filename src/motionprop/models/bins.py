"""Flow as classification: ``nbins`` uniform bins per axis over [-fmax, fmax].

The network predicts 2 x nbins logits per pixel (x bins, then y bins). Flow is
decoded as the expectation of the bin centres under the softmax, which gives
sub-bin precision; the spread of the distribution says how sure the network is.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

BLOCK_PIXELS = 4096
"""Pixels decoded at a time on a CPU (:meth:`FlowBins.decode`): their softmax stays in the cache."""


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
        centers = self.centers(logits.device, torch.float32)

        def expectation(bins: torch.Tensor, dim: int) -> torch.Tensor:
            if dim == -1:
                return F.softmax(bins, dim=-1) @ centers
            shape = [1] * bins.dim()
            shape[dim] = -1
            return (F.softmax(bins, dim=dim) * centers.view(shape)).sum(dim=dim)

        return self._per_pixel(logits, expectation)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-pixel entropy (B,2,H,W) in nats of the x and y bin distributions (0 = certain, log(nbins) = uniform)."""
        def entropy(bins: torch.Tensor, dim: int) -> torch.Tensor:
            log_p = F.log_softmax(bins, dim=dim)
            return -(log_p.exp() * log_p).sum(dim=dim)

        return self._per_pixel(logits, entropy)

    def _per_pixel(self, logits: torch.Tensor, reduce: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
        """``reduce`` over the bins of every pixel and axis: logits (B, 2*nbins, H, W) -> float (B, 2, H, W).

        ``reduce(bins, dim)`` removes axis ``dim`` (the bins) of float ``bins``,
        whose axis ``dim - 1`` is the flow axis (x, y). On a CPU the map goes in
        blocks of rows of about :data:`BLOCK_PIXELS` pixels, whose temporaries
        stay in the cache; for channels-last logits (the apps' layout) the bins
        are then taken along the contiguous last axis. A fraction of the time of
        a softmax along the channel axis of the whole map
        (``benchmarks/bench_propagate.py``); other devices take one block.
        """
        if logits.dim() != 4 or logits.shape[1] != 2 * self.nbins:
            raise ValueError(f"expected (B, {2 * self.nbins}, H, W) bin logits, got {tuple(logits.shape)}")
        b, _, h, w = logits.shape
        rows = max(1, BLOCK_PIXELS // max(b * w, 1)) if logits.device.type == "cpu" else h
        out = torch.empty(b, 2, h, w, dtype=torch.float32, device=logits.device)
        last_axis = logits.stride(1) == 1  # channels-last memory
        for top in range(0, h, rows):
            block = logits[:, :, top:top + rows].float()
            n = block.shape[2]
            if last_axis:
                bins = block.permute(0, 2, 3, 1).reshape(b * n * w, 2, self.nbins)
                out[:, :, top:top + n] = reduce(bins, -1).view(b, n, w, 2).permute(0, 3, 1, 2)
            else:
                out[:, :, top:top + n] = reduce(block.view(b, 2, self.nbins, n, w), 2)
        return out

    def confidence(self, logits: torch.Tensor) -> torch.Tensor:
        """Confidence (B,1,H,W) in [0, 1]: 1 - mean normalized entropy of the two axes.

        Low values mark pixels where the network hesitates between motions,
        i.e. where another guidance arrow would help most.
        """
        return 1.0 - self.entropy(logits).mean(dim=1, keepdim=True) / math.log(self.nbins)
