"""How rich are an encoder's frozen features? Effective rank, and how much colour and foreground a linear map reads.

The transfer benchmark's linear probe (``motionprop transfer``) scores how well
a 1x1 convolution tells foreground from background on held-out clips. When a
pre-trained encoder loses to random init there, this says why, on the same
frames and the same layer:

* ``rank``: the effective rank (exp of the entropy of the normalized
  eigenvalues) of the per-channel standardized features' covariance, and how
  many principal directions hold 90 % of their variance. A probe on features
  that live in 10 directions has 10 numbers to work with, whatever the channels.
* ``colour R^2``: how much of each cell's mean RGB a least-squares linear map
  from the features recovers (1 = all of it). Random convolutions keep colour;
  a network trained to predict motion may drop it.
* ``fg R^2 (in-sample)``: the same for the foreground fraction of each cell,
  fitted and scored on all clips at once: the linear information about the
  objects there is, before any question of generalizing to an unseen clip.

    python benchmarks/feature_stats.py --davis ../shared/data/davis2016 --features previous \\
        runs/pre4k/checkpoints/iter_0004000 random:resnet18:0

Every ``--every``-th frame of every clip is used (frames resized as the
transfer benchmark does, ``--size`` short side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def standardize(x: "torch.Tensor") -> "torch.Tensor":
    """Per-channel zero mean and unit variance in float64, with the probe's statistics."""
    from motionprop.evaluation.probe import channel_stats

    mean, std = channel_stats(x.double())
    return (x.double() - mean) / std


def effective_rank(x: "torch.Tensor") -> tuple[float, int]:
    """(N, C) features -> (effective rank, principal directions for 90 % of the variance) after per-channel standardization."""
    import torch

    x = standardize(x)
    eig = torch.linalg.eigvalsh(x.T @ x / len(x)).flip(0).clamp(min=0)
    p = eig / eig.sum()
    p = p[p > 0]
    erank = float(torch.exp(-(p * p.log()).sum()))
    k90 = int((eig.cumsum(0) / eig.sum() < 0.9).sum()) + 1
    return erank, k90


def linear_r2(x: "torch.Tensor", y: "torch.Tensor") -> np.ndarray:
    """R^2 per column of ``y`` (N, K) of the least-squares affine map from ``x`` (N, C)."""
    import torch

    x = standardize(x)
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = y.double()
    residual = y - a @ torch.linalg.lstsq(a, y).solution
    return (1 - residual.var(0) / y.var(0)).numpy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("encoders", nargs="+", metavar="ENCODER",
                        help="as for motionprop transfer: a checkpoint, an encoder file, random:ARCH[:SEED]")
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS-layout folder (frames and masks)")
    parser.add_argument("--features", choices=("last", "previous"), default="last",
                        help="the layer, as motionprop transfer --features")
    parser.add_argument("--size", type=int, default=240, help="short side of the frames (transfer's default)")
    parser.add_argument("--every", type=int, default=10, help="use every N-th frame of each clip")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch
    from torch.nn import functional as F

    from motionprop.errors import MotionpropError
    from motionprop.evaluation.benchmark import TransferSettings, _load, extract_features, load_clip
    from motionprop.evaluation.davis import list_clips
    from motionprop.evaluation.encoders import parse_encoder
    from motionprop.evaluation.metrics import VOID_LABEL

    torch.set_num_threads(args.threads)
    if args.every < 1:
        parser.error("--every must be at least 1")
    try:
        data = [load_clip(clip, args.size) for clip in list_clips(args.davis)]
        settings = TransferSettings(features=args.features).validate()
        encoders = [(name, _load(parse_encoder(name), settings)[0]) for name in args.encoders]
    except MotionpropError as exc:
        parser.error(str(exc))
    print(f"{len(data)} clips of {args.davis}, every {args.every}th frame, short side {args.size}, "
          f"features: {args.features}")
    print("| encoder | layer | channels | effective rank | dims for 90 % | colour R^2 (R, G, B) | fg R^2 (in-sample) |")
    print("|---|---|---:|---:|---:|---|---:|")
    for name, encoder in encoders:
        cells, colours, fgs = [], [], []
        for item in data:
            frames = item.frames[::args.every]
            feats = extract_features(encoder, frames, 4)
            h, w = feats.shape[-2:]
            rgb = F.adaptive_avg_pool2d(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), (h, w))
            labels = torch.from_numpy(item.labels[::args.every].astype(np.int64))
            fg = ((labels != 0) & (labels != VOID_LABEL)).float()[:, None]
            fg = F.adaptive_avg_pool2d(F.interpolate(fg, size=frames.shape[1:3], mode="nearest"), (h, w))
            cells.append(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]))
            colours.append(rgb.permute(0, 2, 3, 1).reshape(-1, 3))
            fgs.append(fg.reshape(-1, 1))
        x = torch.cat(cells)
        erank, k90 = effective_rank(x)
        colour = linear_r2(x, torch.cat(colours))
        fg = linear_r2(x, torch.cat(fgs))[0]
        print(f"| {name} | {encoder.layer} | {x.shape[1]} | {erank:.1f} | {k90} | "
              f"{', '.join(f'{v:.3f}' for v in colour)} | {fg:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
