"""The guidance file (arrows, still points, image size): round trip, replay at another size, strict errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from motionprop.apps.guidance_file import (Guidance, guidance_from_args, parse_numbers, read_guidance,
                                           write_guidance)
from motionprop.errors import InputError


def test_round_trip_keeps_every_number(tmp_path):
    guidance = Guidance([(900, 500, 40.25, -10), (10.5, 20, 0, 3)], [(300, 800)])
    path = write_guidance(tmp_path / "g.json", guidance, (1920, 1080), "0.jpg")
    raw = json.loads(path.read_text())
    assert raw["format"] == "motionprop.guidance" and raw["version"] == 1
    assert raw["image_size"] == {"width": 1920, "height": 1080}
    assert raw["arrows"][0] == {"x": 900, "y": 500, "dx": 40.25, "dy": -10}
    back, size, name = read_guidance(path)
    assert size == (1920, 1080) and name == "0.jpg"
    np.testing.assert_array_equal(back.arrows, guidance.arrows)
    np.testing.assert_array_equal(back.still_points, guidance.still_points)


def test_replay_on_another_size_scales_positions_and_vectors(tmp_path):
    guidance = Guidance([(99.5, 49.5, 10, -4)], [(0, 0)])
    path = write_guidance(tmp_path / "g.json", guidance, (200, 100))
    back, size, _ = read_guidance(path, image_size=(400, 300))
    assert size == (400, 300)
    # Pixel centres stay aligned: the centre of the image stays the centre; vectors scale per axis.
    assert back.arrows.tolist() == [[199.5, 149.5, 20, -12]]
    assert back.still_points.tolist() == [[0.5, 1.0]]
    again = back.resized((400, 300), (200, 100))
    np.testing.assert_allclose(again.arrows, guidance.arrows)
    np.testing.assert_allclose(again.still_points, guidance.still_points)


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"format": "x"}', "not a guidance file"),
    ('{"format": "motionprop.guidance", "version": 2}', "unsupported guidance file version"),
    ('{"format": "motionprop.guidance", "version": 1, "image_size": [10, 10]}', "image_size"),
    ('{"format": "motionprop.guidance", "version": 1, "image_size": {"width": 10, "height": 10}, '
     '"arrows": [{"x": 1, "y": 2}]}', r"arrows\[0\]"),
    ('{"format": "motionprop.guidance", "version": 1, "image_size": {"width": 10, "height": 10}, '
     '"arrows": [{"x": 1, "y": 2, "dx": "a", "dy": 0}]}', "not a number"),
    ('{"format": "motionprop.guidance", "version": 1, "image_size": {"width": 10, "height": 10}, '
     '"still_points": [{"x": 12, "y": 2}]}', "outside the 10x10 image"),
])
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_guidance(path)


def test_command_line_values():
    assert parse_numbers("1, 2.5,-3,4e1", 4, "--arrow") == (1.0, 2.5, -3.0, 40.0)
    for bad in ("1,2,3", "1,2,3,x", "1,2,3,nan", ""):
        with pytest.raises(InputError, match="--arrow"):
            parse_numbers(bad, 4, "--arrow")
    guidance = guidance_from_args(["1,2,3,4"], ["5,6", "7,8"])
    assert len(guidance) == 3 and guidance.points().tolist() == [[1, 2], [5, 6], [7, 8]]


def test_points_on_the_border_are_inside_and_beyond_are_not():
    Guidance([(0, 0, 5, 5), (99, 49, -5, 0)]).check_inside(100, 50)
    with pytest.raises(InputError, match="x must be in 0..99"):
        Guidance([(100, 0, 1, 1)]).check_inside(100, 50)
    with pytest.raises(InputError, match="still point"):
        Guidance(still_points=[(5, -1)]).check_inside(100, 50)
