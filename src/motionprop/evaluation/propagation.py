"""Label propagation with frozen features, the protocol of self-supervised video correspondence work.

As in DINO's ``eval_video_segmentation.py`` (and CRW's ``code/test.py``): each
frame's labels are a weighted average of the labels of context positions, the
context being the first frame (its ground truth) and the N previous frames
(their soft predictions). Weights: cosine similarity of L2-normalized features
divided by a temperature, only within a square spatial window of ``radius``
cells around the query position (as DINO), the top k over all context
positions kept, softmax over those k. Soft labels stay at feature resolution
for the context of later frames; for scoring they are upsampled bilinearly to
the annotation size and the arg-max is taken. DINO's extra per-channel
min-max rescaling before the arg-max is not applied.

With a window, a clip is propagated tile by tile (:class:`LocalWindow`): the
same labels as whole-frame products masked by the window, without computing
the affinities the window throws away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class PropagationConfig:
    """Propagation settings; the defaults are DINO's, used unchanged for every encoder."""

    context_frames: int = 7
    topk: int = 5
    radius: int = 12
    temperature: float = 0.1
    query_chunk: int = 2048


def normalize_features(features: torch.Tensor) -> torch.Tensor:
    """(T, C, h, w) -> the same L2-normalized over C at each position.

    Each frame is first divided by its largest absolute value, so that the tiny
    activations of the original init (about 1e-9) are not lost to the norm's epsilon;
    the direction of each vector does not change.
    """
    features = features.float()
    scale = features.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
    return F.normalize(features / scale, dim=1)


def window_mask(height: int, width: int, radius: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h*w keys, h*w queries) bool: key within ``radius`` cells of the query in both x and y (square window)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)


def _aggregate(query: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, outside: torch.Tensor | None,
               frames: int, topk: int, temperature: float, share: torch.Tensor | None) -> torch.Tensor:
    """Soft labels (L, q) of q query cells (C, q) from the keys (C, frames*k) of ``frames`` context frames, k cells
    each, and their labels (L, frames*k): the top-k affinities (cosine / temperature; keys where ``outside`` (q, k)
    is True excluded in every frame), softmax-weighted. ``share`` (frames,), if given, gets each frame's weight added.

    Queries are rows: the top-k runs along contiguous memory, and the mask broadcasts over the context frames
    instead of being repeated.
    """
    cells = keys.shape[1] // frames
    affinity = (query.T @ keys).div_(temperature)                     # (q, frames*k)
    if outside is not None:
        affinity.view(-1, frames, cells).masked_fill_(outside[:, None, :], float("-inf"))
    values, index = affinity.topk(min(topk, keys.shape[1]), dim=1)    # (q, topk)
    weights = torch.softmax(values, dim=1)
    if share is not None:
        share.index_add_(0, index.flatten().div(cells, rounding_mode="floor").cpu(), weights.flatten().float().cpu())
    return (labels[:, index] * weights[None]).sum(dim=2)


def propagate_step(query: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor, window: torch.Tensor | None,
                   topk: int, temperature: float, query_chunk: int = 2048,
                   weight_share: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Soft labels of one frame from its context.

    query (C, n) and keys (M, C, n) L2-normalized features of n = h*w cells;
    key_labels (M, L, n) soft labels of the context; window (n, n) bool or None
    -> labels (L, n): for each query cell the softmax-weighted (over its top-k
    affinities among all M*n context cells) average of their labels.
    ``weight_share``, if given, gets an (M,) tensor appended: the share of the
    weight each context frame receives, averaged over the query cells (a diagnostic
    of where the labels come from; the result does not change).
    :func:`propagate_step_local` gives the same labels for a square window, faster.
    """
    m, c, n = keys.shape
    keys_t = keys.permute(1, 0, 2).reshape(c, m * n)              # (C, M*n)
    labels_flat = key_labels.permute(1, 0, 2).reshape(key_labels.shape[1], m * n)  # (L, M*n)
    share = torch.zeros(m) if weight_share is not None else None
    out = []
    for start in range(0, query.shape[1], query_chunk):
        outside = None if window is None else ~window[:, start:start + query_chunk].T  # (q, n); symmetric window
        out.append(_aggregate(query[:, start:start + query_chunk], keys_t, labels_flat, outside, m, topk,
                              temperature, share))
    if share is not None:
        weight_share.append(share / query.shape[1])
    return torch.cat(out, dim=1)


def local_tile(radius: int) -> tuple[int, int]:
    """Rows and columns of the query tiles of :class:`LocalWindow`: about the window's radius (fewer, larger
    products for small radii)."""
    return max(8, radius), max(12, (3 * radius + 1) // 2)


class LocalWindow:
    """The square window of ``radius`` cells (``window_mask``) on an (h, w) grid, tile by tile.

    A tile of query cells is compared only with the context cells within ``radius`` of the tile, not with whole
    frames (at 240 px and radius 12 the window holds about 40 % of a frame's cells, at 480 px about 10 %). The
    context frames' cells are kept per tile in ``slots`` ring-buffer slots (:meth:`put`), so a frame is gathered
    once, not once per query frame it serves, and a step is one matrix product per tile.
    """

    def __init__(self, size: tuple[int, int], radius: int, slots: int, channels: int, num_labels: int,
                 device: torch.device | str = "cpu") -> None:
        height, width = size
        if radius < 0:
            raise ValueError(f"LocalWindow: radius {radius} < 0 (no window: use propagate_step)")
        self.tiles: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (query cells, key cells, outside)
        rows, cols = local_tile(radius)
        for y0 in range(0, height, rows):
            y1, ya, yb = min(height, y0 + rows), max(0, y0 - radius), min(height, y0 + rows + radius)
            for x0 in range(0, width, cols):
                x1, xa, xb = min(width, x0 + cols), max(0, x0 - radius), min(width, x0 + cols + radius)
                qy, qx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
                ky, kx = torch.meshgrid(torch.arange(ya, yb), torch.arange(xa, xb), indexing="ij")
                qy, qx, ky, kx = qy.flatten(), qx.flatten(), ky.flatten(), kx.flatten()
                outside = ((qy[:, None] - ky[None]).abs() > radius) | ((qx[:, None] - kx[None]).abs() > radius)
                self.tiles.append(((qy * width + qx).to(device), (ky * width + kx).to(device), outside.to(device)))
        self.keys = [torch.empty(channels, slots * len(k), device=device) for _, k, _ in self.tiles]
        self.labels = [torch.empty(num_labels, slots * len(k), device=device) for _, k, _ in self.tiles]

    def put(self, slot: int, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep a context frame, features (C, n) L2-normalized and soft labels (L, n), in ``slot``."""
        for (_, cells, _), keys, kept in zip(self.tiles, self.keys, self.labels):
            k = len(cells)
            keys[:, slot * k:(slot + 1) * k] = features[:, cells]
            kept[:, slot * k:(slot + 1) * k] = labels[:, cells]

    def step(self, query: torch.Tensor, used: int, topk: int, temperature: float,
             share: torch.Tensor | None = None) -> torch.Tensor:
        """Soft labels (L, n) of a frame, features (C, n), from the frames in slots 0 .. ``used`` - 1, as
        :func:`propagate_step` with the window gives them; ``share`` (slots,) gets each slot's weight added."""
        out = query.new_empty(self.labels[0].shape[0], query.shape[1])
        for (cells, key_cells, outside), keys, labels in zip(self.tiles, self.keys, self.labels):
            k = len(key_cells)
            out[:, cells] = _aggregate(query[:, cells], keys[:, :used * k], labels[:, :used * k], outside, used,
                                       topk, temperature, share)
        return out


def propagate_step_local(query: torch.Tensor, keys: torch.Tensor, key_labels: torch.Tensor, size: tuple[int, int],
                         radius: int, topk: int, temperature: float,
                         weight_share: list[torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`propagate_step` with the square window of ``radius`` cells on an (h, w) = ``size`` grid: the same
    labels, computed tile by tile (:class:`LocalWindow`)."""
    m, c, n = keys.shape
    if size[0] * size[1] != n:
        raise ValueError(f"propagate_step_local: {n} cells are not {size[0]} x {size[1]}")
    window = LocalWindow(size, radius, m, c, key_labels.shape[1], keys.device)
    for slot in range(m):
        window.put(slot, keys[slot], key_labels[slot])
    share = torch.zeros(m) if weight_share is not None else None
    out = window.step(query, m, topk, temperature, share)
    if share is not None:
        weight_share.append(share / n)
    return out


def one_hot_labels(labels: np.ndarray, num_labels: int, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer labels -> (L, h, w) float one-hot at feature size (nearest resize; void and unknown ids -> 0)."""
    import cv2

    h, w = size
    small = cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    onehot = np.zeros((num_labels, h, w), np.float32)
    for label in range(num_labels):
        onehot[label] = small == label
    return torch.from_numpy(onehot)


def _propagate_local(flat: torch.Tensor, soft: torch.Tensor, size: tuple[int, int], config: PropagationConfig,
                     weight_share: list[torch.Tensor] | None) -> None:
    """Fill ``soft`` (T, L, n) from frame 1 on, frame by frame, from ``flat`` (T, C, n) normalized features, with
    the context frames kept in a :class:`LocalWindow`: frame 0 stays in slot 0, frame f > 0 goes to slot
    1 + (f - 1) mod N once labelled, so slots 0 .. min(t - 1, N) hold exactly the context of frame t."""
    t_len, c, n = flat.shape
    previous = config.context_frames

    def slot(frame: int) -> int:
        return 0 if frame == 0 else 1 + (frame - 1) % previous

    window = LocalWindow(size, config.radius, 1 + previous, c, soft.shape[1], flat.device)
    window.put(0, flat[0], soft[0])
    for t in range(1, t_len):
        share = torch.zeros(1 + previous) if weight_share is not None else None
        soft[t] = window.step(flat[t], 1 + min(t - 1, previous), config.topk, config.temperature, share)
        if share is not None:   # per context frame, in propagate_step's order: frame 0, then oldest first
            context = [0] + list(range(max(1, t - previous), t))
            weight_share.append(share[[slot(f) for f in context]] / n)
        if previous and t < t_len - 1:
            window.put(slot(t), flat[t], soft[t])


def propagate_clip(features: torch.Tensor, first_labels: np.ndarray, num_labels: int,
                   config: PropagationConfig = PropagationConfig(),
                   weight_share: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Soft labels of every frame of a clip: (T, L, h, w), frame 0 being the given one-hot labels.

    features (T, C, h, w) from the frozen encoder (normalized here);
    first_labels (H, W) integer labels of frame 0 (0 = background, 1..L-1 objects);
    ``weight_share`` as in ``propagate_step``, one entry per frame from frame 1 on
    (context order: frame 0, then the previous frames oldest first).
    """
    feats = normalize_features(features)
    t_len, c, h, w = feats.shape
    flat = feats.reshape(t_len, c, h * w)
    soft = torch.zeros(t_len, num_labels, h * w, device=feats.device)
    soft[0] = one_hot_labels(first_labels, num_labels, (h, w)).reshape(num_labels, h * w)
    if config.radius >= 0:
        _propagate_local(flat, soft, (h, w), config, weight_share)
    else:
        for t in range(1, t_len):
            context = [0] + list(range(max(1, t - config.context_frames), t))
            soft[t] = propagate_step(flat[t], flat[context], soft[context], None, config.topk,
                                     config.temperature, config.query_chunk, weight_share)
    return soft.reshape(t_len, num_labels, h, w)


def first_argmax(scores: torch.Tensor) -> torch.Tensor:
    """(L, H, W) scores -> (H, W) uint8: the index of the largest score at each pixel, the first one on ties.

    The same as ``scores.argmax(dim=0)``, which on CPU reduces along the strided first dimension about 20x
    slower than comparing the L planes in turn (40 ms against 2 ms per 854 x 480 frame).
    """
    best, index = scores[0].clone(), torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for label in range(1, scores.shape[0]):
        better = scores[label] > best
        index[better] = label
        best = torch.maximum(best, scores[label])
    return index


def labels_at(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Soft labels or logits (T, L, h, w) -> hard labels (T, H, W) uint8: bilinear upsampling to ``size``,
    then arg-max."""
    out = np.empty((soft.shape[0], *size), np.uint8)
    for t in range(soft.shape[0]):
        up = F.interpolate(soft[t:t + 1], size=size, mode="bilinear", align_corners=False)
        out[t] = first_argmax(up[0]).cpu().numpy()
    return out
