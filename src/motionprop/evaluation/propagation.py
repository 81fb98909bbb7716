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
    """
    m, c, n = keys.shape
    keys_t = keys.permute(1, 0, 2).reshape(c, m * n)              # (C, M*n)
    labels_flat = key_labels.permute(1, 0, 2).reshape(key_labels.shape[1], m * n)  # (L, M*n)
    k = min(topk, m * n)
    out = []
    share = torch.zeros(m) if weight_share is not None else None
    for start in range(0, query.shape[1], query_chunk):
        q = query[:, start:start + query_chunk]                       # (C, q)
        # Queries as rows: the top-k runs along contiguous memory, and the window
        # mask broadcasts over the M context frames instead of being repeated.
        affinity = (q.T @ keys_t).div_(temperature)                   # (q, M*n)
        if window is not None:
            outside = ~window[:, start:start + query_chunk].T        # (q, n); the window is symmetric
            affinity.view(-1, m, n).masked_fill_(outside[:, None, :], float("-inf"))
        values, index = affinity.topk(k, dim=1)                       # (q, k)
        weights = torch.softmax(values, dim=1)
        gathered = labels_flat[:, index]                              # (L, q, k)
        out.append((gathered * weights[None]).sum(dim=2))
        if share is not None:
            share.index_add_(0, index.flatten().div(n, rounding_mode="floor").cpu(), weights.flatten().float().cpu())
    if share is not None:
        weight_share.append(share / query.shape[1])
    return torch.cat(out, dim=1)


def one_hot_labels(labels: np.ndarray, num_labels: int, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer labels -> (L, h, w) float one-hot at feature size (nearest resize; void and unknown ids -> 0)."""
    import cv2

    h, w = size
    small = cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    onehot = np.zeros((num_labels, h, w), np.float32)
    for label in range(num_labels):
        onehot[label] = small == label
    return torch.from_numpy(onehot)


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
    window = window_mask(h, w, config.radius, feats.device) if config.radius >= 0 else None
    soft = torch.zeros(t_len, num_labels, h * w)
    soft[0] = one_hot_labels(first_labels, num_labels, (h, w)).reshape(num_labels, h * w)
    for t in range(1, t_len):
        context = [0] + list(range(max(1, t - config.context_frames), t))
        soft[t] = propagate_step(flat[t], flat[context], soft[context], window, config.topk,
                                 config.temperature, config.query_chunk, weight_share)
    return soft.reshape(t_len, num_labels, h, w)


def labels_at(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Soft labels (T, L, h, w) -> hard labels (T, H, W) uint8: bilinear upsampling to ``size``, then arg-max."""
    out = np.empty((soft.shape[0], *size), np.uint8)
    for t in range(soft.shape[0]):
        up = F.interpolate(soft[t:t + 1], size=size, mode="bilinear", align_corners=False)
        out[t] = up[0].argmax(dim=0).to(torch.uint8).numpy()
    return out
