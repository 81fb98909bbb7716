"""Training losses of CMP: cross-entropy over flow bins (the paper's), or direct regression.

Target flow may mark unknown pixels with NaN (either component): they are
ignored, and the loss is the mean over the known pixels. A target without NaN
gives exactly the original's loss.
"""

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


IGNORE = -100  # F.cross_entropy's default ignore_index


def unknown_pixels(target: torch.Tensor) -> torch.Tensor:
    """(B,H,W) bool: pixels of target flow (B,2,H,W) with a NaN component, which the losses ignore."""
    return torch.isnan(target).any(dim=1)


class DiscreteLoss(nn.Module):
    """Cross-entropy of the x bins plus cross-entropy of the y bins, each averaged over the known pixels.

    logits (B, 2*nbins, h, w) are upsampled to the target's resolution first, as
    in the original; target flow (B,2,H,W) in pixels is clamped to +-fmax and
    quantized; NaN target pixels are ignored (0 when no pixel is known). This
    is the reference implementation: :class:`FusedDiscreteLoss` gives the same
    value and gradient without the full-resolution tensors.
    """

    def __init__(self, nbins: int = 99, fmax: float = 50.0):
        super().__init__()
        self.bins = FlowBins(nbins, fmax)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = upsample_like(logits, target)
        unknown = unknown_pixels(target)
        has_unknown = bool(unknown.any())
        if has_unknown:
            if bool(unknown.all()):
                return logits.sum() * 0.0
            target = target.masked_fill(unknown.unsqueeze(1), 0.0)
        labels = self.bins.quantize(target)
        if has_unknown:
            labels = labels.masked_fill(unknown.unsqueeze(1), IGNORE)
        logits_x, logits_y = self.bins.split(logits)
        return F.cross_entropy(logits_x, labels[:, 0]) + F.cross_entropy(logits_y, labels[:, 1])


# --------------------------------------------------------------------------- the fused loss


def _linear_taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners=True) taps of one axis: for each output index, (i0, i1, weight of i1).

    Computed in float32 the way PyTorch's upsampling kernel does, so the
    interpolated values match F.interpolate's to rounding.
    """
    if n_out > 1:
        scale = torch.tensor(n_in - 1, dtype=torch.float32) / torch.tensor(n_out - 1, dtype=torch.float32)
    else:
        scale = torch.tensor(0.0)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    i0 = src.floor().long().clamp(max=n_in - 1)
    weight = (src - i0.float()).clamp(0.0, 1.0)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0.to(device), i1.to(device), weight.to(device)


def _row_weights(i0: torch.Tensor, i1: torch.Tensor, weight: torch.Tensor, s0: int, s1: int) -> torch.Tensor:
    """The (R, s1-s0) matrix that interpolates R output rows from source rows [s0, s1) (two taps per row)."""
    rows = torch.arange(i0.shape[0], device=i0.device)
    matrix = torch.zeros(i0.shape[0], s1 - s0, device=i0.device)
    matrix.index_put_((rows, i0 - s0), 1 - weight, accumulate=True)
    matrix.index_put_((rows, i1 - s0), weight, accumulate=True)
    return matrix


class _Plan:
    """What the fused loss needs besides the logits: taps of both axes, labels, known pixels, blocks.

    A block is a few output rows of one sample, small enough (``block_elements``
    upsampled logits) that its softmax, one-hot and transposes stay in cache.
    """

    def __init__(self, logits: torch.Tensor, target: torch.Tensor, bins: FlowBins, block_elements: int):
        B, C, h, w = logits.shape
        H, W = target.shape[-2:]
        device = logits.device
        self.nbins = bins.nbins
        self.width = w
        y0, y1, wy = _linear_taps(h, H, device)
        self.x0, self.x1, wx = _linear_taps(w, W, device)
        self.wx = wx.view(-1, 1)
        unknown = unknown_pixels(target)  # (B,H,W)
        self.count = B * H * W - int(unknown.sum().item())
        self.known = None if self.count == B * H * W else (~unknown).to(torch.float32)
        labels = bins.quantize(target.masked_fill(unknown.unsqueeze(1), 0.0))  # (B,2,H,W)
        self.labels = labels.permute(0, 2, 3, 1).unsqueeze(-1).contiguous()  # (B,H,W,2,1)
        rows = max(1, block_elements // max(1, W * C))
        self.row_blocks = []  # (r0, r1, s0, s1, (R, s) row-interpolation matrix)
        for r0 in range(0, H, rows):
            r1 = min(r0 + rows, H)
            s0, s1 = int(y0[r0]), int(y1[r1 - 1]) + 1
            self.row_blocks.append((r0, r1, s0, s1, _row_weights(y0[r0:r1], y1[r0:r1], wy[r0:r1], s0, s1)))
        self.batch = B

    def blocks(self):
        """(sample, r0, r1, s0, s1, row matrix) for every block, in order."""
        for b in range(self.batch):
            for block in self.row_blocks:
                yield (b, *block)

    def widen(self, src: torch.Tensor) -> torch.Tensor:
        """Logit rows src (s, w, C) interpolated to the output width: (s, W, C)."""
        return torch.lerp(src.index_select(1, self.x0), src.index_select(1, self.x1), self.wx)

    def narrow(self, grad_wide: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`widen`: gradient (s, W, C) -> (s, w, C)."""
        s, W, C = grad_wide.shape
        src = grad_wide.new_zeros(s, self.width, C)
        src.index_add_(1, self.x0, grad_wide * (1 - self.wx))
        src.index_add_(1, self.x1, grad_wide * self.wx)
        return src

    def mask(self, values: torch.Tensor, b: int, r0: int, r1: int) -> torch.Tensor:
        """values (R,W,...) of sample b with unknown pixels zeroed (unchanged when all are known)."""
        if self.known is None:
            return values
        known = self.known[b, r0:r1]
        return values * known.view(*known.shape, *([1] * (values.dim() - 2)))


class _FusedCrossEntropy(torch.autograd.Function):
    """Sum over the known pixels of the x and y bin cross-entropies of the upsampled logits, block by block.

    Forward keeps only the low-resolution logits; backward recomputes each
    block's softmax and sends (softmax - one-hot) back through the transpose of
    the interpolation, straight into the gradient of the low-resolution logits.
    Blocks write into buffers reused from block to block (no fresh pages).
    """

    @staticmethod
    def forward(ctx, logits_hwc: torch.Tensor, plan: _Plan) -> torch.Tensor:  # type: ignore[override]
        total = torch.zeros((), dtype=torch.float64, device=logits_hwc.device)
        K = plan.nbins
        buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for b, r0, r1, s0, s1, rows in plan.blocks():
            wide = plan.widen(logits_hwc[b, s0:s1]).view(s1 - s0, -1)  # (s, W*C)
            if r1 - r0 not in buffers:
                up = wide.new_empty(r1 - r0, wide.shape[-1])
                buffers[r1 - r0] = (up, torch.empty_like(up))
            up, log_p = buffers[r1 - r0]
            torch.matmul(rows, wide, out=up)  # (R, W*C): the upsampled logits of the block
            torch.log_softmax(up.view(-1, K), dim=-1, out=log_p.view(-1, K))
            picked = torch.gather(log_p.view(r1 - r0, -1, 2, K), -1, plan.labels[b, r0:r1])  # (R,W,2,1)
            total -= plan.mask(picked, b, r0, r1).sum(dtype=torch.float64)
        ctx.save_for_backward(logits_hwc)
        ctx.plan = plan
        return total.to(torch.float32)

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):  # type: ignore[override]
        (logits_hwc,) = ctx.saved_tensors
        plan: _Plan = ctx.plan
        C = logits_hwc.shape[-1]
        K = plan.nbins
        grad = torch.zeros_like(logits_hwc)
        buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for b, r0, r1, s0, s1, rows in plan.blocks():
            wide = plan.widen(logits_hwc[b, s0:s1]).view(s1 - s0, -1)
            if r1 - r0 not in buffers:
                up = wide.new_empty(r1 - r0, wide.shape[-1])
                buffers[r1 - r0] = (up, torch.empty_like(up))
            up, probs = buffers[r1 - r0]
            torch.matmul(rows, wide, out=up)
            torch.softmax(up.view(-1, K), dim=-1, out=probs.view(-1, K))
            labels = plan.labels[b, r0:r1]
            probs4 = probs.view(r1 - r0, -1, 2, K)
            probs4.scatter_add_(-1, labels, torch.full_like(labels, -1, dtype=probs.dtype))  # softmax - one-hot
            g = plan.mask(probs4, b, r0, r1).view(r1 - r0, -1)
            grad_wide = torch.matmul(rows.t() * grad_total, g)  # (s, W*C): transpose of the row interpolation
            grad[b, s0:s1] += plan.narrow(grad_wide.view(s1 - s0, -1, C))
        return grad, None


class FusedDiscreteLoss(DiscreteLoss):
    """:class:`DiscreteLoss` computed without full-resolution tensors: same value and gradient, less time and memory.

    The output is walked in blocks of rows (about ``block_elements`` upsampled
    logits each); each block is interpolated from the few logit rows it needs,
    and the backward pass recomputes it rather than storing it. Always float32
    (autocast is switched off inside). Plain torch ops: runs on any device.
    """

    def __init__(self, nbins: int = 99, fmax: float = 50.0, block_elements: int = 1 << 20):
        super().__init__(nbins, fmax)
        self.block_elements = block_elements

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] == target.shape[-2:]:
            return super().forward(logits, target)  # nothing to upsample: the reference is as cheap
        if logits.shape[1] != 2 * self.bins.nbins:
            raise ValueError(f"expected {2 * self.bins.nbins} channels of bin logits, got {logits.shape[1]}")
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.float()
            plan = _Plan(logits, target.float(), self.bins, self.block_elements)
            if plan.count == 0:
                return logits.sum() * 0.0
            logits_hwc = logits.permute(0, 2, 3, 1).contiguous()  # (B,h,w,2K): softmax over a contiguous axis
            return _FusedCrossEntropy.apply(logits_hwc, plan) / plan.count


class RegressionLoss(nn.Module):
    """SmoothL1 or MSE between upsampled predicted flow (B,2,h,w) and target flow (B,2,H,W).

    ``weight`` (B,1,H,W), if given, weights each pixel: the loss is sum(weight x loss) / sum(weight) over
    pixels and both components, the plain mean when every weight is equal.
    """

    def __init__(self, kind: str = "smooth_l1"):
        super().__init__()
        self.kind = kind

    def forward(self, flow: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        flow = upsample_like(flow, target)
        reduction = "mean" if weight is None else "none"
        loss = (F.smooth_l1_loss(flow, target, reduction=reduction) if self.kind == "smooth_l1"
                else F.mse_loss(flow, target, reduction=reduction))
        if weight is None:
            return loss
        return (loss * weight).sum() / (weight.sum() * loss.shape[1])


MOTION_WEIGHT_CAP = 20.0
"""px: motion beyond this weighs as much as this (``train.motion_weight``)."""


def motion_weights(flow: torch.Tensor, strength: float) -> torch.Tensor:
    """(B,2,H,W) flow -> (B,1,H,W) pixel weights 1 + strength x min(|flow|, 20 px) / 20 (``train.motion_weight``):
    pixels that move count more than still ones, up to 1 + strength times."""
    return 1.0 + strength * flow.norm(dim=1, keepdim=True).clamp(max=MOTION_WEIGHT_CAP) / MOTION_WEIGHT_CAP


def build_flow_loss(model_config: ModelConfig, fused: bool = False) -> nn.Module:
    """The loss that matches the model's output: bins -> DiscreteLoss (``fused``: FusedDiscreteLoss), flow -> regression."""
    if model_config.flow_loss == "discrete":
        return (FusedDiscreteLoss if fused else DiscreteLoss)(model_config.nbins, model_config.fmax)
    return RegressionLoss(model_config.flow_loss)
