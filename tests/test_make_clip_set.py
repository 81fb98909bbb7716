"""benchmarks/make_clip_set.py: frames from a third of the way into a video, whatever its header says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


def _numbered_video(path, frames: int) -> None:
    """An MJPG AVI whose frame i is a flat grey of 8 * i, so a written frame tells its index."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()


def _indices(folder) -> list[int]:
    return [round(float(cv2.imread(str(f)).mean()) / 8) for f in sorted(folder.glob("*.jpg"))]


def test_frames_start_a_third_of_the_way_in(load_benchmark, tmp_path):
    bench = load_benchmark("make_clip_set")
    _numbered_video(tmp_path / "clip.avi", 30)
    bench.main([str(tmp_path / "clip.avi"), "--out", str(tmp_path / "set"), "--frames", "6", "--short-side", "48"])
    assert _indices(tmp_path / "set" / "JPEGImages" / "clip") == list(range(10, 16))


def test_a_header_that_overstates_the_frame_count_falls_back_to_counting(load_benchmark, tmp_path, monkeypatch):
    bench = load_benchmark("make_clip_set")
    _numbered_video(tmp_path / "clip.avi", 30)

    real_capture = cv2.VideoCapture

    class Overstating:  # a wrapper, not a subclass: subclasses of cv2's types can crash at interpreter exit
        def __init__(self, path):
            self._capture = real_capture(path)

        def get(self, prop):
            value = self._capture.get(prop)
            return value * 6 if prop == cv2.CAP_PROP_FRAME_COUNT else value

        def __getattr__(self, name):
            return getattr(self._capture, name)

    monkeypatch.setattr(bench.cv2, "VideoCapture", Overstating)
    bench.main([str(tmp_path / "clip.avi"), "--out", str(tmp_path / "set"), "--frames", "6", "--short-side", "48"])
    assert _indices(tmp_path / "set" / "JPEGImages" / "clip") == list(range(10, 16))


def test_a_video_too_short_is_refused_by_name_and_writes_nothing(load_benchmark, tmp_path):
    bench = load_benchmark("make_clip_set")
    _numbered_video(tmp_path / "short.avi", 12)
    with pytest.raises(SystemExit, match="short.avi has only 8 frames from its third on, 20 needed"):
        bench.main([str(tmp_path / "short.avi"), "--out", str(tmp_path / "set"), "--frames", "20"])
    assert not (tmp_path / "set" / "JPEGImages" / "short").exists()
