"""Tests of motionprop.data.guidance.

The comparisons with the original use the reference port in
``benchmarks/bench_guidance.py`` (loaded with importlib, so there is one port,
not two copies that could drift apart).
"""

from __future__ import annotations

import numpy as np
import pytest

from motionprop.data.guidance import (
    STRATEGIES,
    gradnms_points,
    grid_points,
    guidance_points,
    make_sparse_input,
    sample_guidance,
    watershed_points,
)
from motionprop.errors import InputError

@pytest.fixture
def reference(load_benchmark):
    """The benchmark module holding the port of the original sampler."""
    return load_benchmark("bench_guidance")


def random_flow(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise flow: motion edges everywhere, many local maxima."""
    return np.random.default_rng(seed).normal(0, 3, (height, width, 2)).astype(np.float32)


def square_object_flow(size: int = 129, half: int = 32) -> np.ndarray:
    """Still background with a moving square of side 2*half+1 centred in the frame."""
    flow = np.zeros((size, size, 2), np.float32)
    c = size // 2
    flow[c - half:c + half + 1, c - half:c + half + 1] = (4.0, 1.0)
    return flow


def band_flow(height: int = 200, width: int = 128, left: int = 40, right: int = 88) -> np.ndarray:
    """Two regions: a vertical band [left, right) moving right, the rest moving down-left."""
    flow = np.empty((height, width, 2), np.float32)
    flow[:] = (-2.0, 1.0)
    flow[:, left:right] = (3.0, 0.0)
    return flow


def point_set(rows: np.ndarray, cols: np.ndarray) -> set[tuple[int, int]]:
    """Points as a set of (row, col), to compare regardless of order."""
    return set(zip(rows.tolist(), cols.tolist()))


# ---------------------------------------------------------------- grid, uniform, single, full, user points


def test_grid_stride_and_centred_positions():
    rows, cols = grid_points(100, 130, bg_ratio=1 / 400)  # stride 20
    assert sorted(set(rows.tolist())) == [0, 20, 40, 60, 80]  # 100 = 5 * 20: no margin
    assert sorted(set(cols.tolist())) == [5, 25, 45, 65, 85, 105, 125]  # 130 - 120 = 10: 5 each side
    assert len(rows) == 5 * 7


def test_grid_in_sample_guidance_puts_flow_exactly_there():
    flow = random_flow(384, 384)
    sparse, mask = sample_guidance(flow, "grid", bg_ratio=1 / 6400, rng=np.random.default_rng(0))
    assert sparse.dtype == np.float32 and mask.dtype == bool
    expected = np.zeros_like(mask)
    expected[32::80, 32::80] = True  # stride 80, (384 - 320) / 2 = 32
    assert np.array_equal(mask, expected)
    assert np.array_equal(sparse[mask], flow[mask]) and (sparse[~mask] == 0).all()


def test_uniform_draws_bg_ratio_times_area_points():
    flow = random_flow(60, 80)
    rows, cols = guidance_points(flow, ["uniform"], 0.01, 15, np.random.default_rng(3))
    assert len(rows) == int(0.01 * 60 * 80)
    assert rows.min() >= 0 and rows.max() < 60 and cols.min() >= 0 and cols.max() < 80


def test_single_picks_one_moving_pixel():
    flow = np.zeros((30, 40, 2), np.float32)
    flow[7, 9] = (0.0, 2.0)
    flow[20, 30] = (1.0, 0.0)
    for seed in range(5):
        _, mask = sample_guidance(flow, ["single"], rng=np.random.default_rng(seed))
        assert mask.sum() == 1 and (mask[7, 9] or mask[20, 30])


def test_single_on_a_still_flow_still_gives_one_point():
    _, mask = sample_guidance(np.zeros((10, 12, 2), np.float32), ["single"], rng=np.random.default_rng(0))
    assert mask.sum() == 1


def test_full_gives_the_dense_flow():
    flow = random_flow(20, 30)
    sparse, mask = sample_guidance(flow, ["full", "grid"])
    assert mask.all() and np.array_equal(sparse, flow)


def test_user_points_are_returned_exactly():
    flow = random_flow(50, 70)
    points = np.array([[0, 0], [69, 49], [10, 3], [33, 21]])  # (x, y)
    sparse, mask = sample_guidance(flow, (), points=points, rng=np.random.default_rng(0))
    assert point_set(*np.nonzero(mask)) == {(0, 0), (49, 69), (3, 10), (21, 33)}
    assert np.array_equal(sparse[mask], flow[mask])


def test_user_points_add_to_the_strategies():
    flow = random_flow(100, 130)
    _, grid_only = sample_guidance(flow, "grid", bg_ratio=1 / 400)
    _, both = sample_guidance(flow, "grid", bg_ratio=1 / 400, points=np.array([[7, 3]]))
    assert both.sum() == grid_only.sum() + 1 and both[3, 7]


@pytest.mark.parametrize("points", [np.array([[70, 0]]), np.array([[0, -1]]), np.array([1, 2]),
                                    np.array([[1.5, 2.0]])])
def test_bad_user_points_are_rejected(points):
    with pytest.raises(InputError, match="point"):
        sample_guidance(random_flow(50, 70), (), points=points)


# ---------------------------------------------------------------- watershed


def test_watershed_finds_the_centre_of_a_square_object():
    rows, cols = watershed_points(square_object_flow(), nms_ks=15, rng=np.random.default_rng(0))
    # Outside the square the distance grows towards the frame's corners, whose maxima
    # are on the border and removed: the only point is the object's centre.
    assert point_set(rows, cols) == {(64, 64)}


def test_watershed_points_lie_on_the_middle_of_a_band_far_from_its_edges():
    rows, cols = watershed_points(band_flow(), nms_ks=15, rng=np.random.default_rng(0))
    # Edges are columns 39-40 and 87-88; the ridge of the distance is columns 63-64, 23 px from both.
    assert len(rows) >= 1
    assert np.all((cols == 63) | (cols == 64))


def test_near_duplicates_along_a_ridge_are_removed_like_the_original(reference):
    """The original's pairwise removal collapses a long plateau ridge to very few points; keep that."""
    flow = band_flow()
    for seed in range(3):
        rows, cols = watershed_points(flow, 15, np.random.default_rng(seed))
        theirs = reference.reference_watershed_points(flow, 15, np.random.default_rng(seed))
        assert point_set(rows, cols) == point_set(*theirs)
        close = (np.abs(rows[:, None] - rows[None, :]) < 7) & (np.abs(cols[:, None] - cols[None, :]) < 7)
        assert close.sum() == len(rows)  # no two survivors closer than (nms_ks - 1) / 2 (only self-pairs)


def test_watershed_of_a_flow_without_motion_edges_is_empty(reference):
    still = np.full((64, 64, 2), 2.5, np.float32)
    assert len(watershed_points(still, 15, np.random.default_rng(0))[0]) == 0
    assert len(reference.reference_watershed_points(still, 15, np.random.default_rng(0))[0]) == 0


def test_watershed_is_deterministic_for_a_seed_and_uses_the_rng():
    flow = random_flow(120, 160)  # noise: many near-duplicate maxima to choose from
    runs = [point_set(*watershed_points(flow, 15, np.random.default_rng(seed))) for seed in (1, 1, 2, 3, 4)]
    assert runs[0] == runs[1]
    assert len({frozenset(r) for r in runs}) > 1  # the near-duplicate removal is random


def test_sample_guidance_is_deterministic_for_a_seed(reference):
    flow = reference.piecewise_affine_flow(128, 160, np.random.default_rng(5))
    a = sample_guidance(flow, ("grid", "watershed"), 1 / 400, 15, 20, rng=np.random.default_rng(9))
    b = sample_guidance(flow, ("grid", "watershed"), 1 / 400, 15, 20, rng=np.random.default_rng(9))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("max_num_guide", [0, 1, 7, 10_000])
def test_max_num_guide_is_honoured(max_num_guide):
    flow = random_flow(120, 160)
    everything = sample_guidance(flow, ("grid", "watershed"), 1 / 100, 15, -1, rng=np.random.default_rng(0))[1].sum()
    assert everything > 7
    _, mask = sample_guidance(flow, ("grid", "watershed"), 1 / 100, 15, max_num_guide, rng=np.random.default_rng(0))
    assert mask.sum() == min(max_num_guide, everything)


# ---------------------------------------------------------------- agreement with the original


def synthetic_flows(reference, count: int = 6, size: int = 192) -> list[np.ndarray]:
    """Piecewise-affine flows from the benchmark, fixed seed."""
    rng = np.random.default_rng(2024)
    return [reference.piecewise_affine_flow(size, size, rng) for _ in range(count)]


@pytest.mark.parametrize("nms_ks", [15, 41])
def test_watershed_gives_the_reference_points_for_the_same_seed(reference, nms_ks):
    for k, flow in enumerate(synthetic_flows(reference)):
        ours = watershed_points(flow, nms_ks, np.random.default_rng(k))
        theirs = reference.reference_watershed_points(flow, nms_ks, np.random.default_rng(k))
        assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_watershed_statistics_match_the_reference(reference):
    """Count of points and their distance from motion edges, averaged over flows and seeds."""
    ours_n, theirs_n, ours_d, theirs_d = [], [], [], []
    for k, flow in enumerate(synthetic_flows(reference)):
        for seed in range(3):
            o = watershed_points(flow, 15, np.random.default_rng([k, seed]))
            t = reference.reference_watershed_points(flow, 15, np.random.default_rng([k, seed + 100]))
            ours_n.append(len(o[0]))
            theirs_n.append(len(t[0]))
            ours_d.extend(reference.edge_distance(flow, *o))
            theirs_d.extend(reference.edge_distance(flow, *t))
    assert np.mean(theirs_n) > 2
    assert np.mean(ours_n) == pytest.approx(np.mean(theirs_n), rel=0.15)
    assert np.mean(ours_d) == pytest.approx(np.mean(theirs_d), rel=0.1)
    assert min(ours_d) >= 1  # never on a motion edge


@pytest.mark.parametrize("strategy", [("grid", "watershed"), ("uniform", "watershed", "single")])
def test_whole_sampler_equals_the_reference_for_the_same_seed(reference, strategy):
    for k, flow in enumerate(synthetic_flows(reference, count=3)):
        everything = len(guidance_points(flow, strategy, 1 / 400, 15, np.random.default_rng(k))[0])
        cap = everything // 2  # a cap that drops points, so their order and the random stream matter
        ours = sample_guidance(flow, strategy, 1 / 400, 15, cap, rng=np.random.default_rng(k))
        theirs = reference.reference_flow_sampler(flow, strategy, 1 / 400, 15, cap, rng=np.random.default_rng(k))
        assert ours[1].sum() > 0
        assert np.array_equal(ours[1], theirs[1][:, :, 0] == 1)
        assert np.array_equal(ours[0], theirs[0])


def test_large_frames_are_analysed_subsampled_like_the_original(reference):
    flow = reference.piecewise_affine_flow(500, 900, np.random.default_rng(7))  # step 900 // 400 = 2
    ours = watershed_points(flow, 15, np.random.default_rng(0))
    theirs = reference.reference_watershed_points(flow, 15, np.random.default_rng(0))
    assert len(ours[0]) > 0 and (ours[0] % 2 == 0).all() and (ours[1] % 2 == 0).all()
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_gradnms_matches_the_reference(reference):
    flow = reference.piecewise_affine_flow(192, 256, np.random.default_rng(11))
    ours = point_set(*gradnms_points(flow, 15))
    theirs = point_set(*reference.reference_gradnms_points(flow, 15))
    assert len(theirs) > 3
    assert len(ours & theirs) >= 0.95 * max(len(ours), len(theirs))  # float rounding at the 0.1 threshold


def test_watershed_on_real_sintel_flow_equals_the_reference(reference, shared_data):
    flows = reference.sintel_crops(shared_data, size=192, short_side=208)[:6]
    for k, flow in enumerate(flows):
        ours = watershed_points(flow, 15, np.random.default_rng(k))
        theirs = reference.reference_watershed_points(flow, 15, np.random.default_rng(k))
        assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


# ---------------------------------------------------------------- unknown flow, network input, errors


def test_unknown_flow_is_never_sampled():
    flow = random_flow(100, 130)
    flow[:, :50] = np.nan
    sparse, mask = sample_guidance(flow, ("grid", "watershed", "uniform"), 1 / 100, 15,
                                   rng=np.random.default_rng(0))
    assert mask.any() and not mask[:, :50].any()
    assert np.isfinite(sparse).all()
    dense, known = sample_guidance(flow, "full")
    assert np.array_equal(known, np.isfinite(flow).all(-1)) and np.isfinite(dense).all()


def test_make_sparse_input_stacks_flow_and_mask_twice():
    flow = random_flow(12, 16)
    sparse, mask = sample_guidance(flow, "grid", bg_ratio=1 / 16)
    net_input = make_sparse_input(sparse, mask)
    assert net_input.shape == (4, 12, 16) and net_input.dtype == np.float32
    assert np.array_equal(net_input[0], sparse[:, :, 0]) and np.array_equal(net_input[1], sparse[:, :, 1])
    assert np.array_equal(net_input[2], mask.astype(np.float32)) and np.array_equal(net_input[3], net_input[2])


def test_make_sparse_input_rejects_mismatched_mask():
    with pytest.raises(InputError, match="mask"):
        make_sparse_input(np.zeros((4, 5, 2)), np.zeros((5, 4), bool))


def test_bad_strategy_name_lists_the_valid_ones():
    with pytest.raises(InputError) as error:
        sample_guidance(random_flow(10, 10), ("grid", "watershedd"))
    message = str(error.value)
    assert "'watershedd'" in message
    assert all(name in message for name in STRATEGIES)


@pytest.mark.parametrize("kwargs, match", [
    ({"nms_ks": 14}, "nms_ks"),
    ({"nms_ks": 0}, "nms_ks"),
    ({"max_num_guide": -2}, "max_num_guide"),
    ({"bg_ratio": 0.0}, "bg_ratio"),
    ({"bg_ratio": 1.5}, "bg_ratio"),
])
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(InputError, match=match):
        sample_guidance(random_flow(20, 20), ("grid", "watershed"), **kwargs)


def test_bad_flow_shape_is_rejected():
    with pytest.raises(InputError, match=r"\(H, W, 2\)"):
        sample_guidance(np.zeros((2, 20, 20), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_watershed_ties_do_not_depend_on_opencv_float_rounding(reference, shared_data, threads):
    """OpenCV's float32 distances differ by an ulp between some equally far pixels (depending on
    its thread count); maxima must still be found as with exact distances."""
    import cv2

    flows = reference.sintel_crops(shared_data)  # 384 x 384 crops: two of them have such ties
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        for k in (5, 8):
            ours = watershed_points(flows[k], 15, np.random.default_rng(k))
            theirs = reference.reference_watershed_points(flows[k], 15, np.random.default_rng(k))
            assert point_set(*ours) == point_set(*theirs)
    finally:
        cv2.setNumThreads(previous)


def test_any_density_sampler_mixes_dense_grids_and_log_uniform_point_counts():
    from motionprop.data.guidance import grid_points, sample_guidance_any_density, watershed_points

    flow = square_object_flow(size=129, half=32)
    grid_count = len(grid_points(129, 129, 1 / 20 ** 2)[0])
    counts, dense = [], 0
    for seed in range(300):
        _, mask = sample_guidance_any_density(flow, np.random.default_rng(seed), nms_ks=15, dense_prob=0.25,
                                              dense_grid=20, max_sparse=64)
        count = int(mask.sum())
        if count >= grid_count:
            dense += 1
        else:
            counts.append(count)
    assert 0.15 < dense / 300 < 0.35
    assert min(counts) >= 1 and max(counts) <= 64
    assert np.mean(np.array(counts) <= 8) > 0.4  # log-uniform: small counts are common


def test_any_density_sampler_takes_watershed_points_first_and_is_seeded():
    from motionprop.data.guidance import sample_guidance_any_density, watershed_points

    flow = square_object_flow(size=129, half=32)
    centre = point_set(*watershed_points(flow, 15, np.random.default_rng(0)))
    for seed in range(20):
        args = dict(nms_ks=15, dense_prob=0.0, dense_grid=20, max_sparse=1)
        sparse, mask = sample_guidance_any_density(flow, np.random.default_rng(seed), **args)
        assert mask.sum() == 1 and point_set(*np.nonzero(mask)) <= centre
        again, _ = sample_guidance_any_density(flow, np.random.default_rng(seed), **args)
        assert np.array_equal(sparse, again)


def test_any_density_sampler_never_samples_unknown_flow():
    from motionprop.data.guidance import sample_guidance_any_density

    flow = square_object_flow(size=129, half=32)
    flow[:, :64] = np.nan
    for seed in range(10):
        sparse, mask = sample_guidance_any_density(flow, np.random.default_rng(seed), dense_prob=1.0)
        assert mask.any() and not mask[:, :64].any() and np.isfinite(sparse).all()
