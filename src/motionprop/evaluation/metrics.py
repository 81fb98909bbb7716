"""DAVIS video-segmentation metrics: region similarity J and boundary F-measure.

Definitions follow davisvideochallenge/davis2017-evaluation (``davis2017/metrics.py``):
J is the intersection over union of two binary masks (1 when both are empty);
F compares 1-pixel boundaries, each dilated by a disk of radius
ceil(0.008 x image diagonal), as precision/recall of boundary pixels. Void
pixels (label 255) are left out of both. A sequence's score for one object is
the mean over its frames, the first and the last frame excluded (the first is
given; the last is excluded by the DAVIS semi-supervised protocol).

Every function here is pure numpy (and OpenCV for the dilation), on arrays the
caller has already read.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

VOID_LABEL = 255
BOUNDARY_THRESHOLD = 0.008


def region_similarity(prediction: np.ndarray, target: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: |P & G| / |P | G| over non-void pixels of two binary (H, W) masks; 1.0 when the union is empty."""
    prediction, target = np.asarray(prediction, bool), np.asarray(target, bool)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    keep = np.ones_like(target) if void is None else ~np.asarray(void, bool)
    inter = np.count_nonzero(prediction & target & keep)
    union = np.count_nonzero((prediction | target) & keep)
    return 1.0 if union == 0 else inter / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary of a binary (H, W) mask, offset half a pixel towards the origin (DAVIS ``seg2bmap``).

    A pixel is on the boundary when it differs from its right, lower or
    lower-right neighbour; the last row and column compare only along the
    edge, and the bottom-right corner is never a boundary.
    """
    seg = np.asarray(mask, bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """uint8 (2r+1, 2r+1) disk: the pixels with x^2 + y^2 <= r^2 (scikit-image's ``morphology.disk``)."""
    r = int(radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def boundary_radius(shape: tuple[int, int], threshold: float = BOUNDARY_THRESHOLD) -> int:
    """Tolerance in pixels: ``threshold`` itself if >= 1, else ceil(threshold x image diagonal)."""
    if threshold >= 1:
        return int(threshold)
    return int(math.ceil(threshold * math.hypot(shape[0], shape[1])))


def boundary_f_measure(prediction: np.ndarray, target: np.ndarray, void: np.ndarray | None = None,
                       threshold: float = BOUNDARY_THRESHOLD) -> float:
    """F: harmonic mean of boundary precision and recall of two binary (H, W) masks, void pixels removed.

    A boundary pixel of one mask matches when the other's boundary, dilated by
    a disk of :func:`boundary_radius`, covers it. Empty boundaries: both empty
    -> 1; only one empty -> 0 (precision or recall 0).
    """
    prediction, target = np.asarray(prediction, bool), np.asarray(target, bool)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    if void is not None:
        keep = ~np.asarray(void, bool)
        prediction, target = prediction & keep, target & keep
    pred_boundary = boundary_map(prediction)
    gt_boundary = boundary_map(target)
    kernel = disk(boundary_radius(prediction.shape, threshold))
    pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    n_pred, n_gt = np.count_nonzero(pred_boundary), np.count_nonzero(gt_boundary)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = np.count_nonzero(pred_boundary & gt_dilated) / n_pred
    recall = np.count_nonzero(gt_boundary & pred_dilated) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def evaluated_frames(num_frames: int) -> range:
    """Indices of the frames DAVIS scores: all but the first and the last (all of them if fewer than 3)."""
    return range(1, num_frames - 1) if num_frames >= 3 else range(num_frames)


def sequence_scores(prediction: np.ndarray, target: np.ndarray, object_ids: list[int] | None = None
                    ) -> dict[int, dict[str, float]]:
    """Per-object mean J and F of one sequence: {object id: {"J": .., "F": ..}}.

    ``prediction`` and ``target`` are (T, H, W) integer label maps (0 =
    background, 1..K objects; label 255 in ``target`` is void). Objects default
    to the ids of the first target frame, as DAVIS does; the first and last
    frames are not scored (:func:`evaluated_frames`).
    """
    prediction, target = np.asarray(prediction), np.asarray(target)
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} must be equal (T, H, W)")
    if object_ids is None:
        object_ids = sequence_objects(target)
    scores = {}
    frames = evaluated_frames(len(target))
    for obj in object_ids:
        js, fs = [], []
        for t in frames:
            void = target[t] == VOID_LABEL
            pred, gt = prediction[t] == obj, target[t] == obj
            js.append(region_similarity(pred, gt, void))
            fs.append(boundary_f_measure(pred, gt, void))
        scores[int(obj)] = {"J": float(np.mean(js)), "F": float(np.mean(fs))}
    return scores


def sequence_objects(target: np.ndarray) -> list[int]:
    """Object ids of a (T, H, W) label sequence: those in its first frame, void and background left out."""
    ids = np.unique(np.asarray(target)[0])
    return [int(i) for i in ids if i != 0 and i != VOID_LABEL]


def mean_scores(per_object: list[dict[str, float]]) -> dict[str, float]:
    """Mean J, F and their mean JF over a list of {"J", "F"} (objects, or clips)."""
    if not per_object:
        raise ValueError("no scores to average")
    j = float(np.mean([s["J"] for s in per_object]))
    f = float(np.mean([s["F"] for s in per_object]))
    return {"J": j, "F": f, "JF": (j + f) / 2}
