"""Sparse guidance: which pixels of a dense flow are given to the network, and the network's input made from them.

CMP learns to propagate a few known motion vectors ("guidance") to the whole
image. During training the guidance is sampled from a dense flow with the
strategies of the paper (and of the original release's ``flow_sampler``):

* ``grid``: a regular grid of stride ``int(sqrt(1 / bg_ratio))``, centred;
* ``uniform``: ``int(bg_ratio * H * W)`` random pixels (repeats possible);
* ``watershed``: points far from motion edges, one per object part: the local
  maxima (window ``nms_ks``) of the distance to the nearest motion edge, near
  duplicates removed at random;
* ``gradnms``: local maxima of a ring-shaped average of the motion-edge strength;
* ``single``: one random pixel that moves;
* ``full``: every pixel (the dense flow itself).

Points given by a user (``points=``, ``(N, 2)`` of ``(x, y)``) are added to the
strategies' ones. Then at most ``max_num_guide`` points are kept at random.

Every random draw comes from the ``numpy.random.Generator`` passed as ``rng``,
at the same places and in the same order as the original, so a seeded run is
reproducible and follows the original's random stream. Unknown flow (NaN, see
:mod:`motionprop.data.flow_io`) is treated as zero for finding edges and is
never sampled.

For frames larger than 800 px, edges and maxima are found on a subsampled
flow (factor ``max(1, max(H, W) // 400)``, as the original does) and the
points mapped back.

The results match the original's (same points for the same seed, up to float
rounding at the motion-edge threshold) 6-9 times faster on one core (about
2 ms instead of 14-20 ms for 384x384): OpenCV filters replace scipy's, and the
near-duplicate removal visits each point once instead of building an N x N
matrix (``benchmarks/bench_guidance.py``).
"""

from __future__ import annotations

import math
from typing import Iterable

import cv2
import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError

STRATEGIES = ("grid", "uniform", "gradnms", "watershed", "single", "full")

_EDGE_THRESHOLD = 0.1  # motion edges: gradient magnitude above 10 % of the frame's maximum
_MIN_EDGE_SCALE = 0.01  # do not amplify a nearly uniform flow's noise into edges
_GRADNMS_THRESHOLD = 0.1
_SUBSAMPLE_SIZE = 400  # frames above twice this are analysed subsampled


def sample_guidance(
    flow: np.ndarray,
    strategy: str | Iterable[str] = ("grid", "watershed"),
    bg_ratio: float = 1.0 / 6400,
    nms_ks: int = 41,
    max_num_guide: int = -1,
    rng: np.random.Generator | int | None = None,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(sparse_flow (H, W, 2) float32, mask (H, W) bool)`` sampled from ``flow`` (H, W, 2).

    ``sparse_flow`` equals ``flow`` where ``mask`` is True and is 0 elsewhere.
    ``max_num_guide=-1`` keeps every point. ``rng`` is a generator or a seed
    (None: a fresh, unseeded generator). Raises :class:`InputError` on an unknown strategy (the
    message lists the valid ones) or invalid arguments.
    """
    flow = _checked_flow(flow)
    strategies = _checked_strategies(strategy)
    _check_parameters(bg_ratio, nms_ks, max_num_guide, needs_stride="grid" in strategies)
    rng = np.random.default_rng(rng)  # None: fresh entropy; an int: a seed; a Generator: itself
    flow, known = _split_unknown(flow)
    if "full" in strategies:
        if known is None:
            return flow.copy(), np.ones(flow.shape[:2], bool)
        return flow, known  # _split_unknown made a copy with 0 where unknown

    rows, cols = guidance_points(flow, strategies, bg_ratio, nms_ks, rng, points)
    if known is not None and len(rows):
        usable = known[rows, cols]
        rows, cols = rows[usable], cols[usable]
    rows, cols = _keep_at_most(rows, cols, max_num_guide, rng)
    return _scatter(flow, rows, cols)


def sample_guidance_any_density(
    flow: np.ndarray,
    rng: np.random.Generator,
    nms_ks: int = 15,
    dense_prob: float = 0.25,
    dense_grid: int = 20,
    max_sparse: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Guidance of a random density, so one model serves a click, a few arrows and dense trajectories.

    With probability ``dense_prob``: a grid every ``dense_grid`` px plus the
    watershed points (``nms_ks``). Otherwise N points, N log-uniform in
    [1, ``max_sparse``], taken from the watershed points first (object
    interiors, where users click), then from the grid (which adds still points
    on static background). Returns ``(sparse_flow (H, W, 2), mask (H, W))`` as
    :func:`sample_guidance`; unknown flow is never sampled.
    """
    flow = _checked_flow(flow)
    _check_parameters(1.0 / dense_grid ** 2, nms_ks, -1, needs_stride=True)
    flow, known = _split_unknown(flow)
    dense = rng.random() < dense_prob
    count = int(np.exp(rng.uniform(0.0, np.log(max_sparse + 1)))) if not dense else -1
    count = min(max(count, 1), max_sparse) if not dense else -1
    shed_rows, shed_cols = watershed_points(flow, nms_ks, rng)
    grid_rows, grid_cols = grid_points(*flow.shape[:2], 1.0 / dense_grid ** 2)
    shed_order, grid_order = rng.permutation(len(shed_rows)), rng.permutation(len(grid_rows))
    rows = np.concatenate([shed_rows[shed_order], grid_rows[grid_order]]).astype(np.intp)
    cols = np.concatenate([shed_cols[shed_order], grid_cols[grid_order]]).astype(np.intp)
    if known is not None and len(rows):
        usable = known[rows, cols]
        rows, cols = rows[usable], cols[usable]
    if count >= 0:
        rows, cols = rows[:count], cols[:count]
    return _scatter(flow, rows, cols)


def guidance_points(
    flow: np.ndarray,
    strategies: Iterable[str],
    bg_ratio: float,
    nms_ks: int,
    rng: np.random.Generator,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` int arrays of every point the strategies pick, before any cap.

    Strategies run in the original's fixed order (grid, uniform, gradnms,
    watershed, single, then user points), whatever order they are listed in,
    so the random stream is consumed the same way. ``full`` is not a point
    strategy (see :func:`sample_guidance`).
    """
    strategies = set(strategies)
    height, width = flow.shape[:2]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if "grid" in strategies:
        parts.append(grid_points(height, width, bg_ratio))
    if "uniform" in strategies:
        count = int(bg_ratio * height * width)
        parts.append((rng.integers(0, height, count), rng.integers(0, width, count)))
    if "gradnms" in strategies:
        parts.append(gradnms_points(flow, nms_ks))
    if "watershed" in strategies:
        parts.append(watershed_points(flow, nms_ks, rng))
    if "single" in strategies:
        parts.append(single_point(flow, rng))
    if points is not None:
        parts.append(_checked_user_points(points, height, width))
    if not parts:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    return (np.concatenate([p[0] for p in parts]).astype(np.intp),
            np.concatenate([p[1] for p in parts]).astype(np.intp))


def grid_points(height: int, width: int, bg_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` of a regular grid of stride ``int(sqrt(1 / bg_ratio))``, centred in the frame."""
    stride = int(np.sqrt(1.0 / bg_ratio))  # int() truncation kept from the original
    start_row = (height - height // stride * stride) // 2
    start_col = (width - width // stride * stride) // 2
    # Column by column, the original's order: it decides which points a seeded cap keeps.
    rows, cols = np.meshgrid(np.arange(start_row, height, stride), np.arange(start_col, width, stride))
    return rows.ravel(), cols.ravel()


def watershed_points(flow: np.ndarray, nms_ks: int = 41,
                     rng: np.random.Generator | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` of the pixels farthest from motion edges, about one per ``nms_ks`` window.

    Motion edges are pixels whose :func:`motion_edges` strength exceeds 10 % of
    the frame's maximum. Points are the local maxima (``nms_ks`` x ``nms_ks``
    window, frame border excluded) of the Euclidean distance to the nearest
    edge; of two maxima closer than ``(nms_ks - 1) / 2`` in both rows and
    columns one is dropped at random. A flow without any motion edge gives no
    point (the original gives none either, through a quirk of scipy).

    Kept from the original: the pairwise removal runs in row-major order, so
    along a plateau of equal distance (the middle of a straight band) the
    points mostly eliminate each other and very few, near its end, survive.
    ``flow`` must be finite (:func:`sample_guidance` zeroes unknown flow first).
    """
    rng = np.random.default_rng(rng)  # None: fresh entropy; an int: a seed; a Generator: itself
    step = _subsample_step(flow.shape)
    small = np.ascontiguousarray(flow[::step, ::step], dtype=np.float32)
    edge = motion_edges(small)
    edge /= max(edge.max(), _MIN_EDGE_SCALE)  # in place and in float32, like the original
    away_from_edges = (edge <= _EDGE_THRESHOLD).view(np.uint8)
    if away_from_edges.all():
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    distance = cv2.distanceTransform(away_from_edges, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # OpenCV's float32 square roots may differ by an ulp between pixels at the same
    # distance (and between thread counts), which would break ties differently from
    # the original. Squared Euclidean distances are integers: compare those exactly.
    # (Exact up to ~600 px from the nearest edge; beyond, OpenCV's float32 may still
    # break a tie between two equally far maxima differently.)
    squared = distance * distance
    np.rint(squared, out=squared)
    rows, cols = _local_maxima(squared, nms_ks)
    inside = (squared[rows, cols] > 0) & (rows > 0) & (cols > 0)
    inside &= (rows < squared.shape[0] - 1) & (cols < squared.shape[1] - 1)
    rows, cols = rows[inside], cols[inside]
    keep = _drop_near_duplicates(rows, cols, (nms_ks - 1) / 2, rng)
    return rows[keep] * step, cols[keep] * step


def gradnms_points(flow: np.ndarray, nms_ks: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` of local maxima of (wide average - narrow average) of motion-edge strength.

    Picks points just beside strong motion edges. The averaging window is
    ``W / 20`` px wide (and half that), so the flow must be at least 40 px wide.
    """
    step = _subsample_step(flow.shape)
    small = np.ascontiguousarray(flow[::step, ::step], dtype=np.float32)
    size = small.shape[1] // 20
    if size < 2:
        raise InputError(f"strategy 'gradnms' needs a flow at least 40 px wide, got {flow.shape[1]}")
    edge = motion_edges(small)
    wide = cv2.blur(edge, (size, size), borderType=cv2.BORDER_REFLECT)
    narrow = cv2.blur(edge, (size // 2, size // 2), borderType=cv2.BORDER_REFLECT)
    if wide.max() <= 0 or narrow.max() <= 0:  # no motion edge at all (the original divides 0 by 0)
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    score = wide / wide.max() - narrow / narrow.max()
    rows, cols = _local_maxima(score, nms_ks)
    strong = score[rows, cols] > _GRADNMS_THRESHOLD
    return rows[strong] * step, cols[strong] * step


def single_point(flow: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return one random pixel whose flow is not zero (any pixel if none moves), as ``(rows, cols)``."""
    moving = np.flatnonzero((flow[:, :, 0] != 0) | (flow[:, :, 1] != 0))
    if len(moving) == 0:  # the original crashes here; a still pixel is still valid guidance
        moving = np.arange(flow.shape[0] * flow.shape[1])
    index = moving[rng.integers(len(moving))]
    return np.array([index // flow.shape[1]]), np.array([index % flow.shape[1]])


def motion_edges(flow: np.ndarray) -> np.ndarray:
    """Return the motion-edge strength (H, W) float32: Sobel gradient magnitude, summed over x and y flow.

    Borders are mirrored (edge pixel repeated), like scipy's ``boundary='symm'``.
    """
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    height, width = flow.shape[:2]
    grad_x = cv2.Sobel(flow, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    grad_y = cv2.Sobel(flow, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    # (H, W, 2) -> (H, 2W): magnitude of both flow channels in one call.
    magnitude = cv2.magnitude(grad_x.reshape(height, -1), grad_y.reshape(height, -1)).reshape(height, width, 2)
    return magnitude[:, :, 0] + magnitude[:, :, 1]


def make_sparse_input(sparse_flow: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the network's guidance input (4, H, W) float32: flow x, flow y, mask, mask."""
    sparse_flow = np.asarray(sparse_flow)
    mask = np.asarray(mask)
    if sparse_flow.ndim != 3 or sparse_flow.shape[2] != 2:
        raise InputError(f"sparse flow must have shape (H, W, 2), got {sparse_flow.shape}")
    if mask.shape != sparse_flow.shape[:2]:
        raise InputError(f"guidance mask must have shape {sparse_flow.shape[:2]}, got {mask.shape}")
    out = np.empty((4, *mask.shape), np.float32)
    out[0] = sparse_flow[:, :, 0]
    out[1] = sparse_flow[:, :, 1]
    out[2] = mask
    out[3] = mask
    return out


# ---------------------------------------------------------------- helpers


def _local_maxima(score: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, cols)`` (row-major order) of pixels equal to the maximum of their window x window area.

    Outside pixels are ignored, which equals scipy's mirrored ``maximum_filter``:
    a mirrored pixel is a copy of one already inside the window.
    """
    window_max = cv2.dilate(score, np.ones((window, window), np.uint8))
    flat = np.flatnonzero(score >= window_max)  # much faster than np.nonzero on a 2-D mask
    return np.divmod(flat, score.shape[1])


def _drop_near_duplicates(rows: np.ndarray, cols: np.ndarray, distance: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Return a bool mask keeping no two points with both |d row| and |d col| below ``distance``.

    Same process and random draws as the original's ``neighbor_elim``: pairs are
    visited in order of (first index, second index); when both are still kept,
    ``rng.random() > 0.5`` drops the first, otherwise the second. Visiting the
    pairs from a k-d tree, and skipping a dropped point's remaining pairs,
    makes it linear in the points instead of quadratic.
    """
    keep = np.ones(len(rows), bool)
    radius = math.ceil(distance) - 1  # integer coordinates: |d| < distance <=> |d| <= radius
    if len(rows) < 2 or radius < 0:
        return keep
    tree = cKDTree(np.column_stack([rows, cols]))
    pairs = tree.query_pairs(radius + 0.5, p=np.inf, output_type="ndarray")  # i < j; +0.5: no float edge case
    if len(pairs) == 0:
        return keep
    count = len(rows)
    order = np.sort(pairs[:, 0].astype(np.int64) * count + pairs[:, 1])  # by first, then second index
    firsts = order // count
    seconds = order - firsts * count
    bounds = np.searchsorted(firsts, np.arange(count + 1)).tolist()
    alive = [True] * count
    for first in range(count):
        if not alive[first] or bounds[first] == bounds[first + 1]:
            continue
        for second in seconds[bounds[first]:bounds[first + 1]].tolist():
            if alive[second]:
                if rng.random() > 0.5:
                    alive[first] = False
                    break
                alive[second] = False
    keep[:] = alive
    return keep


def _keep_at_most(rows: np.ndarray, cols: np.ndarray, max_num_guide: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``max_num_guide`` random points (all if -1)."""
    # Drawn even when every point is kept, so a seeded run follows the original's random stream.
    order = rng.permutation(len(rows))
    if max_num_guide >= 0:
        order = order[:max_num_guide]
    return rows[order], cols[order]


def _scatter(flow: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparse flow and mask holding ``flow`` at the given points."""
    sparse = np.zeros(flow.shape, np.float32)
    mask = np.zeros(flow.shape[:2], bool)
    sparse[rows, cols] = flow[rows, cols]
    mask[rows, cols] = True
    return sparse, mask


def _subsample_step(shape: tuple[int, ...]) -> int:
    """Subsampling factor of the edge analysis: 1 up to 799 px, then ``max(H, W) // 400``."""
    return max(1, max(shape[0], shape[1]) // _SUBSAMPLE_SIZE)


def _split_unknown(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(flow with unknown set to 0, known mask)``; the mask is None when all flow is known."""
    if np.isfinite(flow.sum()):  # fast path (an overflow to inf only takes the slow path)
        return flow, None
    known = np.isfinite(flow).all(axis=-1)
    return np.where(known[:, :, None], flow, 0).astype(np.float32), known


def _checked_flow(flow: np.ndarray) -> np.ndarray:
    """``flow`` as float32 (H, W, 2), or InputError."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or min(flow.shape[:2]) < 1:
        raise InputError(f"flow must have shape (H, W, 2), got {flow.shape}")
    if not (np.issubdtype(flow.dtype, np.floating) or np.issubdtype(flow.dtype, np.integer)):
        raise InputError(f"flow must be numeric, got dtype {flow.dtype}")
    return flow.astype(np.float32, copy=False)


def _checked_strategies(strategy: str | Iterable[str]) -> tuple[str, ...]:
    """The strategy names as a tuple; InputError listing the valid ones on an unknown name."""
    strategies = (strategy,) if isinstance(strategy, str) else tuple(strategy)
    for name in strategies:
        if name not in STRATEGIES:
            raise InputError(f"unknown guidance sampling strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    return strategies


def _check_parameters(bg_ratio: float, nms_ks: int, max_num_guide: int, needs_stride: bool) -> None:
    """Raise InputError on out-of-range sampling parameters."""
    if not 0 <= bg_ratio <= 1 or (needs_stride and bg_ratio == 0):
        raise InputError(f"bg_ratio must be in (0, 1], got {bg_ratio}")
    if int(nms_ks) != nms_ks or nms_ks < 1 or nms_ks % 2 == 0:
        raise InputError(f"nms_ks must be an odd positive integer, got {nms_ks}")
    if int(max_num_guide) != max_num_guide or max_num_guide < -1:
        raise InputError(f"max_num_guide must be -1 (no limit) or a count >= 0, got {max_num_guide}")


def _checked_user_points(points: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of user points given as (N, 2) integer ``(x, y)``; InputError if malformed or outside."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"guidance points must have shape (N, 2) of (x, y), got {points.shape}")
    if points.size and not np.array_equal(points, np.round(points)):
        raise InputError("guidance points must be whole pixel coordinates (x, y)")
    points = points.astype(np.intp)
    outside = (points[:, 0] < 0) | (points[:, 0] >= width) | (points[:, 1] < 0) | (points[:, 1] >= height)
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise InputError(f"guidance point (x={x}, y={y}) is outside the {width}x{height} flow")
    return points[:, 1], points[:, 0]
