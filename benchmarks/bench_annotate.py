"""Click-to-mask quality of a trained network on synthetic clips with true object masks, against two baselines.

For the first frame of every validation clip of a ``motionprop synth`` data
set (the quickstart's ``data/`` folder; ``--split``), every object with at least ``--min-area``
visible pixels gets one positive click at its most interior pixel (farthest
from its boundary) and, with ``--negative``, one negative click at the
background pixel farthest from any object. Masks are scored by intersection
over union with the true mask of the visible object.

Methods:

* ``cmp``: :func:`motionprop.apps.annotate.annotate` (four probes; ``--velocity``, ``--threshold``);
* ``disc``: a disc at the click with the area of the set's mean object (knows
  the size on average, nothing about the object);
* ``flood``: OpenCV flood fill from the click, colour tolerance ``--flood-tol``
  per channel (knows the colours, nothing about motion);
* ``cmp+grabcut``: ``annotate(..., refine="grabcut")``, the ``cmp`` mask snapped to the image's
  colours (:mod:`motionprop.apps.refine`);
* ``disc+grabcut``: the same GrabCut from the disc (probably foreground), the click (surely
  foreground) and everything outside twice the disc's radius and the negative click (surely
  background): what the refinement does without the network.

    python benchmarks/bench_annotate.py quickstart/run/checkpoints/iter_0001300 --data quickstart/data

With ``--davis ROOT`` it measures real objects instead: DAVIS-layout clips
(``JPEGImages/[480p/]<clip>/*.jpg``, ``Annotations/[480p/]<clip>/*.png``), the
first and the middle frame of every clip, every object (label > 0; DAVIS-2016
masks are 0/255, one object) with one positive click at its most interior pixel:

    python benchmarks/bench_annotate.py quickstart/run/checkpoints/iter_0001300 --davis ../shared/data/davis2016
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its boundary (and from the image border)."""
    import cv2

    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def disc_mask(shape: tuple[int, int], point: tuple[int, int], area: float) -> np.ndarray:
    """A disc of the given area centred on ``point``."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (xx - point[0]) ** 2 + (yy - point[1]) ** 2 <= area / np.pi


def flood_mask(image: np.ndarray, point: tuple[int, int], tolerance: int) -> np.ndarray:
    """Pixels connected to ``point`` through neighbours within ``tolerance`` per channel of each other."""
    import cv2

    mask = np.zeros((image.shape[0] + 2, image.shape[1] + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    cv2.floodFill(np.ascontiguousarray(image).copy(), mask, point, (0, 0, 0), (tolerance,) * 3, (tolerance,) * 3,
                  flags)
    return mask[1:-1, 1:-1] > 0


def split_clips(data: Path, split: str) -> list[str]:
    """Names of the clips in ``lists/<split>.txt`` (the folder above each listed frame)."""
    lines = (data / "lists" / f"{split}.txt").read_text().split("\n")
    return sorted({Path(line.split()[0]).parent.name for line in lines if line.strip()})


def objects(data: Path, clips: Sequence[str], min_area: int, limit: int | None) -> list[tuple[Path, np.ndarray, int]]:
    """(frame, label map, object index) of every object big enough in the first frame of each clip."""
    import cv2

    found = []
    for name in clips:
        clip = data / "masks" / name
        labels = cv2.imread(str(clip / "000000.png"), cv2.IMREAD_UNCHANGED)
        for index in np.unique(labels)[1:]:
            if (labels == index).sum() >= min_area:
                found.append((data / "frames" / clip.name / "000000.jpg", labels, int(index)))
    return found[:limit]


def davis_objects(root: Path, min_area: int) -> list[tuple[Path, np.ndarray, int]]:
    """(frame, label map, object id) for the first and middle frame of every DAVIS clip.

    Clips and masks are read by :mod:`motionprop.evaluation.davis` (DAVIS-2016 0/255 masks and
    DAVIS-2017 palette PNGs, with or without the resolution folder).
    """
    from motionprop.evaluation.davis import VOID_LABEL, list_clips, read_mask

    found = []
    for clip in list_clips(root):
        for i in sorted({0, len(clip.masks) // 2}):
            labels = read_mask(clip.masks[i])
            for index in np.unique(labels[(labels > 0) & (labels != VOID_LABEL)]):
                if (labels == index).sum() >= min_area:
                    found.append((clip.frames[i], labels, int(index)))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="trained checkpoint folder")
    parser.add_argument("--data", type=Path, default=Path("quickstart/data"), help="a motionprop synth folder")
    parser.add_argument("--davis", type=Path, default=None,
                        help="measure on DAVIS-layout clips (first and middle frame) instead of --data")
    parser.add_argument("--split", default="val", help="clips of lists/SPLIT.txt (val: not trained on)")
    parser.add_argument("--min-area", type=int, default=400, help="smallest visible object, pixels")
    parser.add_argument("--limit", type=int, default=200, help="at most this many objects")
    parser.add_argument("--negative", action="store_true", help="add one negative click in the background")
    parser.add_argument("--velocity", type=float, default=30.0, help="probe speed, px of the working size")
    parser.add_argument("--working-size", type=int, default=None,
                        help="short side the network sees (default: data.short_size of its training, as Propagator)")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask = score > threshold")
    parser.add_argument("--border-per-side", type=float, default=None,
                        help="border still points per short side (default: annotate's)")
    parser.add_argument("--flood-tol", type=int, default=12, help="flood fill tolerance per channel")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="the network's arithmetic (Propagator(precision=...); default: fp32)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.key=value",
                        help="change the checkpoint's model config, e.g. --set model.guidance_radius=32 "
                        "(options that change the weights are refused; repeatable)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from motionprop import load_model
    from motionprop.apps.annotate import annotate
    from motionprop.apps.propagate import Propagator, load_image
    from motionprop.apps.refine import click_discs, grabcut, refine_mask
    from motionprop.config import section_overrides
    from motionprop.errors import MotionpropError

    bad = section_overrides(args.overrides, "model")[1]
    if bad:
        parser.error(f"--set {bad[0]}: only model options can be changed here (model.key=value)")

    torch.set_num_threads(args.threads)
    if args.border_per_side is not None and args.border_per_side <= 0:
        parser.error(f"--border-per-side must be positive, got {args.border_per_side:g}")
    try:
        model = load_model(args.checkpoint, overrides=args.overrides)
    except MotionpropError as exc:
        parser.error(f"{args.checkpoint}: {exc}")
    if args.davis is not None:
        try:
            found = davis_objects(args.davis, args.min_area)[:args.limit]
        except MotionpropError as exc:
            parser.error(str(exc))
        source = f"the first and middle frames of the clips of {args.davis}"
    else:
        if not (args.data / "masks").is_dir():
            parser.error(f"{args.data} has no masks/ folder: give a 'motionprop synth' output with --data")
        found = objects(args.data, split_clips(args.data, args.split), args.min_area, args.limit)
        source = f"the {args.split} clips of {args.data}"
    if not found:
        parser.error(f"no object of at least {args.min_area} px in {args.data}")
    mean_area = float(np.mean([(labels == k).sum() for _, labels, k in found]))
    propagator = Propagator(model, working_size=args.working_size, precision=args.precision)
    scores: dict[str, list[float]] = {name: [] for name in ("cmp", "cmp+grabcut", "disc", "disc+grabcut", "flood")}
    areas: dict[str, list[float]] = {name: [] for name in scores}  # mask area / object area
    current = None
    touching = []  # objects that reach the image's border (border still points may fall on them)
    for frame, labels, index in found:
        truth = labels == index
        touching.append(bool(truth[0].any() or truth[-1].any() or truth[:, 0].any() or truth[:, -1].any()))
        click = interior_point(truth)
        negative = [interior_point(labels == 0)] if args.negative else []
        if frame != current:
            image = load_image(frame)
            propagator.set_image(image)
            current = frame
        result = annotate(propagator, [click], negative, velocity=args.velocity, threshold=args.threshold,
                          border_per_side=args.border_per_side)
        disc = disc_mask(truth.shape, click, mean_area)
        outside = ~disc_mask(truth.shape, click, 4 * mean_area) | click_discs(truth.shape, negative)
        masks = {"cmp": result.mask,
                 "cmp+grabcut": refine_mask(image, result.score, result.mask, np.array([click]),
                                            np.array(negative).reshape(-1, 2)),
                 "disc": disc,
                 "disc+grabcut": grabcut(image, disc, click_discs(truth.shape, [click]), outside),
                 "flood": flood_mask(image, click, args.flood_tol)}
        for name, mask in masks.items():
            scores[name].append(iou(mask, truth))
            areas[name].append(float(mask.sum() / truth.sum()))
    clicks = "1 positive + 1 negative click" if args.negative else "1 positive click"
    print(f"{len(found)} objects (>= {args.min_area} px, mean {mean_area:.0f} px) in {source}, {clicks}")
    for name, values in scores.items():
        values = np.array(values)
        print(f"  {name:12s} mean IoU {values.mean():.3f}   median {np.median(values):.3f}   "
              f"IoU > 0.5: {100 * (values > 0.5).mean():.0f} %   "
              f"median mask area / object area {np.median(areas[name]):.2f}")
    touching = np.array(touching)
    for name, group in (("touching the border", touching), ("inside the image", ~touching)):
        if group.any():
            print(f"  objects {name} ({group.sum()}): " + ", ".join(
                f"{method} {np.array(scores[method])[group].mean():.3f}" for method in ("cmp", "disc", "cmp+grabcut")))
    for method, baseline in (("cmp", "disc"), ("cmp+grabcut", "disc+grabcut")):
        difference = np.array(scores[method]) - np.array(scores[baseline])
        print(f"  {method} - {baseline} per object: mean {difference.mean():+.3f}, "
              f"better on {(difference > 0).sum()} of {len(difference)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
