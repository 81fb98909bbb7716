"""The geodesic IDW fill (models/geodesic.py) and models whose residual base it is."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
import torch

from motionprop import create_model
from motionprop.apps.propagate import Propagator
from motionprop.baselines import idw_fill
from motionprop.config import Config, ModelConfig
from motionprop.errors import ConfigError, InputError
from motionprop.models.geodesic import edge_cost, geodesic_distances, geodesic_idw, geodesic_point_distances

from test_guidance_encoding import SMALL, _zero_last_layer, random_sparse


def dijkstra(cost: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Exact 8-neighbour geodesic distances: a step costs its length times the mean cost of its ends."""
    height, width = cost.shape
    distance = np.full((height, width), math.inf)
    distance[start] = 0.0
    queue = [(0.0, *start)]
    while queue:
        d, y, x = heapq.heappop(queue)
        if d > distance[y, x]:
            continue
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy or dx) and 0 <= yy < height and 0 <= xx < width:
                    nd = d + math.hypot(dy, dx) * 0.5 * (cost[y, x] + cost[yy, xx])
                    if nd < distance[yy, xx]:
                        distance[yy, xx] = nd
                        heapq.heappush(queue, (nd, yy, xx))
    return distance


def test_sweeps_converge_to_the_exact_geodesic_distance_and_one_round_never_underestimates():
    rng = np.random.default_rng(0)
    cost = 1 + 5 * rng.random((13, 17))
    starts = [(3, 4), (12, 0), (0, 16)]
    seeds = torch.zeros(1, 3, 13, 17, dtype=torch.bool)
    for k, (y, x) in enumerate(starts):
        seeds[0, k, y, x] = True
    exact = np.stack([dijkstra(cost, s) for s in starts])
    torch_cost = torch.from_numpy(cost).float()[None, None]
    converged = geodesic_distances(torch_cost, seeds, rounds=4)[0].numpy()
    np.testing.assert_allclose(converged, exact, rtol=1e-5, atol=1e-4)
    one = geodesic_distances(torch_cost, seeds, rounds=1)[0].numpy()
    assert (one >= exact - 1e-4).all()  # a sweep only ever finds real paths
    assert np.abs(one / np.maximum(exact, 1) - 1).mean() < 0.05


def test_a_seedless_channel_stays_infinite():
    seeds = torch.zeros(1, 2, 9, 9, dtype=torch.bool)
    seeds[0, 0, 4, 4] = True
    distance = geodesic_distances(torch.ones(1, 1, 9, 9), seeds)
    assert torch.isinf(distance[0, 1]).all() and torch.isfinite(distance[0, 0]).all()


@pytest.mark.parametrize("cells", [64, 13])  # stride 1, and a coarse grid of stride 3
def test_without_edge_weight_the_geodesic_fill_is_plain_idw(cells):
    sparse = random_sparse(batch=3, size=(40, 56), points=9)
    sparse[2] = 0  # an image without guidance
    fill = geodesic_idw(sparse, edge_cost(torch.rand(3, 3, 40, 56), weight=0.0), power=4.0, cells=cells)
    torch.testing.assert_close(fill, idw_fill(sparse, power=4.0), atol=1e-4, rtol=0)
    assert (fill[2] == 0).all()


def test_an_edge_keeps_each_side_with_its_own_point():
    """Left half dark, right half bright; one point on each side, 20 px from the edge, moving apart."""
    height, width, edge = 48, 64, 32
    image = torch.zeros(1, 3, height, width)
    image[..., edge:] = 1.0
    sparse = torch.zeros(1, 4, height, width)
    sparse[0, :, 24, edge - 20] = torch.tensor([-5.0, 0.0, 1.0, 1.0])
    sparse[0, :, 24, edge + 20] = torch.tensor([5.0, 0.0, 1.0, 1.0])
    plain = idw_fill(sparse, power=4.0)
    geodesic = geodesic_idw(sparse, edge_cost(image, weight=40.0), power=4.0, cells=16)
    # Pixels 5 px from the edge (outside its blur): plain IDW mixes both points, the geodesic fill follows its side.
    for y, x in [(24, edge - 5), (5, edge - 5)]:
        assert geodesic[0, 0, y, x] < -4.5 and plain[0, 0, y, x] > -4.0
    assert geodesic[0, 0, 24, edge + 5] > 4.5 > plain[0, 0, 24, edge + 5]
    assert (geodesic[0, :, 24, edge - 20] == torch.tensor([-5.0, 0.0])).all()  # guided pixels exact
    assert (geodesic[0, :, 24, edge + 20] == torch.tensor([5.0, 0.0])).all()


def test_many_points_are_weighted_in_blocks_as_in_one():
    sparse = random_sparse(batch=1, size=(32, 40), points=40, seed=3)
    cost = edge_cost(torch.rand(1, 3, 32, 40), weight=20.0)
    import motionprop.models.geodesic as geodesic

    blocked = geodesic_idw(sparse, cost, power=4.0, cells=16)
    block, geodesic._POINTS_PER_BLOCK = geodesic._POINTS_PER_BLOCK, 1000
    try:
        whole = geodesic_idw(sparse, cost, power=4.0, cells=16)
    finally:
        geodesic._POINTS_PER_BLOCK = block
    torch.testing.assert_close(blocked, whole, atol=1e-4, rtol=1e-4)


def test_the_colour_term_pulls_pixels_to_the_point_of_their_colour():
    """A red square on grey, apart from both points: its pixels follow the point on red, wherever they are."""
    image = torch.full((1, 3, 48, 64), 0.5)
    image[0, :, 4:14, 4:14] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # the far square
    image[0, :, 30:40, 30:40] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # the square the red point is on
    sparse = torch.zeros(1, 4, 48, 64)
    sparse[0, :, 35, 35] = torch.tensor([6.0, 0.0, 1.0, 1.0])  # on red
    sparse[0, :, 12, 24] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # a still point on grey, nearer the far square
    cost = edge_cost(image, weight=0.0)
    plain = geodesic_idw(sparse, cost, power=4.0, cells=16)
    off = geodesic_idw(sparse, cost, power=4.0, cells=16, colour=image, colour_sigma=0.0)
    coloured = geodesic_idw(sparse, cost, power=4.0, cells=16, colour=image, colour_sigma=0.2)
    assert torch.equal(off, plain)
    assert plain[0, 0, 8, 8] < 1.0 and coloured[0, 0, 8, 8] > 5.5
    assert coloured[0, 0, 8, 40] < 0.1  # grey far from both: the still point's
    assert torch.isfinite(coloured).all()
    assert (coloured[0, :, 35, 35] == torch.tensor([6.0, 0.0])).all()


def test_bench_fills_feature_map_keeps_the_distances_of_features_that_span_few_directions(load_benchmark):
    """Features with two values (left/right half) are rank 1 once centred: the 32 principal components keep
    their distance exactly, and the map is upsampled to the image."""
    from motionprop.evaluation.encoders import FrozenEncoder

    bench = load_benchmark("bench_fills")
    a, b = torch.nn.functional.normalize(torch.randn(2, 64), dim=1)

    class Halves(torch.nn.Module):
        def forward(self, image):
            out = torch.empty(image.shape[0], 64, image.shape[2] // 8, image.shape[3] // 8)
            half = out.shape[3] // 2
            out[..., :half] = a[:, None, None]
            out[..., half:] = b[:, None, None]
            return out

    encoder = FrozenEncoder(Halves(), "test", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "test", "test")
    feats = bench.feature_map(encoder, np.zeros((32, 64, 3), np.uint8))
    assert feats.shape[-2:] == (32, 64)
    distance = (feats[0, :, 16, 2] - feats[0, :, 16, 61]).square().sum()
    assert float(distance) == pytest.approx(float((a - b).square().sum()), rel=1e-4)
    assert float((feats[0, :, 3, 2] - feats[0, :, 28, 10]).abs().max()) < 1e-5


def _striped_image(height: int = 48, width: int = 64) -> np.ndarray:
    """RGB uint8 with a bright vertical band: an edge the geodesic fills see."""
    image = np.full((height, width, 3), 40, np.uint8)
    image[:, width // 3: width // 2] = 220
    return image


def test_point_distances_are_the_ones_geodesic_idw_weights():
    sparse = random_sparse(batch=2, size=(40, 56), points=7)
    image = torch.from_numpy(_striped_image(40, 56)).permute(2, 0, 1)[None].float() / 255
    cost = edge_cost(image, 40.0)
    fill = geodesic_idw(sparse, cost, power=4.0)
    for b, (gy, gx, distances) in enumerate(geodesic_point_distances(sparse, cost)):
        assert distances.shape == (gy.numel(), 40, 56)
        assert torch.allclose(distances[torch.arange(gy.numel()), gy, gx], torch.zeros(gy.numel()), atol=1e-4)
        weights = distances.clamp_min(1e-3).pow(-4.0)
        expected = torch.einsum("khw,ck->chw", weights, sparse[b, :2, gy, gx]) / weights.sum(0)
        expected[:, gy, gx] = sparse[b, :2, gy, gx]
        assert torch.allclose(fill[b], expected, atol=1e-4)



@pytest.mark.parametrize("shares", ["border", "area", "connectivity"])
def test_the_dominant_motion_prior_is_the_share_weighted_mean_vector_at_its_distance(shares):
    """The definition, computed from the point distances: a virtual point D away carrying the mean guidance
    vector weighted by each point's geodesic Voronoi cell (its pixels on the image border, all of them, or the
    border pixels over the square root of all); blocks of points give the same as one block."""
    import motionprop.models.geodesic as geodesic

    sparse = random_sparse(batch=2, size=(40, 56), points=9, seed=5)
    image = torch.from_numpy(_striped_image(40, 56)).permute(2, 0, 1)[None].float() / 255
    cost = edge_cost(image, 40.0)
    block, geodesic._POINTS_PER_BLOCK = geodesic._POINTS_PER_BLOCK, 4  # cells owned across blocks
    try:
        fill = geodesic_idw(sparse, cost, power=4.0, prior_distance=30.0, prior_weights=shares)
    finally:
        geodesic._POINTS_PER_BLOCK = block
    for b, (gy, gx, distances) in enumerate(geodesic_point_distances(sparse, cost)):
        vectors = sparse[b, :2, gy, gx]
        owner = distances.argmin(0)
        ring = torch.cat([owner[0], owner[-1], owner[1:-1, 0], owner[1:-1, -1]])
        on_border = torch.bincount(ring, minlength=gy.numel()).float()
        area = torch.bincount(owner.flatten(), minlength=gy.numel()).float()
        share = {"border": on_border, "area": area, "connectivity": on_border / area.clamp_min(1).sqrt()}[shares]
        dominant = vectors @ (share / share.sum())
        weights = distances.clamp_min(1e-3).pow(-4.0)
        expected = ((torch.einsum("khw,ck->chw", weights, vectors) + 30.0 ** -4 * dominant[:, None, None])
                    / (weights.sum(0) + 30.0 ** -4))
        expected[:, gy, gx] = vectors
        assert torch.allclose(fill[b], expected, atol=1e-4)
    assert (fill - geodesic_idw(sparse, cost, power=4.0)).abs().max() > 0.1  # the prior moved something


def _object_among_still_corners() -> torch.Tensor:
    """(1,4,64,64): one arrow (5, 0) in the middle, a still point near each corner (they hold the whole border)."""
    sparse = torch.zeros(1, 4, 64, 64)
    sparse[0, :, 32, 32] = torch.tensor([5.0, 0.0, 1.0, 1.0])
    for y, x in ((4, 4), (4, 59), (59, 4), (59, 59)):
        sparse[0, 2:, y, x] = 1.0
    return sparse


def test_the_dominant_motion_is_that_of_the_points_holding_the_border():
    """Where the prior outweighs every point (D = 1 px), pixels away from the points take the dominant motion:
    the corners' stillness with border shares, the arrow's share of the area with area shares."""
    sparse, cost = _object_among_still_corners(), torch.ones(1, 1, 64, 64)
    away = torch.ones(64, 64, dtype=torch.bool)
    for y, x in ((32, 32), (4, 4), (4, 59), (59, 4), (59, 59)):
        away[max(0, y - 6):y + 7, max(0, x - 6):x + 7] = False
    border = geodesic_idw(sparse, cost, power=4.0, prior_distance=1.0)[0]
    area = geodesic_idw(sparse, cost, power=4.0, prior_distance=1.0, prior_weights="area")[0]
    assert float(border[0][away].abs().max()) < 0.05
    assert 0.5 < float(area[0][away].median()) < 2.5   # 5 x the middle point's share of the area
    torch.testing.assert_close(border[:, 32, 32], torch.tensor([5.0, 0.0]))  # guided pixels stay exact
    with pytest.raises(ValueError, match="prior_weights"):
        geodesic_idw(sparse, cost, power=4.0, prior_distance=1.0, prior_weights="corners")


def test_connectivity_discounts_an_object_that_reaches_the_border_from_inside():
    """A wide object (a bright band, half the frame, from top to bottom edge) holds 120 border pixels of 3600; a
    still point on each side of it. By border pixels the object's arrow gives the dominant motion about a third of
    its vector; by boundary connectivity (border / sqrt(area)) the still scenery, which touches the border more
    for its size, outweighs it more."""
    height, width = 60, 120
    image = torch.zeros(1, 3, height, width)
    image[..., :, 12:72] = 1.0
    cost = edge_cost(image, 40.0)
    sparse = torch.zeros(1, 4, height, width)
    sparse[0, :, 30, 42] = torch.tensor([9.0, 0.0, 1.0, 1.0])   # the object moves
    for y, x in ((30, 5), (30, 105), (8, 95), (52, 95)):       # the scenery is still
        sparse[0, 2:, y, x] = 1.0
    border = geodesic_idw(sparse, cost, power=4.0, prior_distance=1.0, prior_weights="border")
    connected = geodesic_idw(sparse, cost, power=4.0, prior_distance=1.0, prior_weights="connectivity")
    by_border, by_connectivity = float(border[0, 0].median()), float(connected[0, 0].median())
    assert by_border > 2.5                       # (measured 2.98)
    assert by_connectivity < 0.7 * by_border     # (measured 1.78)
    torch.testing.assert_close(connected[0, :, 30, 42], torch.tensor([9.0, 0.0]))  # guided pixels stay exact


def test_far_from_its_points_the_fill_takes_the_motion_of_the_largest_region():
    """Area shares: three arrows on an object at the left edge and one still point beside it, which is nearest
    to most of the frame: far to the right the prior keeps the frame still, where plain IDW drags it along."""
    sparse = torch.zeros(1, 4, 48, 160)
    sparse[0, :, 24, 30] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # still; its cell is x >= 17, 89 % of the frame
    for y in (8, 24, 40):
        sparse[0, :, y, 4] = torch.tensor([8.0, 0.0, 1.0, 1.0])
    cost = torch.ones(1, 1, 48, 160)
    plain = geodesic_idw(sparse, cost, power=4.0)[0, 0, :, 80:]
    prior = geodesic_idw(sparse, cost, power=4.0, prior_distance=20.0, prior_weights="area")
    assert float(plain.mean()) > 2.5
    assert float(prior[0, 0, :, 80:].mean()) < 1.2   # about 8 x 11 % = 0.9: the dominant motion
    torch.testing.assert_close(prior[0, :, 24, 4], torch.tensor([8.0, 0.0]))  # guided pixels stay exact
    torch.testing.assert_close(prior[0, :, 24, 30], torch.tensor([0.0, 0.0]))


def test_a_given_dominant_motion_replaces_the_estimate():
    sparse = random_sparse(batch=2, size=(40, 56), points=6, seed=2)
    cost = edge_cost(torch.from_numpy(_striped_image(40, 56)).permute(2, 0, 1)[None].float() / 255, 40.0)
    estimated = []  # the border-share mean, as the definition test computes it
    for b, (gy, gx, distances) in enumerate(geodesic_point_distances(sparse, cost)):
        owner = distances.argmin(0)
        ring = torch.cat([owner[0], owner[-1], owner[1:-1, 0], owner[1:-1, -1]])
        share = torch.bincount(ring, minlength=gy.numel()).float()
        estimated.append(sparse[b, :2, gy, gx] @ (share / share.sum()))
    estimated = torch.stack(estimated)
    told = geodesic_idw(sparse, cost, power=4.0, prior_distance=25.0, dominant=estimated)
    assert torch.allclose(told, geodesic_idw(sparse, cost, power=4.0, prior_distance=25.0), atol=1e-4)
    other = geodesic_idw(sparse, cost, power=4.0, prior_distance=25.0, dominant=estimated + 5.0)
    assert float((other - told).abs().max()) > 1.0
    gy, gx = torch.nonzero(sparse[0, 2] > 0, as_tuple=True)
    torch.testing.assert_close(other[0, :, gy, gx], sparse[0, :2, gy, gx])  # guided pixels stay exact


def test_bench_fills_local_affine_fill_is_exact_for_an_affine_motion_and_the_idw_fill_for_a_large_ridge(
        load_benchmark):
    bench = load_benchmark("bench_fills")
    height, width = 40, 56
    sparse = torch.zeros(4, height, width)
    ys, xs = torch.tensor([3, 30, 12, 35, 20]), torch.tensor([5, 10, 40, 50, 28])
    sparse[0, ys, xs] = 2.0 + 0.10 * xs - 0.05 * ys    # u = 2 + 0.1 x - 0.05 y: a zoom and a shear
    sparse[1, ys, xs] = -1.0 + 0.02 * xs + 0.08 * ys
    sparse[2:, ys, xs] = 1
    image = torch.from_numpy(_striped_image(height, width)).permute(2, 0, 1)[None].float() / 255
    cost = edge_cost(image, 40.0)
    _, _, distances = geodesic_point_distances(sparse[None], cost)[0]
    fill = bench.local_affine_fill(sparse, distances, ridge=0.0)
    yy, xx = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    assert torch.allclose(fill[0], 2.0 + 0.10 * xx - 0.05 * yy, atol=1e-3)
    assert torch.allclose(fill[1], -1.0 + 0.02 * xx + 0.08 * yy, atol=1e-3)
    smooth = bench.local_affine_fill(sparse, distances, ridge=1e9)
    assert torch.allclose(smooth, geodesic_idw(sparse[None], cost, power=4.0)[0], atol=1e-3)
    assert not torch.allclose(fill, smooth, atol=0.1)


def test_bench_fills_guided_vector_nearest_a_motion(load_benchmark):
    bench = load_benchmark("bench_fills")
    sparse = torch.zeros(4, 20, 30)
    for (y, x), vector in zip(((2, 3), (10, 10), (15, 25), (5, 20)), ((4.0, 0.0), (0.5, 0.2), (-3.0, 1.0), (0.0, -0.6))):
        sparse[:, y, x] = torch.tensor([*vector, 1.0, 1.0])
    best, within = bench.guided_vector_nearest(sparse, torch.tensor([0.4, 0.0]))
    torch.testing.assert_close(best, torch.tensor([0.5, 0.2]))
    assert within == 2          # (0.5, 0.2) and (0, -0.6) lie within 1 px of (0.4, 0)


def test_bench_fills_contrast_prior_turns_the_dominant_motion_away_from_an_object_of_another_colour(load_benchmark):
    bench = load_benchmark("bench_fills")
    image = np.full((40, 60, 3), 90, np.uint8)
    image[10:30, 0:24] = (220, 30, 30)                  # a red object reaching in from the left edge
    sparse = torch.zeros(4, 40, 60)
    for (y, x), vector in (((20, 8), (6.0, 0.0)), ((5, 45), (0.0, 1.0)), ((34, 50), (0.0, 1.0))):
        sparse[:, y, x] = torch.tensor([*vector, 1.0, 1.0])
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    _, _, distances = geodesic_point_distances(sparse[None], edge_cost(rgb, 40.0))[0]
    motions = bench.contrast_dominant_motions(image, sparse, distances, [1e6, 40.0, 5.0])
    # a huge sigma is the shipped rule (connectivity shares; a prior 1e-3 px away is all an unguided pixel hears),
    # in which the object's point has a say
    shipped = geodesic_idw(sparse[None], edge_cost(rgb, 40.0), power=4.0, prior_distance=1e-3,
                           prior_weights="connectivity")[0, :, 0, 30]
    torch.testing.assert_close(motions[1e6], shipped, atol=1e-4, rtol=0)
    assert motions[1e6][0] > 0.5
    # the smaller sigma, the less the red object's point counts: the motion turns to the grey scenery's
    assert motions[1e6][0] > motions[40.0][0] > motions[5.0][0]
    torch.testing.assert_close(motions[5.0], torch.tensor([0.0, 1.0]), atol=1e-3, rtol=0)


def test_bench_fills_leave_one_out_predicts_each_point_as_the_fill_without_it(load_benchmark):
    bench = load_benchmark("bench_fills")
    image = _striped_image(40, 56)
    sparse = random_sparse(batch=1, size=(40, 56), points=6, seed=3)[0]
    gy, gx = torch.nonzero(sparse[2] > 0, as_tuple=True)
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    _, _, distances = geodesic_point_distances(sparse[None], edge_cost(rgb, 40.0))[0]
    predictions = bench.leave_one_out(image, sparse, radii=[20.0], point_distances={40.0: distances})
    assert set(predictions) == {"IDW-4", "watershed", "blend 20", "geodesic 40"}
    for i in range(gy.numel()):
        without = sparse.clone()
        without[:, gy[i], gx[i]] = 0
        fills, _ = bench.image_fills(image, without, [20.0], [40.0])
        for name in ("IDW-4", "watershed", "geodesic 40"):
            assert torch.allclose(predictions[name][:, i], fills[name][:, gy[i], gx[i]], atol=1e-3), name


def test_bench_fills_loo_choice_takes_the_fill_that_predicts_the_left_out_points_best(load_benchmark):
    bench = load_benchmark("bench_fills")
    sparse = torch.zeros(4, 8, 8)
    sparse[0, [1, 6], [1, 6]] = torch.tensor([1.0, 3.0])
    sparse[2:, [1, 6], [1, 6]] = 1
    fills = {"a": torch.zeros(2, 8, 8), "b": torch.ones(2, 8, 8)}
    vectors = sparse[:2, [1, 6], [1, 6]]
    predictions = {"a": vectors + 5.0, "b": vectors + 0.5}   # b is 10x closer at the left-out points
    chosen = bench.loo_fills(fills, predictions, sparse)
    assert torch.equal(chosen["LOO choice"], fills["b"])
    assert float(chosen["LOO blend"].mean()) > 0.99   # softmax(-[5, 0.5] / (0.25 x 0.5)): all but nothing on b


GEODESIC = dict(guidance_input="dense", prediction="residual", residual_base="geodesic", idw_power=4.0,
                flow_loss="smooth_l1", geodesic_weight=40.0, geodesic_cells=32)


def _geodesic_model(**options) -> torch.nn.Module:
    return create_model(Config(model=ModelConfig(**SMALL, **{**GEODESIC, **options}))).eval()


def test_an_untrained_geodesic_model_gives_the_geodesic_fill_of_its_image():
    model = _geodesic_model()
    _zero_last_layer(model)
    pixels = torch.rand(2, 3, 64, 64) * 255
    mean, std = torch.tensor(model.config.data.mean), torch.tensor(model.config.data.std)
    image = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    sparse = random_sparse(size=(64, 64))
    with torch.no_grad():
        flow = model.predict_flow(image, sparse)
    expected = geodesic_idw(sparse, edge_cost(pixels / 255, 40.0), power=4.0, cells=32)
    torch.testing.assert_close(flow, expected, atol=1e-3, rtol=0)
    assert (flow - idw_fill(sparse, power=4.0)).abs().mean() > 0.1  # the image matters


def test_a_geodesic_fill_without_the_image_cost_is_a_clear_error():
    model = _geodesic_model()
    sparse = random_sparse(size=(64, 64))
    with pytest.raises(InputError, match="geodesic: it needs the image's cost"):
        model.residual_fill(sparse)
    with pytest.raises(InputError, match="geodesic"):
        model.output_to_flow(torch.zeros(2, 2, 8, 8), (64, 64), sparse)
    assert _geodesic_model(residual_base="idw").guidance_cost(torch.zeros(1, 3, 64, 64)) is None


def test_the_propagator_uses_the_image_of_a_geodesic_model():
    model = _geodesic_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    image[:, 40:] //= 8  # a strong edge
    propagator = Propagator(model, working_size=(64, 80))
    propagator.set_image(image)
    flow = propagator.propagate([(20, 30, 6.0, -2.0)], [(60, 10)])
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    mean, std = torch.tensor(model.config.data.mean), torch.tensor(model.config.data.std)
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    sparse = torch.zeros(1, 4, 64, 80)
    sparse[0, :, 30, 20] = torch.tensor([6.0, -2.0, 1.0, 1.0])
    sparse[0, 2:, 10, 60] = 1.0
    with torch.no_grad():
        expected = model.predict_flow(x, sparse)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(flow, expected, atol=1e-3)



def test_the_propagator_uses_the_dominant_motion_prior_only_when_asked():
    model = _geodesic_model(geodesic_prior_distance=20.0)
    _zero_last_layer(model)  # the flow is the fill
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    propagator = Propagator(model, working_size=(64, 80))
    propagator.set_image(image)
    arrows, still = [(10, 10, 6.0, -2.0), (12, 50, 6.0, -2.0)], [(70, 30)]
    without = propagator.propagate_batch([(arrows, still)])[0]  # off by default: hand-placed arrows
    with_prior = propagator.propagate_batch([(arrows, still)], dominant_motion=True)[0]
    on = Propagator(model, working_size=(64, 80), dominant_motion=True)
    on.set_image(image)
    np.testing.assert_array_equal(on.propagate(arrows, still), with_prior)
    cost = edge_cost(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, 40.0)
    sparse = propagator.sparse_input([(arrows, still)])
    for flow, prior in ((with_prior, 20.0), (without, 0.0)):
        expected = geodesic_idw(sparse, cost, power=4.0, cells=32, prior_distance=prior)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(flow, expected, atol=1e-3)
    assert np.abs(with_prior - without).max() > 0.5

@pytest.mark.parametrize("key, value", [("geodesic_weight", -1.0), ("geodesic_cells", 1),
                                        ("geodesic_prior_distance", -1.0),
                                        ("geodesic_prior_weights", "corners")])
def test_bad_geodesic_options_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        ModelConfig(**{key: value}).validate()


def test_the_dominant_motion_prior_needs_a_geodesic_residual_model():
    with pytest.raises(ConfigError, match="geodesic_prior_distance.*residual_base: geodesic"):
        ModelConfig(geodesic_prior_distance=80.0, prediction="residual", residual_base="idw").validate()
    ModelConfig(**{**GEODESIC, "geodesic_prior_distance": 80.0}).validate()


@pytest.mark.parametrize("shares", ["border", "connectivity"])
def test_a_geodesic_model_with_the_prior_uses_it_in_its_fill(shares):
    model = _geodesic_model(geodesic_prior_distance=30.0, geodesic_prior_weights=shares)
    _zero_last_layer(model)
    pixels = torch.rand(1, 3, 64, 64) * 255
    mean, std = torch.tensor(model.config.data.mean), torch.tensor(model.config.data.std)
    sparse = random_sparse(batch=1, size=(64, 64))
    with torch.no_grad():
        flow = model.predict_flow((pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), sparse)
    expected = geodesic_idw(sparse, edge_cost(pixels / 255, 40.0), power=4.0, cells=32, prior_distance=30.0,
                            prior_weights=shares)
    torch.testing.assert_close(flow, expected, atol=1e-3, rtol=0)


def test_the_fill_input_shows_the_sparse_encoder_the_geodesic_fill():
    model = _geodesic_model(guidance_input="fill")
    image, sparse = torch.randn(2, 3, 64, 64), random_sparse(size=(64, 64))
    cost = model.guidance_cost(image)
    encoded = model.encode_guidance(sparse, cost)
    torch.testing.assert_close(encoded[:, :2], model.residual_fill(sparse, cost))
    dense = _geodesic_model().encode_guidance(sparse, cost)  # the nearest vector instead
    torch.testing.assert_close(encoded[:, 2:], dense[:, 2:])
    assert (encoded[:, :2] - dense[:, :2]).abs().mean() > 0.1
    with torch.no_grad():  # the cached decoder sees the same input
        features = model.encode_image(image[:1])
        torch.testing.assert_close(model.cached_decode(features)(sparse), model.decode(features, sparse),
                                   atol=1e-4, rtol=1e-4)


def test_the_fill_input_leaves_the_dominant_motion_prior_out():
    """So the encoder sees the same input whether a caller asks for the prior in the base fill or not."""
    model = _geodesic_model(guidance_input="fill", geodesic_prior_distance=20.0)
    image, sparse = torch.randn(1, 3, 64, 64), random_sparse(batch=1, size=(64, 64))
    cost = model.guidance_cost(image)
    encoded = model.encode_guidance(sparse, cost)
    torch.testing.assert_close(encoded[:, :2], model.residual_fill(sparse, cost, dominant_motion=False))
    assert (encoded[:, :2] - model.residual_fill(sparse, cost)).abs().max() > 0.1


def test_the_fill_input_needs_a_residual_model():
    with pytest.raises(ConfigError, match="model.guidance_input: fill"):
        ModelConfig(guidance_input="fill").validate()


@pytest.mark.parametrize("guidance_input, costs", [("dense", 0), ("fill", 1)])
def test_the_forward_pass_computes_the_edge_cost_only_when_its_input_needs_it(monkeypatch, guidance_input, costs):
    """A training step's forward pass leaves the cost to the caller's target fill unless the input is the fill."""
    model = _geodesic_model(guidance_input=guidance_input)
    image, sparse = torch.randn(2, 3, 64, 64), random_sparse(size=(64, 64))
    calls = []
    real = model.guidance_cost
    monkeypatch.setattr(model, "guidance_cost", lambda x: calls.append(1) or real(x))
    with torch.no_grad():
        output = model(image, sparse)
        expected = model.decode(model.encode_image(image), sparse)
    assert len(calls) == costs + 1  # + the encode_image above, which keeps it by default
    torch.testing.assert_close(output, expected)


def test_propagate_and_animate_take_the_dominant_motion_prior_on_request(tmp_path, capsys):
    import cv2

    import motionprop
    from motionprop.cli import main
    from motionprop.data.flow_io import read_flow

    model = _geodesic_model(geodesic_prior_distance=20.0)
    _zero_last_layer(model)
    motionprop.save_model(tmp_path / "ckpt", model)
    cv2.imwrite(str(tmp_path / "image.png"), np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    flows = {}
    for flag in ([], ["--dominant-motion"]):
        out = tmp_path / f"flow{len(flag)}.flo"
        code = main(["propagate", "--checkpoint", str(tmp_path / "ckpt"), "--image", str(tmp_path / "image.png"),
                     "--working-size", "64", "--precision", "fp32", "--arrow", "10,10,6,-2", "12,50,6,-2",
                     "--still", "70,30", "--out-flow", str(out), *flag])
        assert code == 0, capsys.readouterr().err
        flows[bool(flag)] = read_flow(out)
    assert np.abs(flows[True] - flows[False]).max() > 0.5
    np.testing.assert_allclose(flows[True][10, 10], [6.0, -2.0], atol=1e-3)  # guided pixels exact either way
    np.testing.assert_allclose(flows[False][10, 10], [6.0, -2.0], atol=1e-3)
    code = main(["animate", "--checkpoint", str(tmp_path / "ckpt"), "--image", str(tmp_path / "image.png"),
                 "--arrow", "10,10,6,-2", "--dominant-motion", "--frames", "2", "--out", str(tmp_path / "frames"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
