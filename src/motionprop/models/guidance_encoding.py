"""Guidance encodings: what the sparse-motion encoder sees of the guidance, and how the output uses it.

Every caller gives the network the same sparse input, ``(B, 4, H, W)`` = flow x,
flow y, mask, mask (zero away from guidance points). The paper's network reads
it as it is (``model.guidance_input: sparse``). With a handful of guided pixels
among tens of thousands of zeros, a small network trained for minutes hardly
hears them (docs/real_motion.md), so two options make the guidance dense inside the
model, where no caller has to know:

* ``guidance_input: dense``: the four channels become the nearest guidance
  vector (x, y) at every pixel, the mask, and the distance to the nearest
  guidance point divided by ``guidance_distance_scale`` (capped at 1): every
  pixel knows which arrow is closest and how far it is;
* ``prediction: residual``: the network predicts the correction to a
  non-learned fill of the guidance (``residual_base``: the nearest guidance
  vector, inverse-distance weighting with ``idw_power``, or IDW of geodesic
  distances on the image, ``models/geodesic.py``), added at full
  resolution, so an untrained network already gives that fill, and dense
  guidance keeps its full-resolution detail;
* ``guidance_radius`` R > 0 blends the output into the fill within R pixels
  of each guidance point (weight ``min(d / R, 1)`` on the network, d the
  distance to the nearest guidance point): the fill is exact at guidance and
  accurate near it, so a dragged point moves exactly as it was dragged. The
  fill is the residual base for residual models, the nearest vector otherwise.
* ``affinity_dim`` E > 0 (residual over IDW only): IDW lets every guidance
  point pull every pixel by distance alone, so an arrow on an object drags the
  background beside it. The image encoder also predicts an E-channel embedding
  per output cell, and the IDW weights become a softmax over guidance points of
  ``-power * log(distance) + scale * cos(embedding(pixel), embedding(point))``:
  a pixel listens more to the points that look like it (the same object).
  The difference to plain IDW at the output cells is added to the residual.
  ``scale`` is learned and starts at 0, so an untrained network is still
  exactly the IDW fill.

Apart from the affinity embedding, all of it is parameter-free and runs on the input's device.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# Pixel-guidance distances are computed in blocks of about this many elements (rows x width x points).
_BLOCK_ELEMENTS = 1 << 22


@torch.no_grad()
def nearest_guidance(sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sparse (B,4,H,W) -> (fill (B,2,H,W): the vector of the nearest guidance point, distance (B,1,H,W) px).

    Exact Euclidean nearest point (ties go to the first point in row-major
    order). An image without guidance gets zero fill and infinite distance.
    The cost is H x W x points per image, in bounded blocks.
    """
    batch, _, height, width = sparse.shape
    fill = sparse.new_zeros(batch, 2, height, width, dtype=torch.float32)
    distance = sparse.new_full((batch, 1, height, width), float("inf"), dtype=torch.float32)
    rows = torch.arange(height, device=sparse.device, dtype=torch.float32)
    cols = torch.arange(width, device=sparse.device, dtype=torch.float32)
    for b in range(batch):
        gy, gx = torch.nonzero(sparse[b, 2] > 0, as_tuple=True)
        count = gy.numel()
        if count == 0:
            continue
        vectors = sparse[b, :2, gy, gx].float()  # (2, K)
        dy2 = (rows[:, None] - gy.float()[None]) ** 2  # (H, K)
        dx2 = (cols[:, None] - gx.float()[None]) ** 2  # (W, K)
        step = max(1, _BLOCK_ELEMENTS // (width * count))
        for top in range(0, height, step):
            d2 = dy2[top:top + step, None, :] + dx2[None, :, :]  # (h, W, K)
            best, index = d2.min(dim=2)
            fill[b, :, top:top + step] = vectors[:, index]
            distance[b, 0, top:top + step] = best.sqrt()
    return fill, distance


def dense_guidance_input(sparse: torch.Tensor, distance_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sparse (B,4,H,W) -> (encoder input (B,4,H,W) = fill x, fill y, mask, min(distance/scale, 1), fill (B,2,H,W))."""
    fill, distance = nearest_guidance(sparse)
    near = (distance / distance_scale).clamp_(max=1.0)
    encoded = torch.cat([fill, sparse[:, 2:3].float(), near], dim=1).to(sparse.dtype)
    return encoded, fill


@torch.no_grad()
def guidance_fill(sparse: torch.Tensor, base: str, idw_power: float) -> torch.Tensor:
    """sparse (B,4,H,W) -> (B,2,H,W): the nearest guidance vector, or IDW of all guidance (weights 1/d^power)."""
    if base == "idw":
        from ..baselines import idw_fill

        return idw_fill(sparse, power=idw_power)
    return nearest_guidance(sparse)[0]


def blend_guidance(flow: torch.Tensor, sparse: torch.Tensor, radius: float,
                   fill: torch.Tensor | None = None) -> torch.Tensor:
    """flow (B,2,H,W) -> ``fill + min(d / radius, 1) * (flow - fill)``, d the distance to the nearest guidance.

    ``fill`` (B,2,H,W) must equal the guidance at guided pixels; None: the nearest guidance vector.
    """
    nearest, distance = nearest_guidance(sparse)
    fill = nearest if fill is None else fill
    weight = (distance / radius).clamp_(max=1.0)
    return fill + weight * (flow - fill)


def affinity_correction(embedding: torch.Tensor, sparse: torch.Tensor, power: float,
                        scale: torch.Tensor) -> torch.Tensor:
    """Affinity-weighted minus plain IDW of the guidance at the output cells, (B,2,h,w).

    embedding (B,E,h,w) at the output resolution; sparse (B,4,H,W) at the input
    resolution. Cell (i, j) sits at input pixel (i (H-1)/(h-1), j (W-1)/(w-1)),
    as the output's ``align_corners=True`` upsampling places it. Distances are
    clamped at 1 px. Differentiable in ``embedding`` and ``scale``.
    """
    batch, _, h, w = embedding.shape
    height, width = sparse.shape[-2:]
    device = embedding.device
    rows = torch.linspace(0, height - 1, h, device=device)
    cols = torch.linspace(0, width - 1, w, device=device)
    unit = F.normalize(embedding.float(), dim=1)
    corrections = []
    for b in range(batch):
        gy, gx = torch.nonzero(sparse[b, 2] > 0, as_tuple=True)
        if gy.numel() == 0:
            corrections.append(unit.new_zeros(2, h, w))
            continue
        vectors = sparse[b, :2, gy, gx].float()  # (2, K)
        gyf, gxf = gy.float(), gx.float()
        d2 = (rows[:, None, None] - gyf) ** 2 + (cols[None, :, None] - gxf) ** 2  # (h, w, K)
        base = -0.5 * power * d2.clamp_min(1.0).log()
        grid = torch.stack([gxf / max(width - 1, 1) * 2 - 1, gyf / max(height - 1, 1) * 2 - 1], dim=-1)
        at_points = F.grid_sample(unit[b:b + 1], grid.view(1, 1, -1, 2), align_corners=True)[0, :, 0]
        similarity = torch.einsum("ehw,ek->hwk", unit[b], F.normalize(at_points, dim=0))
        weights = torch.softmax(base + scale.float() * similarity, dim=-1) - torch.softmax(base, dim=-1)
        corrections.append(torch.einsum("hwk,ck->chw", weights, vectors))
    return torch.stack(corrections)
