"""Flow pictures: the Middlebury colour wheel."""

from __future__ import annotations

import numpy as np

from motionprop.visualize import _WHEEL, flow_to_color


def reference_colours(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """The colour coding written out in float64, one step at a time (Baker et al.'s reference)."""
    flow = flow.astype(np.float64)
    unknown = ~np.isfinite(flow).all(axis=-1)
    u, v = np.where(unknown, 0, flow[..., 0]), np.where(unknown, 0, flow[..., 1])
    length = np.hypot(u, v)
    scale = max(max_flow or length.max(), 1e-6)
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (len(_WHEEL) - 1)
    i0 = np.floor(position).astype(int)
    frac = (position - i0)[..., None]
    colour = (1 - frac) * _WHEEL[i0] + frac * _WHEEL[(i0 + 1) % len(_WHEEL)]
    colour = 1 - np.clip(length / scale, 0, 1)[..., None] * (1 - colour)
    colour[length / scale > 1] *= 0.75
    colour[unknown] = 0
    return np.round(colour * 255).astype(np.uint8)


def test_colours_match_the_reference_within_one_level():
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(64, 80, 2)).astype(np.float32) * 10
    flow[0, 0] = np.nan
    flow[1, 1] = (-3.0, 0.0)  # angle exactly pi: the last wheel step wraps to the first
    for max_flow in (None, 12.0):
        got, want = flow_to_color(flow, max_flow).astype(int), reference_colours(flow, max_flow).astype(int)
        assert np.abs(got - want).max() <= 1
        assert (got == want).mean() > 0.99


def test_known_colours():
    flow = np.array([[[5.0, 0.0], [0.0, 0.0], [50.0, 0.0], [np.nan, 1.0]]], np.float32)
    picture = flow_to_color(flow, max_flow=5.0)
    assert picture[0, 0].tolist() == [255, 0, 0]  # full length to the right: red
    assert picture[0, 1].tolist() == [255, 255, 255]  # no motion: white
    assert picture[0, 2].tolist() == [191, 0, 0]  # beyond the scale: darker
    assert picture[0, 3].tolist() == [0, 0, 0]  # unknown: black
    assert flow_to_color(np.zeros((2, 3, 2), np.float32)).tolist() == [[[255] * 3] * 3] * 2
