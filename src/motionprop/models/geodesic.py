"""Geodesic inverse-distance fill: guidance spreads within regions of the image, less across its edges.

Plain IDW (``residual_base: idw``) weights each guidance point by ``1 / d^p`` with
d the Euclidean distance: an arrow on an object pulls the background beside it
as much as the object. Here d is a geodesic distance on the image: a path's
length is the integral of ``cost = 1 + weight * |grad G_sigma * image|`` (the
colour gradient of the image smoothed by a Gaussian, in units of [0, 1] per
pixel), so crossing an edge costs more, and a pixel listens more to the points
of its own region. With ``weight`` 0 it is plain IDW (octile distances).

The distances are computed on a coarse grid (the short side in about ``cells``
cells) by directional sweeps (down, up, right, left, each row from the three
neighbours of the previous one), which is a few hundred small tensor
operations whatever the number of points. At full resolution a point's distance
is its Euclidean distance plus the upsampled geodesic excess (coarse geodesic
minus coarse octile distance, never negative), so it is exact at the point
itself and smooth around it. Everything runs without gradients, on the input's
device.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..config import PRIOR_WEIGHTS

_SQRT2 = math.sqrt(2.0)
_POINTS_PER_BLOCK = 16


@torch.no_grad()
def edge_cost(image: torch.Tensor, weight: float, sigma: float = 2.0) -> torch.Tensor:
    """image (B,C,H,W) in [0, 1] -> cost (B,1,H,W) = 1 + weight x |gradient of the Gaussian-smoothed image|."""
    image = image.float()
    channels = image.shape[1]
    if sigma > 0:
        radius = max(1, int(3 * sigma + 0.5))
        x = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
        kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
        kernel = (kernel / kernel.sum()).repeat(channels, 1)
        image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"),
                         kernel.view(channels, 1, 1, -1), groups=channels)
        image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"),
                         kernel.view(channels, 1, -1, 1), groups=channels)
    gx = F.pad(image[..., :, 2:] - image[..., :, :-2], (1, 1, 0, 0), mode="replicate") / 2
    gy = F.pad(image[..., 2:, :] - image[..., :-2, :], (0, 0, 1, 1), mode="replicate") / 2
    magnitude = (gx.square() + gy.square()).sum(dim=1, keepdim=True).sqrt()
    return 1.0 + weight * magnitude


def _step_costs(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cost (B,1,h,w) -> the costs of the steps into row y from row y - 1: straight, from the left, from the right.

    A step costs its length times the mean cost of its two ends; shapes
    (B,1,h-1,w), (B,1,h-1,w-1), (B,1,h-1,w-1).
    """
    straight = 0.5 * (cost[..., 1:, :] + cost[..., :-1, :])
    from_left = (0.5 * _SQRT2) * (cost[..., 1:, 1:] + cost[..., :-1, :-1])
    from_right = (0.5 * _SQRT2) * (cost[..., 1:, :-1] + cost[..., :-1, 1:])
    return straight, from_left, from_right


def _sweep(distance: torch.Tensor, steps: tuple[torch.Tensor, torch.Tensor, torch.Tensor], reverse: bool) -> None:
    """Relax ``distance`` (B,K,h,w) in place row by row, down (or up), each row from the three pixels before it.

    ``steps`` are :func:`_step_costs` of the cost in the same layout.
    """
    height, width = distance.shape[-2:]
    if height < 2:
        return
    straight, from_left, from_right = steps
    if reverse:  # row y from row y + 1: the same edges, the diagonals swap
        rows, back, edge, from_left, from_right = range(height - 2, -1, -1), 1, 0, from_right, from_left
    else:
        rows, back, edge = range(1, height), -1, -1
    step = torch.empty_like(distance[..., 0, :])
    for y in rows:
        prev, row = distance[..., y + back, :], distance[..., y, :]
        torch.add(prev, straight[..., y + edge, :], out=step)
        torch.minimum(row, step, out=row)
        if width > 1:
            diagonal = step[..., 1:]
            torch.add(prev[..., :-1], from_left[..., y + edge, :], out=diagonal)
            torch.minimum(row[..., 1:], diagonal, out=row[..., 1:])
            torch.add(prev[..., 1:], from_right[..., y + edge, :], out=diagonal)
            torch.minimum(row[..., :-1], diagonal, out=row[..., :-1])


def geodesic_distances(cost: torch.Tensor, seeds: torch.Tensor, rounds: int = 1) -> torch.Tensor:
    """cost (B,1,h,w) >= 1; seeds (B,K,h,w) bool (at most one True each) -> distances (B,K,h,w).

    A seed channel with no True stays infinite. Each round sweeps down and up,
    then right and left (on a transposed copy, so rows stay contiguous); one
    round finds every path that turns from one sweep direction to the next in
    that order, which for costs of natural images is within a few percent of
    the true geodesic distance (more rounds converge to it).
    """
    distance = torch.where(seeds, 0.0, float("inf")).to(torch.float32)
    cost = cost.float()
    rows, columns = _step_costs(cost), _step_costs(cost.transpose(-1, -2))
    for _ in range(rounds):
        _sweep(distance, rows, reverse=False)
        _sweep(distance, rows, reverse=True)
        turned = distance.transpose(-1, -2).contiguous()
        _sweep(turned, columns, reverse=False)
        _sweep(turned, columns, reverse=True)
        distance = turned.transpose(-1, -2).contiguous()
    return distance


def _inverse_power(distance: torch.Tensor, power: float) -> torch.Tensor:
    """``distance ** -power``, by squaring for the usual powers 2 and 4 (a general pow costs several times more)."""
    if power == 2:
        return distance.square_().reciprocal_()
    if power == 4:
        return distance.square_().square_().reciprocal_()
    return distance.pow_(-power)


def _octile(dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The length of the shortest 8-neighbour path for offsets (dy, dx), as unit-cost sweeps compute it."""
    dy, dx = dy.abs(), dx.abs()
    return torch.maximum(dy, dx) + (_SQRT2 - 1) * torch.minimum(dy, dx)


def _coarse_geodesics(sparse: torch.Tensor, cost: torch.Tensor, cells: int, rounds: int
                      ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int, torch.Tensor | None]:
    """The guided pixels of each image, the grid's stride, and the coarse geodesic distances (B, K, h, w)."""
    batch, _, height, width = sparse.shape
    device = sparse.device
    points = [torch.nonzero(sparse[b, 2] > 0, as_tuple=True) for b in range(batch)]
    most = max((p[0].numel() for p in points), default=0)
    stride = max(1, round(min(height, width) / cells))
    if most == 0:
        return points, stride, None
    coarse_cost = F.avg_pool2d(cost.float(), stride, ceil_mode=True) if stride > 1 else cost.float()
    h, w = coarse_cost.shape[-2:]
    seeds = torch.zeros(batch, most, h, w, dtype=torch.bool, device=device)
    for b, (gy, gx) in enumerate(points):
        seeds[b, torch.arange(gy.numel(), device=device), gy // stride, gx // stride] = True
    if coarse_cost.shape[0] != batch:
        coarse_cost = coarse_cost.expand(batch, -1, -1, -1)
    return points, stride, geodesic_distances(coarse_cost, seeds, rounds)


def _full_distances(geodesic: torch.Tensor, py: torch.Tensor, px: torch.Tensor, stride: int,
                    size: tuple[int, int]) -> torch.Tensor:
    """(k, H, W) px: the distance from each point (py, px) to every pixel, Euclidean plus the upsampled geodesic excess.

    ``geodesic`` (k, h, w) holds the points' coarse geodesic distances.
    """
    height, width = size
    h, w = geodesic.shape[-2:]
    device = geodesic.device
    cy = torch.arange(h, device=device, dtype=torch.float32)
    cx = torch.arange(w, device=device, dtype=torch.float32)
    sy, sx = (py // stride).float(), (px // stride).float()
    octile = _octile(cy[None, :, None] - sy[:, None, None], cx[None, None, :] - sx[:, None, None])
    excess = (geodesic - octile).clamp_min(0.0) * stride  # (k, h, w) px
    if stride > 1:
        excess = F.interpolate(excess[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    euclid = ((rows[None, :, None] - py.float()[:, None, None]).square()
              + (cols[None, None, :] - px.float()[:, None, None]).square()).sqrt()
    return euclid + excess


@torch.no_grad()
def geodesic_point_distances(sparse: torch.Tensor, cost: torch.Tensor, cells: int = 64, rounds: int = 1
                             ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image of sparse (B,4,H,W): (gy, gx, distances (K, H, W)), the distances :func:`geodesic_idw` weights.

    For analyses that need every point's distance map at once (memory K x H x W per image).
    """
    points, stride, geodesic = _coarse_geodesics(sparse, cost, cells, rounds)
    size = tuple(sparse.shape[-2:])
    out = []
    for b, (gy, gx) in enumerate(points):
        if gy.numel() == 0:
            out.append((gy, gx, sparse.new_zeros(0, *size, dtype=torch.float32)))
            continue
        out.append((gy, gx, _full_distances(geodesic[b, :gy.numel()], gy, gx, stride, size)))
    return out


def _border_ring(height: int, width: int, device: torch.device) -> torch.Tensor:
    """The flat indices of an (height, width) image's border pixels, each once: top row, bottom row, then the
    left and right columns between them."""
    index = torch.arange(height * width, device=device).view(height, width)
    if height == 1:
        return index[0]
    return torch.cat([index[0], index[-1], index[1:-1, 0], index[1:-1, -1]])


def _counted_pixels(distance: torch.Tensor, weights: str, ring: torch.Tensor) -> torch.Tensor:
    """distance (k, H, W) -> (k, P): the pixels whose nearest point the dominant motion counts, the image's border
    (``weights="border"``; ``ring``: :func:`_border_ring`) or all of them (``"area"``, ``"connectivity"``)."""
    if weights == "border":
        return distance.flatten(1)[:, ring]
    return distance.flatten(1)


def _prior_shares(owner: torch.Tensor, weights: str, count: int, ring: torch.Tensor) -> torch.Tensor:
    """(count,): each point's share of the dominant motion, from ``owner`` (P,), the nearest point of each pixel
    :func:`_counted_pixels` gave: its border pixels, its area, or its boundary connectivity, border pixels /
    sqrt(area) (Zhu et al., CVPR 2014: regions of the scenery touch the border much for their size)."""
    if weights == "connectivity":
        border = torch.bincount(owner[ring], minlength=count).float()
        area = torch.bincount(owner, minlength=count).float()
        return border / area.clamp_min(1.0).sqrt()
    return torch.bincount(owner, minlength=count).float()


@torch.no_grad()
def geodesic_idw(sparse: torch.Tensor, cost: torch.Tensor, power: float, cells: int = 64,
                 rounds: int = 1, colour: torch.Tensor | None = None, colour_sigma: float = 0.0,
                 prior_distance: float = 0.0, prior_weights: str = "border",
                 dominant: torch.Tensor | None = None) -> torch.Tensor:
    """sparse (B,4,H,W), cost (B or 1,1,H,W) -> (B,2,H,W): IDW of the guidance with geodesic distances.

    With ``colour`` (B,C,H,W) and ``colour_sigma`` > 0, a point's weight at a
    pixel is also multiplied by ``exp(-|colour(pixel) - colour(point)|^2 / (2
    sigma^2))``: pixels of the point's colour listen to it more (a joint
    bilateral term; the colour at a point is that of ``colour`` there, so
    smooth it first).

    With ``prior_distance`` D > 0, a virtual point at distance D from every
    pixel carries the image's *dominant motion*: the mean of the guidance
    vectors weighted by how much of the image's border each point's geodesic
    Voronoi cell holds (``prior_weights="border"``), by the cell's area
    (``"area"``), or by its boundary connectivity, border pixels / sqrt(area)
    (``"connectivity"``: a cell of the scenery touches the border much for its
    size, an object that reaches into the frame from its edge little). Pixels
    far from every guidance point (further than about D) take that motion
    instead of the nearest far-away vectors: in real video the scenery, which
    moves with the camera, surrounds the frame, while things that move on
    their own mostly lie inside it, and the sampler puts few points in large
    regions of uniform motion. ``dominant``
    (B, 2), if given, is that motion instead of the estimate (a headroom
    measurement: the true flow's median).

    Guided pixels keep their vectors exactly; an image without guidance gets
    zeros.
    """
    if prior_weights not in PRIOR_WEIGHTS:
        raise ValueError(f"prior_weights must be one of {', '.join(PRIOR_WEIGHTS)}, got {prior_weights!r}")
    batch, _, height, width = sparse.shape
    out = torch.zeros(batch, 2, height, width, device=sparse.device, dtype=torch.float32)
    points, stride, geodesic = _coarse_geodesics(sparse, cost, cells, rounds)
    if geodesic is None:
        return out
    estimate = prior_distance > 0 and dominant is None
    ring = _border_ring(height, width, sparse.device) if estimate else None  # the same for every image and block
    for b, (gy, gx) in enumerate(points):
        if gy.numel() == 0:
            continue
        vectors = sparse[b, :2, gy, gx].float()  # (2, K)
        total = out.new_zeros(2, height, width)
        norm = out.new_zeros(height, width)
        nearest, owner = None, None  # of the counted pixels: the distance to, and the index of, the nearest point
        for first in range(0, gy.numel(), _POINTS_PER_BLOCK):  # bounded memory: K x H x W in blocks of points
            py, px = gy[first:first + _POINTS_PER_BLOCK], gx[first:first + _POINTS_PER_BLOCK]
            distance = _full_distances(geodesic[b, first:first + py.numel()], py, px, stride, (height, width))
            if estimate:
                block_min, block_arg = _counted_pixels(distance, prior_weights, ring).min(dim=0)
                if nearest is None:
                    nearest, owner = block_min, block_arg
                else:
                    closer = block_min < nearest
                    nearest = torch.where(closer, block_min, nearest)
                    owner = torch.where(closer, block_arg + first, owner)
            weights = _inverse_power(distance.clamp_min(1e-3), power)  # (k, H, W)
            if colour is not None and colour_sigma > 0:
                pixel = colour[b].float()
                difference = (pixel[:, None] - pixel[:, py, px][:, :, None, None]).square().sum(dim=0)
                weights *= torch.exp(difference / (-2 * colour_sigma ** 2)).clamp_min(1e-6)  # never 0 / 0
            total += torch.einsum("khw,ck->chw", weights, vectors[:, first:first + py.numel()])
            norm += weights.sum(dim=0)
        if prior_distance > 0:
            if estimate:
                share = _prior_shares(owner, prior_weights, gy.numel(), ring).to(vectors.dtype)
                motion = vectors @ (share / share.sum())  # (2,)
            else:
                motion = dominant[b].to(vectors)
            prior = float(prior_distance) ** -power
            total += prior * motion[:, None, None]
            norm += prior
        out[b] = total / norm
        out[b, :, gy, gx] = vectors
    return out
