"""Label propagation with ground-truth context: how good an encoder's correspondences are, drift left out.

``motionprop transfer``'s label propagation labels each frame from the first
frame's ground truth and the previous frames' *own predictions*, so an error
in one frame is carried into the next. Here the same step (same features,
radius, top-k, temperature, context frames) takes the *ground-truth* labels of
the context frames instead: each frame's score then measures one step of
label transfer alone. Both are reported per clip, so a loss in the protocol
can be split into worse correspondences and more drift.

    python benchmarks/bench_propagation_context.py --davis ../shared/data/davis2016 \\
        CKPT [CKPT ...] random:resnet18:0,1,2 [--features previous] [--clips a,b] [--json out.json]

A ``random:`` encoder with several seeds is scored per seed and averaged; the
paired sign-flip p (as in ``results.md``) compares each other encoder with it.
A second table says how the protocol's labels are made, to look at drift: the
share of the top-k weight on the first frame and on the previous frame, the
entropy of the soft labels, and the predicted / true object area.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from motionprop.errors import MotionpropError  # noqa: E402
from motionprop.evaluation.benchmark import TransferSettings, _load, extract_features, load_clip  # noqa: E402
from motionprop.evaluation.davis import list_clips  # noqa: E402
from motionprop.evaluation.encoders import parse_encoder  # noqa: E402
from motionprop.evaluation.metrics import sequence_scores  # noqa: E402
from motionprop.evaluation.propagation import (labels_at, normalize_features, one_hot_labels,  # noqa: E402
                                               propagate_clip, propagate_step, propagate_step_local)
from motionprop.evaluation.report import sign_flip_p  # noqa: E402


def ground_truth_context(features: torch.Tensor, labels: np.ndarray, num_labels: int, settings: TransferSettings
                         ) -> np.ndarray:
    """Hard labels (T, H, W) of every frame from the ground truth of its context frames (frame 0 and the
    ``context_frames`` before it), with the protocol's step; frame 0 is its own ground truth."""
    cfg = settings.propagation
    feats = normalize_features(features)
    t_len, c, h, w = feats.shape
    flat = feats.reshape(t_len, c, h * w)
    truth = torch.stack([one_hot_labels(labels[t], num_labels, (h, w)).reshape(num_labels, h * w)
                         for t in range(t_len)])
    out = np.empty_like(labels, dtype=np.uint8)
    out[0] = labels[0]
    for t in range(1, t_len):
        context = [0] + list(range(max(1, t - cfg.context_frames), t))
        if cfg.radius >= 0:   # the protocol's step (propagate_clip's), from the context's ground truth
            soft = propagate_step_local(flat[t], flat[context], truth[context], (h, w), cfg.radius, cfg.topk,
                                        cfg.temperature)
        else:
            soft = propagate_step(flat[t], flat[context], truth[context], None, cfg.topk, cfg.temperature,
                                  cfg.query_chunk)
        out[t] = labels_at(soft.reshape(1, num_labels, h, w), labels.shape[1:])[0]
    return out


def clip_jf(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean J&F over the clip's objects, as ``motionprop transfer`` scores it."""
    scores = sequence_scores(prediction, target)
    return float(np.mean([(s["J"] + s["F"]) / 2 for s in scores.values()]))


def drift_statistics(share: list[torch.Tensor], soft: torch.Tensor, hard: np.ndarray, target: np.ndarray
                     ) -> dict[str, float]:
    """Where the protocol's labels come from and what they look like, frames 1.. of one clip.

    first_frame_weight: the share of the top-k weight on frame 0 (the ground truth);
    previous_frame_weight: on the frame just before (frames 2.., whose context has one);
    entropy: of the soft labels at feature resolution, in units of log(L) (0 = one-hot);
    area_ratio: predicted / true object area (frames with an object), > 1 when labels spread.
    """
    probs = soft[1:].clamp_min(1e-12)
    entropy = -(probs * probs.log()).sum(dim=1) / np.log(max(soft.shape[1], 2))
    true_area = (target[1:] > 0) & (target[1:] != 255)
    areas = [float((hard[t] > 0).sum()) / float(true_area[t - 1].sum()) for t in range(1, len(hard))
             if true_area[t - 1].any()]
    return {"first_frame_weight": float(np.mean([s[0] for s in share])),
            "previous_frame_weight": float(np.mean([s[-1] for s in share[1:]])) if len(share) > 1 else float("nan"),
            "entropy": float(entropy.mean()),
            "area_ratio": float(np.mean(areas)) if areas else float("nan")}


def score_encoder(encoder, label: str, data, settings: TransferSettings) -> dict[str, dict[str, float]]:
    """{clip: {"ground_truth_context": J&F, "own_predictions": J&F, drift statistics...}} for one frozen encoder;
    the statistics (``drift_statistics``) are of the protocol's own predictions (the weights depend on the
    features alone, so they are the same with ground-truth context)."""
    out = {}
    for item in data:
        features = extract_features(encoder, item.frames, settings.batch_size)
        labels = np.where(item.labels == 255, 0, item.labels).astype(np.uint8)
        num_labels = int(labels.max()) + 1
        oracle = ground_truth_context(features, labels, num_labels, settings)
        share: list[torch.Tensor] = []
        soft = propagate_clip(features, labels[0], num_labels, settings.propagation, share)
        own = labels_at(soft, item.mask_size)
        out[item.clip.name] = {"ground_truth_context": clip_jf(oracle, item.labels),
                               "own_predictions": clip_jf(own, item.labels),
                               **drift_statistics(share, soft, own, item.labels)}
        print(f"  {label} {item.clip.name}: "
              f"{100 * out[item.clip.name]['ground_truth_context']:.1f} / "
              f"{100 * out[item.clip.name]['own_predictions']:.1f}", file=sys.stderr, flush=True)
    return out


def average(runs: list[dict]) -> dict:
    return {clip: {k: float(np.mean([r[clip][k] for r in runs])) for k in runs[0][clip]} for clip in runs[0]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="+", help="as motionprop transfer's ENCODER")
    parser.add_argument("--davis", required=True, help="DAVIS-layout folder")
    parser.add_argument("--clips", default=None, help="comma-separated clip names (default: all)")
    parser.add_argument("--features", choices=("last", "previous"), default="last")
    parser.add_argument("--json", default=None, help="write the numbers here too")
    args = parser.parse_args(argv)
    settings = TransferSettings(features=args.features).validate()
    try:
        clips = list_clips(args.davis, args.clips.split(",") if args.clips else None)
        loaded = {text: _load(parse_encoder(text), settings) for text in args.encoders}  # all, before long work
        data = [load_clip(clip, settings.short_side) for clip in clips]
    except MotionpropError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    results = {}
    for text, encoders in loaded.items():
        runs = [score_encoder(enc, text if enc.seed is None else f"{text} seed {enc.seed}", data, settings)
                for enc in encoders]
        results[text] = average(runs)
    names = [c.name for c in clips]
    lines = ["| encoder | " + " | ".join(names) + " | mean |", "|---|" + "---:|" * (len(names) + 1)]
    for text, per_clip in results.items():
        cells = [f"{100 * per_clip[c]['ground_truth_context']:.1f} / {100 * per_clip[c]['own_predictions']:.1f}"
                 for c in names]
        means = [np.mean([per_clip[c][k] for c in names]) for k in ("ground_truth_context", "own_predictions")]
        lines.append(f"| {text} | " + " | ".join(cells) + f" | {100 * means[0]:.1f} / {100 * means[1]:.1f} |")
    print(f"J&F (%) with ground-truth context / with its own predictions (the protocol), features: {args.features}")
    print("\n".join(lines))
    print("\nWhere the protocol's labels come from (means over clips):")
    keys = ("first_frame_weight", "previous_frame_weight", "entropy", "area_ratio")
    print("| encoder | first-frame weight | previous-frame weight | soft-label entropy | predicted / true area |")
    print("|---|" + "---:|" * len(keys))
    for text, per_clip in results.items():
        print(f"| {text} | " + " | ".join(f"{np.nanmean([per_clip[c][k] for c in names]):.3f}" for k in keys) + " |")
    randoms = [t for t in results if t.startswith("random:")]
    for text in results:
        if randoms and text not in randoms:
            ref = results[randoms[0]]
            for key in ("ground_truth_context", "own_predictions"):
                diffs = [results[text][c][key] - ref[c][key] for c in names]
                print(f"{text} minus {randoms[0]}, {key.replace('_', ' ')}: mean {100 * np.mean(diffs):+.1f}, "
                      f"better on {sum(d > 0 for d in diffs)} of {len(diffs)}, sign-flip p = {sign_flip_p(diffs):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"features": args.features, "clips": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
