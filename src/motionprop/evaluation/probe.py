"""Linear foreground/background probe on frozen stride-8 features, trained on the other clips.

A 1x1 convolution (a logistic regression per feature cell) on frozen features,
trained with class-balanced cross-entropy on cells sampled from the training
clips and scored on every frame of the held-out clip (leave-one-clip-out).
Features are standardized per channel with the training sample's mean and
standard deviation (the frozen encoders' scales differ by orders of
magnitude), and the convex problem is solved with L-BFGS for a fixed number of
iterations: one schedule for every encoder, nothing tuned per encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from .metrics import VOID_LABEL
from .propagation import labels_at


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's fixed schedule."""

    samples_per_clip: int = 20000
    iterations: int = 100
    weight_decay: float = 1e-4
    seed: int = 0
    folds: int = 0
    """Cross-validation: 0 = leave-one-clip-out; K >= 2 = K groups of clips (clip i in group i mod K)."""


def probe_folds(names: list[str], folds: int) -> list[list[str]]:
    """The held-out groups of the probe's cross-validation: each clip alone (``folds`` 0, or at least as many as
    there are clips: leave-one-clip-out), else ``folds`` groups, clip i in group i mod ``folds``."""
    if folds == 0 or folds >= len(names):
        return [[name] for name in names]
    return [names[k::folds] for k in range(folds)]


def cell_targets(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) labels -> (T, h, w) int64 cell targets: 1 foreground, 0 background, -1 ignored.

    A cell is foreground when most of its pixels belong to an object
    (area-averaged); cells mostly void are ignored.
    """
    h, w = size
    out = np.empty((labels.shape[0], h, w), np.int64)
    for t, frame in enumerate(labels):
        fg = ((frame != 0) & (frame != VOID_LABEL)).astype(np.float32)
        void = (frame == VOID_LABEL).astype(np.float32)
        fg_small = cv2.resize(fg, (w, h), interpolation=cv2.INTER_AREA)
        void_small = cv2.resize(void, (w, h), interpolation=cv2.INTER_AREA)
        target = (fg_small > 0.5).astype(np.int64)
        target[void_small > 0.5] = -1
        out[t] = target
    return out


def sample_cells(features: torch.Tensor, targets: np.ndarray, count: int, generator: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` random labelled cells of one clip: features (N, C) float32 and targets (N,) int64."""
    t_len, c, h, w = features.shape
    flat_targets = torch.from_numpy(targets.reshape(-1))
    valid = np.flatnonzero(flat_targets.numpy() >= 0)
    chosen = np.sort(generator.choice(valid, size=min(count, len(valid)), replace=False))
    cells = features.permute(0, 2, 3, 1).reshape(t_len * h * w, c)
    index = torch.from_numpy(chosen)
    return cells[index].float(), flat_targets[index]


@dataclass
class LinearProbe:
    """A trained probe: standardization and a 2-class linear layer (the 1x1 conv's weight and bias)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features (T, C, h, w) -> logits (T, 2, h, w) (background, foreground)."""
        x = (features.float() - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def channel_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) cells -> per-channel mean and std, the std floored relative to its mean (constant channels stay finite)."""
    std = features.std(dim=0)
    return features.mean(dim=0), std + 1e-6 * std.mean() + 1e-30


def probe_objective(x: torch.Tensor, targets: torch.Tensor, class_weight: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor, weight_decay: float, chunk: int = 2048
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probe's loss, ``F.cross_entropy(x @ weight.T + bias, targets, weight=class_weight) + weight_decay *
    ||weight||^2``, and its gradients for ``weight`` and ``bias``, in one pass over the cells ``x`` (N, C).

    Computed ``chunk`` rows at a time with the gradient written out (softmax minus one-hot, times the class
    weight): each chunk's cells are read once while they are in cache. Autograd's backward reads all N cells a
    second time through a (2, N) x (N, C) product, which on CPU is 5x slower than the forward and made this
    the probe's cost.
    """
    total_weight = class_weight[targets].sum()
    loss = torch.zeros((), dtype=torch.float64)
    grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
    for start in range(0, x.shape[0], chunk):
        cells, labels = x[start:start + chunk], targets[start:start + chunk]
        log_p = torch.log_softmax(torch.addmm(bias, cells, weight.T), dim=1)
        w = class_weight[labels]
        loss -= (w * log_p.gather(1, labels[:, None])[:, 0]).sum().double()
        grad = log_p.exp_()
        grad[torch.arange(len(labels)), labels] -= 1
        grad *= (w / total_weight)[:, None]
        grad_weight.addmm_(grad.T, cells)
        grad_bias += grad.sum(dim=0)
    loss = (loss / total_weight).float() + weight_decay * weight.pow(2).sum()
    return loss, grad_weight + 2 * weight_decay * weight, grad_bias


def train_probe(features: torch.Tensor, targets: torch.Tensor, config: ProbeConfig = ProbeConfig()) -> LinearProbe:
    """Fit the probe to cells features (N, C) with targets (N,) in {0, 1}: class-balanced CE + L2, L-BFGS."""
    if targets.numel() == 0:
        raise ValueError("no labelled cells to train the probe on")
    mean, std = channel_stats(features)
    x = (features - mean) / std
    counts = torch.bincount(targets, minlength=2).float()
    class_weight = torch.where(counts > 0, counts.sum() / (2 * counts.clamp_min(1)), torch.zeros(2))
    gen = torch.Generator().manual_seed(config.seed)
    weight = torch.randn(2, x.shape[1], generator=gen) * 0.01
    bias = torch.zeros(2)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=config.iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        loss, weight.grad, bias.grad = probe_objective(x, targets, class_weight, weight, bias, config.weight_decay)
        return loss

    optimizer.step(closure)
    return LinearProbe(mean, std, weight.clone(), bias.clone())


def predict_foreground(probe: LinearProbe, features: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """features (T, C, h, w) -> (T, H, W) uint8 foreground masks: logits upsampled bilinearly, then arg-max."""
    return labels_at(probe.logits(features), size)
