"""Non-learned sparse-to-dense baselines: what CMP must beat to be worth its weights.

Both fill every pixel from the guidance vectors alone, without looking at the
image: nearest-guidance fill (each pixel takes the vector of the closest
guidance point) and inverse-distance-weighted (IDW) interpolation.
"""

from __future__ import annotations

import torch
from scipy import ndimage


def nearest_fill(sparse: torch.Tensor) -> torch.Tensor:
    """sparse (B,4,H,W) = flow x, flow y, mask, mask -> flow (B,2,H,W): the vector of the nearest guidance point.

    An image without guidance gets zero flow.
    """
    out = torch.zeros_like(sparse[:, :2])
    for b in range(sparse.shape[0]):
        mask = sparse[b, 2].detach().cpu().numpy() > 0
        if not mask.any():
            continue
        _, (rows, cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
        flow = sparse[b, :2].detach().cpu().numpy()
        out[b] = torch.from_numpy(flow[:, rows, cols]).to(out)
    return out


def idw_fill(sparse: torch.Tensor, power: float = 2.0, chunk: int = 65536) -> torch.Tensor:
    """sparse (B,4,H,W) -> flow (B,2,H,W) by inverse-distance weighting (weights 1 / d**power) of all guidance.

    Guidance pixels keep their own vector exactly. Memory stays bounded by
    processing ``chunk`` pixels at a time.
    """
    B, _, H, W = sparse.shape
    out = torch.zeros_like(sparse[:, :2], dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(H, device=sparse.device), torch.arange(W, device=sparse.device),
                            indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).float()  # (HW, 2)
    for b in range(B):
        mask = sparse[b, 2] > 0
        if not mask.any():
            continue
        gy, gx = torch.nonzero(mask, as_tuple=True)
        points = torch.stack([gx, gy], dim=1).float()  # (K, 2)
        vectors = sparse[b, :2, gy, gx].float().T  # (K, 2)
        flat = torch.empty(H * W, 2, device=sparse.device)
        for start in range(0, H * W, chunk):
            dist = torch.cdist(pixels[start:start + chunk], points)  # (n, K)
            weights = 1.0 / dist.clamp_min(1e-6).pow(power)
            flat[start:start + chunk] = weights @ vectors / weights.sum(dim=1, keepdim=True)
        out[b] = flat.T.reshape(2, H, W)
        out[b, :, gy, gx] = vectors.T
    return out


def end_point_error(flow: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error (Euclidean distance in pixels) per image, (B,), over valid pixels."""
    error = (flow.float() - target.float()).norm(dim=1)  # (B, H, W)
    if valid is None:
        return error.flatten(1).mean(dim=1)
    valid = valid.reshape(error.shape).float()
    return (error * valid).flatten(1).sum(dim=1) / valid.flatten(1).sum(dim=1).clamp_min(1.0)
