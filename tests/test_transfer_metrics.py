"""J and F as davis2017-evaluation defines them: hand-made cases, and a cross-check against vos-benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from motionprop.evaluation.metrics import (boundary_f_measure, boundary_map, boundary_radius, disk, evaluated_frames,
                                           mean_scores, region_similarity, sequence_objects, sequence_scores)


def square(shape, top, left, size):
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_region_similarity_is_iou_and_one_when_both_empty():
    a = square((10, 10), 0, 0, 4)          # 16 px
    b = square((10, 10), 2, 2, 4)          # 16 px, overlap 2x2 = 4
    assert region_similarity(a, b) == pytest.approx(4 / 28)
    assert region_similarity(a, a) == 1.0
    empty = np.zeros((10, 10), bool)
    assert region_similarity(empty, empty) == 1.0
    assert region_similarity(a, empty) == 0.0


def test_region_similarity_ignores_void_pixels():
    gt = square((10, 10), 0, 0, 4)
    pred = gt | square((10, 10), 6, 6, 2)  # 4 extra pixels, all void
    void = square((10, 10), 6, 6, 2)
    assert region_similarity(pred, gt) == pytest.approx(16 / 20)
    assert region_similarity(pred, gt, void) == 1.0


def test_boundary_map_is_the_ring_offset_towards_the_origin():
    seg = square((6, 6), 1, 1, 3)          # rows/cols 1..3
    expected = np.zeros((6, 6), bool)
    expected[0:4, 0:4] = True
    expected[1:3, 1:3] = False             # interior of the 4x4 ring rows/cols 0..3
    assert np.array_equal(boundary_map(seg), expected)
    assert not boundary_map(np.zeros((5, 5), bool)).any()
    full = np.ones((4, 4), bool)
    assert not boundary_map(full).any()    # no transitions inside the image, the corner is never boundary


def test_disk_and_tolerance():
    assert np.array_equal(disk(1), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8))
    assert disk(2).sum() == 13
    assert boundary_radius((480, 854)) == 8       # ceil(0.008 * 979.7)
    assert boundary_radius((100, 100)) == 2       # ceil(1.13)
    assert boundary_radius((100, 100), threshold=3) == 3


def test_boundary_f_measure_cases():
    gt = square((100, 100), 20, 20, 40)
    assert boundary_f_measure(gt, gt) == 1.0
    assert boundary_f_measure(np.roll(gt, 2, axis=1), gt) == 1.0      # within the 2 px tolerance
    assert boundary_f_measure(np.roll(gt, 3, axis=1), gt) < 1.0
    far = square((100, 100), 70, 70, 10)
    assert boundary_f_measure(far, gt) == 0.0
    empty = np.zeros_like(gt)
    assert boundary_f_measure(empty, gt) == 0.0
    assert boundary_f_measure(gt, empty) == 0.0
    assert boundary_f_measure(empty, empty) == 1.0


def test_boundary_f_measure_by_hand_precision_and_recall():
    # gt: 40x40 square; prediction: the same square with its right 20 columns cut off (20 wide).
    gt = square((100, 100), 20, 20, 40)
    pred = np.zeros_like(gt)
    pred[20:60, 20:40] = True
    # Tolerance 2 px. Prediction boundary (ring of rows 19..59, cols 19..39): 2*21 + 2*39 = 120 px, of which the
    # right column (col 39, rows 20..58 not within 2 px of gt's boundary rows 19/59) -> rows 22..56 unmatched = 35 px.
    pb, gb = boundary_map(pred), boundary_map(gt)
    assert pb.sum() == 120 and gb.sum() == 160
    precision = (120 - 35) / 120
    # Gt boundary: its right column (col 59, 41 px incl. corners) and the top/bottom rows at cols 42..59 are farther
    # than 2 px from the prediction's boundary: cols 42..59 on rows 19 and 59 -> 18 * 2 = 36, col 59 rows 20..58 -> 39.
    recall = (160 - 36 - 39) / 160
    assert boundary_f_measure(pred, gt) == pytest.approx(2 * precision * recall / (precision + recall))


def test_boundary_f_measure_removes_void_before_the_boundaries():
    gt = square((100, 100), 20, 20, 40)
    pred = gt | square((100, 100), 70, 70, 10)
    void = square((100, 100), 65, 65, 20)
    assert boundary_f_measure(pred, gt) < 1.0
    assert boundary_f_measure(pred, gt, void) == 1.0


def test_sequence_scores_skip_first_and_last_frames_and_use_first_frame_objects():
    shape = (5, 30, 30)
    target = np.zeros(shape, np.uint8)
    target[:, 5:15, 5:15] = 1
    target[:, 18:25, 18:25] = 2
    pred = target.copy()
    pred[0] = 0                      # wrong first and last frames are not scored
    pred[-1] = 0
    scores = sequence_scores(pred, target)
    assert scores == {1: {"J": 1.0, "F": 1.0}, 2: {"J": 1.0, "F": 1.0}}
    pred[2][pred[2] == 2] = 0        # object 2 missed on one of the 3 scored frames
    scores = sequence_scores(pred, target)
    assert scores[1]["J"] == 1.0
    assert scores[2]["J"] == pytest.approx(2 / 3) and scores[2]["F"] == pytest.approx(2 / 3)
    assert list(evaluated_frames(5)) == [1, 2, 3]
    target[0, 0, 0] = 255
    assert sequence_objects(target) == [1, 2]
    assert mean_scores([{"J": 0.5, "F": 1.0}, {"J": 1.0, "F": 0.0}]) == {"J": 0.75, "F": 0.5, "JF": 0.625}


def random_blobs(rng, shape, num_objects):
    """Label map of overlapping random rectangles and discs (ids 1..num_objects)."""
    import cv2

    labels = np.zeros(shape, np.uint8)
    for obj in range(1, num_objects + 1):
        for _ in range(2):
            y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            if rng.random() < 0.5:
                cv2.circle(labels, (int(x), int(y)), int(rng.integers(3, 25)), obj, -1)
            else:
                h, w = rng.integers(3, 40, size=2)
                labels[y:y + h, x:x + w] = obj
    return labels


def test_matches_vos_benchmark_per_object_and_frame():
    evaluator_module = pytest.importorskip(
        "vos_benchmark.evaluator", reason="vos-benchmark is installed by .ci/run (pip install --no-deps vos-benchmark)")
    rng = np.random.default_rng(3)
    for shape in ((120, 200), (97, 131)):
        gt_frames = [random_blobs(rng, shape, 3) for _ in range(6)]
        pred_frames = []
        for gt in gt_frames:
            pred = np.roll(gt, int(rng.integers(-6, 7)), axis=int(rng.integers(0, 2))).copy()
            pred[rng.random(shape) < 0.01] = 0                     # speckles
            pred_frames.append(pred)
        evaluator = evaluator_module.Evaluator()
        for pred, gt in zip(pred_frames, gt_frames):
            evaluator.feed_frame(pred, gt)
        for obj in (1, 2, 3):
            ours_j = [region_similarity(p == obj, g == obj) for p, g in zip(pred_frames, gt_frames)]
            ours_f = [boundary_f_measure(p == obj, g == obj) for p, g in zip(pred_frames, gt_frames)]
            theirs_j = evaluator.object_iou[obj][-len(gt_frames):]
            theirs_f = evaluator.boundary_f[obj][-len(gt_frames):]
            np.testing.assert_allclose(ours_j, theirs_j, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(ours_f, theirs_f, rtol=1e-12, atol=1e-12)
            assert 0.0 < np.mean(ours_f) < 1.0                    # a case where the two could disagree
