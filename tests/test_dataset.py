"""The training dataset: list files, the sample pipeline, seeding, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from motionprop.config import Config, DataConfig, apply_overrides
from motionprop.data.dataset import (ImageFlowDataset, add_camera_motion, follow_subject, jitter_colour,
                                     read_pair_list, resized_size)
from motionprop.data.flow_io import write_flow, write_flow_jpg
from motionprop.errors import ConfigError, InputError


def _write_pair(root: Path, name: str, size=(60, 80), flow_value=(4.0, 2.0), jpg=False) -> str:
    """Two textured frames and a constant flow; returns the list line (paths relative to root/lists)."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    for i in (1, 2):
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f"{name}_{i}.png"), img)
    flow = np.empty((*size, 2), np.float32)
    flow[..., 0], flow[..., 1] = flow_value
    if jpg:
        write_flow_jpg(root / f"{name}_x.jpg", root / f"{name}_y.jpg", flow)
        return f"../{name}_1.png ../{name}_2.png ../{name}_x.jpg ../{name}_y.jpg"
    write_flow(root / f"{name}.flo", flow)
    return f"../{name}_1.png ../{name}_2.png ../{name}.flo"


@pytest.fixture
def pairs(tmp_path) -> Path:
    (tmp_path / "lists").mkdir()
    lines = [_write_pair(tmp_path, f"p{i}", flow_value=(4.0 + i, 2.0)) for i in range(4)]
    (tmp_path / "lists" / "train.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "lists" / "train.txt"


def _config(**kwargs) -> DataConfig:
    base = dict(short_size=60, crop_size=(48, 64), bg_ratio=1 / 64, nms_ks=7, max_num_guide=-1)
    base.update(kwargs)
    return DataConfig(**base)


def test_item_shapes_and_guidance_matches_the_flow(pairs):
    ds = ImageFlowDataset([pairs], _config(), train=True)
    item = ds[2]
    assert item["image"].shape == (3, 48, 64) and item["image2"].shape == (3, 48, 64)
    assert item["sparse"].shape == (4, 48, 64) and item["flow"].shape == (2, 48, 64)
    mask = item["sparse"][2] > 0
    assert mask.sum() >= 12  # grid stride 8 on 48x64
    torch.testing.assert_close(item["sparse"][:2][:, mask], item["flow"][:, mask])
    assert (item["sparse"][:2][:, ~mask] == 0).all() and torch.equal(item["sparse"][2], item["sparse"][3])
    torch.testing.assert_close(item["flow"][0], torch.full((48, 64), 6.0))


def test_resize_scales_flow_by_the_size_ratio(pairs):
    ds = ImageFlowDataset([pairs], _config(short_size=30, crop_size=(30, 40)), train=False)
    flow = ds[0]["flow"]
    assert flow.shape == (2, 30, 40)
    torch.testing.assert_close(flow[0], torch.full((30, 40), 2.0))
    torch.testing.assert_close(flow[1], torch.full((30, 40), 1.0))
    assert resized_size(480, 854, 416, None) == (416, 740)  # int truncation as the original
    assert resized_size(854, 480, None, 400) == (400, 224)


def test_small_frames_are_zero_padded_centred(pairs):
    ds = ImageFlowDataset([pairs], _config(short_size=60, crop_size=(70, 80)), train=False)
    item = ds[0]
    assert item["flow"].shape == (2, 70, 80)
    assert (item["flow"][:, :5] == 0).all() and (item["flow"][:, -5:] == 0).all()
    assert (item["flow"][0, 5:65] == 4.0).all()


def test_flip_negates_x_and_seeding_is_per_sample(pairs):
    ds = ImageFlowDataset([pairs], _config(flip=True), train=True, seed=3)
    signs = {float(torch.sign(ds[(1, draw)]["flow"][0, 0, 0])) for draw in range(12)}
    assert signs == {1.0, -1.0}
    a, b = ds[(1, 5)], ds[(1, 5)]
    for key in ("image", "sparse", "flow"):
        assert torch.equal(a[key], b[key])
    other_seed = ImageFlowDataset([pairs], _config(flip=True), train=True, seed=4)
    assert any(not torch.equal(ds[(i, 0)]["image"], other_seed[(i, 0)]["image"]) for i in range(4))


def test_workers_do_not_change_samples(pairs):
    ds = ImageFlowDataset([pairs], _config(flow_rotate=True, flow_scale=True), train=True)
    keys = [(i % 4, i // 4) for i in range(8)]
    inline = [ds[k]["flow"] for k in keys]
    loader = DataLoader(ds, batch_size=2, sampler=keys, num_workers=2)
    batched = torch.cat([b["flow"] for b in loader])
    torch.testing.assert_close(batched, torch.stack(inline))


def test_rotation_keeps_vector_length(pairs):
    ds = ImageFlowDataset([pairs], _config(flow_rotate=True), train=True)
    lengths = {round(float(ds[(0, d)]["flow"][:, 0, 0].norm()), 4) for d in range(8)}
    assert lengths == {round(float(np.hypot(4.0, 2.0)), 4)}


def test_jpg_pair_lists_and_cwd_relative_paths(tmp_path, monkeypatch):
    line = _write_pair(tmp_path, "j", jpg=True).replace("../", "")
    (tmp_path / "elsewhere").mkdir()
    lst = tmp_path / "elsewhere" / "list.txt"
    lst.write_text(line + "\n")
    monkeypatch.chdir(tmp_path)  # paths relative to the current directory, as the original
    records = read_pair_list(lst)
    assert len(records[0].flow) == 2 and os.path.isfile(records[0].flow[1])
    item = ImageFlowDataset([lst], _config(), train=False)[0]
    assert abs(float(item["flow"][0].mean()) - 4.0) < 0.3  # 8-bit JPEG quantization, 100/255 px a step


def test_bad_lists_and_files_are_named(tmp_path, pairs):
    with pytest.raises(InputError, match="list file not found: .*nope.txt"):
        read_pair_list(tmp_path / "nope.txt")
    bad = tmp_path / "lists" / "bad.txt"
    bad.write_text("a b\n")
    with pytest.raises(InputError, match="bad.txt:1: expected"):
        read_pair_list(bad)
    bad.write_text("missing1.png missing2.png f.flo\n")
    with pytest.raises(InputError, match="missing1.png.*exists neither"):
        read_pair_list(bad)
    (tmp_path / "p1_2.png").write_bytes(b"not an image")
    ds = ImageFlowDataset([pairs], _config(), train=False)
    with pytest.raises(InputError, match="cannot decode image: .*p1_2.png"):
        ds[1]
    skipping = ImageFlowDataset([pairs], _config(), train=False, skip_bad=True)
    item = skipping[1]
    assert int(item["skipped"]) == 1 and int(item["index"]) == 2


def test_random_guidance_density_varies_per_training_sample_and_not_in_validation(pairs):
    cfg = _config(guidance_density="random", dense_prob=0.25, dense_grid=10, max_sparse=16)
    train_counts = {int(ImageFlowDataset([pairs], cfg, train=True)[(0, draw)]["sparse"][2].sum())
                    for draw in range(30)}
    assert len(train_counts) >= 4 and min(train_counts) >= 1  # sparse draws of several sizes, and dense grids
    val = ImageFlowDataset([pairs], cfg, train=False)
    fixed = ImageFlowDataset([pairs], _config(), train=False)
    for draw in range(3):  # validation keeps the config's fixed strategy
        assert torch.equal(val[(0, draw)]["sparse"], fixed[(0, draw)]["sparse"])


def _fit_similarity(points: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares (a, b, tx, ty) of x' = a x - b y + tx, y' = b x + a y + ty, and the largest residual."""
    x, y = points[:, 0], points[:, 1]
    rows = np.concatenate([np.stack([x, -y, np.ones_like(x), np.zeros_like(x)], 1),
                           np.stack([y, x, np.zeros_like(x), np.ones_like(x)], 1)])
    target = np.concatenate([moved[:, 0], moved[:, 1]])
    params = np.linalg.lstsq(rows, target, rcond=None)[0]
    return params, float(np.abs(rows @ params - target).max())


def test_camera_motion_composes_a_similarity_after_the_flow():
    height, width, shift = 40, 60, 8.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    object_flow = np.zeros((height, width, 2), np.float32)
    object_flow[10:20, 15:30] = (5.0, -3.0)          # a moving object on a still scene
    for seed in range(5):
        still = add_camera_motion(np.zeros_like(object_flow), np.random.default_rng(seed), shift)
        moved = add_camera_motion(object_flow, np.random.default_rng(seed), shift)
        points = np.stack([xs.ravel(), ys.ravel()], 1)
        params, residual = _fit_similarity(points, points + still.reshape(-1, 2))
        assert residual < 1e-3                        # the still scene moves by one similarity ...
        scale = np.hypot(params[0], params[1])
        assert abs(np.log(scale)) <= 0.5 * shift / (0.5 * np.hypot(height, width)) + 1e-6
        centre_shift = still[height // 2, width // 2]  # about the translation: the pixel nearest the centre
        assert np.abs(centre_shift).max() <= shift + 1.0
        # ... and the object's pixels go where the object takes them, then where the camera does
        a, b, tx, ty = params
        target_x = a * (xs + object_flow[..., 0]) - b * (ys + object_flow[..., 1]) + tx - xs
        target_y = b * (xs + object_flow[..., 0]) + a * (ys + object_flow[..., 1]) + ty - ys
        np.testing.assert_allclose(moved[..., 0], target_x, atol=1e-3)
        np.testing.assert_allclose(moved[..., 1], target_y, atol=1e-3)
    np.testing.assert_array_equal(add_camera_motion(object_flow, np.random.default_rng(0), 0.0), object_flow)


def test_camera_motion_in_training_samples_only_and_off_by_default(pairs):
    plain = ImageFlowDataset([pairs], _config(), train=True)
    camera = ImageFlowDataset([pairs], _config(camera_motion=6.0, camera_prob=1.0), train=True)
    for draw in range(4):
        before, after = plain[(1, draw)], camera[(1, draw)]
        assert torch.equal(before["image"], after["image"])          # the same crop and picture
        assert not torch.allclose(before["flow"], after["flow"])     # but the camera moved
        mask = after["sparse"][2] > 0                                # guidance sampled from the new flow
        torch.testing.assert_close(after["sparse"][:2][:, mask], after["flow"][:, mask])
    never = ImageFlowDataset([pairs], _config(camera_motion=6.0, camera_prob=0.0), train=True)
    assert torch.equal(never[(1, 0)]["flow"], plain[(1, 0)]["flow"])
    val = ImageFlowDataset([pairs], _config(camera_motion=6.0, camera_prob=1.0), train=False)
    assert torch.equal(val[(1, 0)]["flow"], ImageFlowDataset([pairs], _config(), train=False)[(1, 0)]["flow"])


def test_follow_subject_keeps_the_subject_nearly_still_and_moves_the_scenery_against_it():
    flow = np.zeros((40, 60, 2), np.float32)
    flow[10:20, 15:30] = (6.0, -4.0)                   # a subject on a still scene
    flow[30:33, 40:42] = (0.5, 0.5)                    # a small motion under 1 px: not the subject
    for seed in range(5):
        followed = follow_subject(flow, np.random.default_rng(seed))
        shift = flow - followed                        # one translation everywhere ...
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-6)
        alpha = shift[0, 0] / np.float32([6.0, -4.0])  # ... a fraction in [0.5, 1] of the subject's motion
        assert alpha[0] == pytest.approx(alpha[1]) and 0.5 <= alpha[0] <= 1.0
        np.testing.assert_allclose(followed[0, 0], -shift[0, 0])          # the scenery moves against it
        assert np.hypot(*followed[15, 20]) <= 0.5 * np.hypot(6.0, -4.0) + 1e-5
    small = np.full((8, 8, 2), 0.7, np.float32)        # nothing moves over 1 px: left as it was
    np.testing.assert_array_equal(follow_subject(small, np.random.default_rng(0)), small)


def test_follow_camera_in_training_samples(pairs):
    plain = ImageFlowDataset([pairs], _config(), train=True)
    follow = ImageFlowDataset([pairs], _config(camera_motion="follow", camera_prob=1.0), train=True)
    for draw in range(3):
        before, after = plain[(1, draw)], follow[(1, draw)]
        assert torch.equal(before["image"], after["image"])
        shift = before["flow"] - after["flow"]
        assert shift.abs().max() > 0.1                                 # the camera moved ...
        torch.testing.assert_close(shift, shift[:, :1, :1].expand_as(shift))   # ... by one translation
    val = ImageFlowDataset([pairs], _config(camera_motion="follow", camera_prob=1.0), train=False)
    assert torch.equal(val[(1, 0)]["flow"], ImageFlowDataset([pairs], _config(), train=False)[(1, 0)]["flow"])
    cfg = apply_overrides(Config(), ["data.camera_motion=follow"])
    assert cfg.data.camera_motion == "follow"
    with pytest.raises(ConfigError, match="data.camera_motion must be a number or 'follow', got 'folow'"):
        apply_overrides(Config(), ["data.camera_motion=folow"])


@pytest.mark.parametrize("key,value", [("camera_motion", -1.0), ("camera_motion", float("inf")),
                                       ("camera_motion", "pan"), ("camera_prob", 1.5), ("camera_prob", "half")])
def test_camera_motion_settings_are_checked(key, value):
    with pytest.raises(ConfigError, match=f"data.{key}"):
        _config(**{key: value}).validate()


def test_jitter_colour_scales_brightness_contrast_and_saturation():
    image = np.random.default_rng(0).integers(40, 200, (16, 24, 3), dtype=np.uint8)
    other = np.random.default_rng(1).integers(40, 200, (16, 24, 3), dtype=np.uint8)
    weights = np.float32([0.299, 0.587, 0.114])
    same, same_other = jitter_colour([image, other], 1.0, 1.0, 1.0, gray=False)
    np.testing.assert_array_equal(same, image)                 # factors of 1 leave a frame as it was
    np.testing.assert_array_equal(same_other, other)
    brighter = jitter_colour([image], 1.2, 1.0, 1.0, gray=False)[0]
    np.testing.assert_allclose(brighter, np.clip(image * 1.2, 0, 255), atol=0.51)
    flat = jitter_colour([image], 1.0, 0.0, 1.0, gray=False)[0]   # no contrast: the frame's mean grey
    assert np.ptp(flat) == 0 and abs(int(flat[0, 0, 0]) - (image @ weights).mean()) <= 0.5
    grey = jitter_colour([image], 1.0, 1.0, 0.0, gray=False)[0]   # no saturation: each pixel's grey
    assert (grey == grey[..., :1]).all()
    np.testing.assert_allclose(grey[..., 0], image @ weights, atol=0.51)
    np.testing.assert_array_equal(jitter_colour([image], 1.0, 1.0, 1.0, gray=True)[0], grey)
    stronger = jitter_colour([image], 1.0, 1.5, 1.0, gray=False)[0]   # more contrast: a wider spread
    assert stronger.astype(float).std() > image.astype(float).std() * 1.3


def test_colour_augmentation_changes_only_the_pixels_of_training_samples(pairs):
    plain = ImageFlowDataset([pairs], _config(), train=True)
    colour = ImageFlowDataset([pairs], _config(colour_jitter=0.4, gray_prob=0.5), train=True)
    grey = ImageFlowDataset([pairs], _config(gray_prob=1.0), train=True)
    std = torch.tensor(_config().std).view(3, 1, 1)
    mean = torch.tensor(_config().mean).view(3, 1, 1)
    for draw in range(4):
        before, after = plain[(2, draw)], colour[(2, draw)]
        for key in ("flow", "sparse", "valid"):                   # the same crop, flip, motion, guidance
            assert torch.equal(before[key], after[key]), key
        assert not torch.equal(before["image"], after["image"])
        pixels = grey[(2, draw)]["image"] * std + mean             # back to 0..255: three equal channels
        torch.testing.assert_close(pixels[0], pixels[1], atol=1e-3, rtol=0)
        torch.testing.assert_close(pixels[1], pixels[2], atol=1e-3, rtol=0)
    val = ImageFlowDataset([pairs], _config(colour_jitter=0.4, gray_prob=1.0), train=False)
    assert torch.equal(val[(2, 0)]["image"], ImageFlowDataset([pairs], _config(), train=False)[(2, 0)]["image"])


@pytest.mark.parametrize("key,value", [("colour_jitter", 1.0), ("colour_jitter", -0.1), ("colour_jitter", "x"),
                                       ("gray_prob", 1.5), ("gray_prob", -0.5)])
def test_colour_settings_are_checked(key, value):
    with pytest.raises(ConfigError, match=f"data.{key}"):
        _config(**{key: value}).validate()
