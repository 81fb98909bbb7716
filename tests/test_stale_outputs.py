"""Outputs of a run never mix with an earlier run's, never clash with each other, and fail before the work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from motionprop.apps.animate import write_animation
from motionprop.apps.annotate import annotate, annotate_batch
from motionprop.apps.propagate import Propagator
from motionprop.errors import InputError

from handmade_model import SegmentModel, scene
from test_annotate import write_batch


def test_png_frames_of_a_longer_earlier_clip_are_removed_but_never_an_input(tmp_path):
    frames = [np.full((8, 8, 3), k, np.uint8) for k in range(8)]
    folder = tmp_path / "frames"
    write_animation(folder, frames)
    (folder / "notes.txt").write_text("mine")
    keep = folder / "00006.png"  # say, the input image lives here under a frame's name
    write_animation(folder, frames[:3], keep=[keep])
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png", "00006.png",
                                                        "notes.txt"]


def test_batch_removes_its_own_stale_masks_and_refuses_name_clashes_before_any_work(tmp_path):
    path = write_batch(tmp_path)
    annotate_batch(Propagator(SegmentModel()), path, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_1.png", "a_2.png", "b_1.png"]
    raw = json.loads(path.read_text())
    raw["images"][0]["objects"] = raw["images"][0]["objects"][:1]
    path.write_text(json.dumps(raw))
    annotate_batch(Propagator(SegmentModel()), path, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_1.png", "b_1.png"]

    raw["images"][1]["name"] = "a_overlay"  # its label map would overwrite a's overlay
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="a_overlay.png"):
        annotate_batch(Propagator(SegmentModel()), path, tmp_path / "clash", indexed=True, overlays=True)
    assert not (tmp_path / "clash").exists()


def test_more_than_255_objects_for_a_label_png_fail_before_any_work(tmp_path):
    path = write_batch(tmp_path)
    raw = json.loads(path.read_text())
    raw["images"][0]["objects"] = [{"positive": [[10 + k % 200, 10 + k // 200]]} for k in range(256)]
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="at most 255 objects"):
        annotate_batch(Propagator(SegmentModel()), path, tmp_path / "out", indexed=True)
    assert not (tmp_path / "out").exists()


def test_the_same_pixel_as_positive_and_negative_click_is_an_error():
    image, _ = scene()
    propagator = Propagator(SegmentModel())
    propagator.set_image(image)
    with pytest.raises(InputError, match="both a positive and a negative"):
        annotate(propagator, [[70, 140]], [[70.2, 139.8]])
