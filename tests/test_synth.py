"""Tests of motionprop.data.synth and ``motionprop synth``: exact flow, depth order, files, lists, CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")

from motionprop.cli import main  # noqa: E402
from motionprop.data.flow_io import read_flow, read_flow_jpg  # noqa: E402
from motionprop.data.synth import (  # noqa: E402
    Layer,
    Part,
    SynthConfig,
    clip_files,
    generate,
    limb_shape,
    load_photos,
    make_clip,
    parse_size,
    render_clip,
    render_frame,
    star_shape,
)
from motionprop.errors import InputError  # noqa: E402

SMALL = SynthConfig(height=64, width=96, num_pairs=7, val_fraction=0.3, frames_per_clip=3, seed=3)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return load_photos()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """A small data set written once (list paths relative to the lists folder)."""
    root = tmp_path_factory.mktemp("synth") / "set"
    generate(root, SMALL, progress=False)
    return root


def warp_check(frame1: np.ndarray, frame2: np.ndarray, flow: np.ndarray, mask1: np.ndarray,
               mask2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel errors of frame2 backward-warped by the flow against frame1, the same for zero flow,
    and the pixels where the check applies (same layer in both frames, away from layer edges)."""
    import cv2

    H, W = mask1.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(frame2.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR)
    label2 = cv2.remap(mask2, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    kernel = np.ones((5, 5), np.uint8)
    edge1 = cv2.morphologyEx(mask1, cv2.MORPH_GRADIENT, kernel) > 0
    edge2 = cv2.remap(cv2.morphologyEx(mask2, cv2.MORPH_GRADIENT, kernel), map_x, map_y, cv2.INTER_NEAREST) > 0
    inside = (map_x >= 1) & (map_x <= W - 2) & (map_y >= 1) & (map_y <= H - 2)
    check = inside & (label2 == mask1) & ~edge1 & ~edge2
    error = np.abs(warped - frame1.astype(np.float32)).mean(-1)
    still = np.abs(frame2.astype(np.float32) - frame1.astype(np.float32)).mean(-1)
    return error, still, check


def smooth_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A band-limited random colour texture, so interpolation error is negligible."""
    import cv2

    noise = rng.uniform(0, 255, (size // 8, size // 8, 3)).astype(np.float32)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def test_flow_is_exact_on_smooth_textures():
    rng = np.random.default_rng(0)
    layers = [Layer(smooth_texture(rng, 160), None, center=(59.5, 39.5), shift=(3.2, -1.7), angle=2.0, scale=1.03)]
    for k in range(3):
        layers.append(Layer(smooth_texture(rng, 48), star_shape(rng, 48), center=(25.0 + 30 * k, 30.0 + 5 * k),
                            angle0=30.0 * k, shift=(6.5 - 4 * k, 2.3 * k), angle=-8.0 + 6 * k, scale=0.95 + 0.04 * k))
    clip = render_clip(layers, 3, 80, 120)
    for t in range(2):
        error, still, check = warp_check(clip.frames[t], clip.frames[t + 1], clip.flows[t],
                                         clip.masks[t], clip.masks[t + 1])
        assert check.mean() > 0.5
        assert error[check].mean() < 1.2 and np.percentile(error[check], 99) < 4.0
        assert still[check].mean() > 20 * error[check].mean()
        # A quarter-pixel change of the flow in any direction fits clearly worse: the flow is exact.
        for shift in ((0.25, 0), (-0.25, 0), (0, 0.25), (0, -0.25)):
            moved = clip.flows[t] + np.array(shift, np.float32)
            worse = warp_check(clip.frames[t], clip.frames[t + 1], moved, clip.masks[t], clip.masks[t + 1])[0]
            assert worse[check].mean() > 2 * error[check].mean()


def test_generated_clip_flow_matches_frames(photos):
    for index in range(3):
        clip = make_clip(SynthConfig(), index, photos)
        error, still, check = warp_check(clip.frames[0], clip.frames[1], clip.flows[0], clip.masks[0], clip.masks[1])
        assert check.mean() > 0.5
        # Photo textures lose detail when interpolated twice; still far below the unwarped difference.
        assert np.median(error[check]) < 2.0
        assert error[check].mean() < 0.3 * still[check].mean()


def test_written_files_match_flow(small_set):
    import cv2

    frames = [cv2.imread(str(small_set / f"frames/00000/{t:06d}.jpg")) for t in range(2)]
    masks = [cv2.imread(str(small_set / f"masks/00000/{t:06d}.png"), cv2.IMREAD_UNCHANGED) for t in range(2)]
    flow = read_flow(small_set / "flow/00000/000000.flo")
    assert flow.shape == (SMALL.height, SMALL.width, 2) and flow.dtype == np.float32
    assert masks[0].dtype == np.uint8 and masks[0].shape == flow.shape[:2]
    error, still, check = warp_check(*frames, flow, *masks)
    assert np.median(error[check]) < 3.0 and error[check].mean() < 0.4 * still[check].mean()


def test_front_object_wins_where_objects_overlap():
    rng = np.random.default_rng(1)
    disc = star_shape(np.random.default_rng(5), 40)
    back = Layer(smooth_texture(rng, 40), disc, center=(40.0, 30.0), shift=(-7.0, 2.0))
    front = Layer(smooth_texture(rng, 40), disc, center=(55.0, 30.0), shift=(5.0, -3.0))
    background = Layer(smooth_texture(rng, 120), None, center=(49.5, 29.5))
    image, mask, flow = render_frame([background, back, front], 0, 60, 100)
    front_alone = render_frame([background, front], 0, 60, 100)[1] == 1
    back_alone = render_frame([background, back], 0, 60, 100)[1] == 1
    overlap = front_alone & back_alone
    assert overlap.sum() > 100
    assert (mask[overlap] == 2).all() and np.allclose(flow[overlap], (5.0, -3.0), atol=1e-4)
    only_back = back_alone & ~front_alone
    assert (mask[only_back] == 1).all() and np.allclose(flow[only_back], (-7.0, 2.0), atol=1e-4)
    assert np.allclose(flow[mask == 0], 0, atol=1e-4)


def test_flow_stays_within_max_flow(photos):
    config = SynthConfig(height=96, width=128, max_flow=12.0)
    for index in range(4):
        clip = make_clip(config, index, photos)
        assert all(np.linalg.norm(f, axis=-1).max() <= 12.0 + 1e-3 for f in clip.flows)


def test_same_seed_gives_identical_files(tmp_path, small_set):
    config = SynthConfig(height=48, width=64, num_pairs=3, seed=11)
    for name in ("a", "b"):
        generate(tmp_path / name, config, list_prefix="data/synth", progress=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 5
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = SynthConfig(height=48, width=64, num_pairs=3, seed=12)
    generate(tmp_path / "c", other, progress=False)
    first = "frames/00000/000000.jpg"
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / first).read_bytes()


def test_lists_reference_existing_files_and_split_by_clip(small_set):
    clips = {}
    for split in ("train", "val"):
        lines = (small_set / "lists" / f"{split}.txt").read_text().splitlines()
        clips[split] = set()
        for line in lines:
            paths = line.split()
            assert len(paths) == 3
            for path in paths:
                assert path.startswith("../") and (small_set / "lists" / path).is_file(), path
            clips[split].add(Path(paths[0]).parent.name)
    num_train = len((small_set / "lists/train.txt").read_text().splitlines())
    num_val = len((small_set / "lists/val.txt").read_text().splitlines())
    assert num_train + num_val == SMALL.num_pairs and num_val > 0
    assert clips["train"] and clips["val"] and not clips["train"] & clips["val"]


def test_jpg_flow_pair_lists_four_columns(tmp_path):
    config = SynthConfig(height=48, width=64, num_pairs=2, val_fraction=0, flow_format="jpg")
    generate(tmp_path / "set", config, list_prefix=str(tmp_path / "set"), progress=False)
    (line,) = (tmp_path / "set/lists/train.txt").read_text().splitlines()[:1]
    img1, img2, flow_x, flow_y = line.split()
    assert flow_x.endswith("000000_x.jpg") and flow_y.endswith("000000_y.jpg")
    flow = read_flow_jpg(flow_x, flow_y)
    assert flow.shape == (48, 64, 2) and np.abs(flow).max() < 50
    assert (tmp_path / "set/lists/val.txt").read_text() == ""


def test_rerun_keeps_complete_clips_and_restores_missing_files(small_set):
    before = {p: p.stat().st_mtime_ns for p in small_set.rglob("*") if p.is_file()}
    summary = generate(small_set, SMALL, progress=False)
    assert summary.clips_written == 0
    assert {p: p.stat().st_mtime_ns for p in small_set.rglob("*") if p.is_file()} == before
    lost = small_set / clip_files(SMALL, 1)[-1]
    content = lost.read_bytes()
    lost.unlink()
    summary = generate(small_set, SMALL, progress=False)
    assert summary.clips_written == 1 and lost.read_bytes() == content


def test_existing_folder_with_other_parameters_is_refused(small_set, tmp_path):
    with pytest.raises(InputError, match="seed"):
        generate(small_set, replace(SMALL, seed=4), progress=False)
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        generate(tmp_path, SMALL, progress=False)


def test_parse_size_and_config_validation():
    assert parse_size("192x256") == (192, 256)
    for bad in ("abc", "192", "192x", "-1x5"):
        with pytest.raises(InputError):
            parse_size(bad)
    with pytest.raises(InputError, match="flow_format"):
        SynthConfig(flow_format="exr").validate()


@pytest.mark.parametrize("argument", [["--size", "abc"], ["--objects", "5,2"], ["--flow-format", "exr"],
                                      ["--articulated", "2"]])
def test_cli_bad_argument_exits_2_with_one_line(tmp_path, capsys, argument):
    code = main(["synth", "--out", str(tmp_path / "out"), *argument])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("motionprop synth: error:")
    assert not (tmp_path / "out").exists()


def test_cli_generates_lists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["synth", "--out", "data/synth", "--num-pairs", "4", "--size", "48x64", "--objects", "1,2"])
    assert code == 0
    line = (tmp_path / "data/synth/lists/train.txt").read_text().splitlines()[0]
    assert line.startswith("../frames/00000/000000.jpg ")  # relative to the lists folder
    assert all((tmp_path / "data/synth/lists" / p).is_file() for p in line.split())
    assert "train.txt (2 pairs)" in capsys.readouterr().out


def test_a_rerun_removes_temporaries_of_a_killed_run_but_not_of_a_live_one(tmp_path):
    """After kill -9 the temporary names stay; the next start deletes those whose writer is dead (issue 13)."""
    from test_fileio import dead_pid

    from motionprop.fileio import temp_prefix

    config = SynthConfig(height=48, width=64, num_pairs=3, seed=5)
    root = tmp_path / "set"
    generate(root, config, progress=False)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dead = dead_pid()
    stale = [root / (temp_prefix("synth.json", pid=dead) + "abcdefgh.json"),
             root / "frames/00000" / (temp_prefix("000001.jpg", pid=dead) + "abcdefgh.jpg"),
             root / "lists" / (temp_prefix("train.txt", pid=dead) + "abcdefgh.txt")]
    live = root / "flow/00000" / (temp_prefix("000000.flo") + "abcdefgh.flo")  # this process: a live writer
    for path in [*stale, live]:
        path.write_bytes(b"half written")
    summary = generate(root, config, progress=False)
    assert summary.clips_written == 0
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def hinged_scene(rng: np.random.Generator) -> tuple[list, Layer, Part]:
    """Background, a torso and a two-segment limb, each with its own smooth texture; the limb turns."""
    background = Layer(smooth_texture(rng, 160), None, center=(59.5, 39.5), shift=(1.5, -1.0))
    torso = Layer(smooth_texture(rng, 48), star_shape(rng, 48), center=(50.0, 40.0), shift=(4.0, 1.5), angle=5.0,
                  label=1)
    arm = Part(smooth_texture(rng, 40)[:12], limb_shape(rng, 40, 12), torso, (30.0, 23.5), (6.0, 5.5),
               angle0=-20.0, angle=12.0, label=1)
    forearm = Part(smooth_texture(rng, 32)[:10], limb_shape(rng, 32, 10), arm, (33.0, 5.5), (5.0, 4.5),
                   angle0=40.0, angle=-15.0, label=1)
    return [background, arm, torso, forearm], torso, arm


def test_hinged_parts_move_with_their_parent_and_turn_about_the_joint():
    rng = np.random.default_rng(2)
    layers, torso, arm = hinged_scene(rng)
    for t in range(2):
        # The joint is where the parent carries it, in every frame, so its flow is the parent's flow there.
        joint = arm.placement(t) @ np.array([*arm.anchor, 1.0])
        on_torso = torso.placement(t) @ np.array([*arm.parent_anchor, 1.0])
        assert np.allclose(joint, on_torso)
        assert np.allclose(arm.motion(t) @ joint, torso.motion(t) @ joint)
    # Away from the joint the arm does not move as the torso does (it turns on its own by 12 degrees a frame).
    tip = arm.placement(0) @ np.array([39.0, 5.5, 1.0])
    assert np.linalg.norm((arm.motion(0) @ tip - torso.motion(0) @ tip)[:2]) > 34 * np.radians(12) * 0.9
    # Rendered by parts (a label each) the flow is exact, as for independent layers.
    for layer in layers:
        layer.label = None
    clip = render_clip(layers, 3, 80, 120)
    assert len(np.unique(clip.masks[0])) == 4
    for t in range(2):
        error, still, check = warp_check(clip.frames[t], clip.frames[t + 1], clip.flows[t],
                                         clip.masks[t], clip.masks[t + 1])
        assert check.mean() > 0.5
        assert error[check].mean() < 1.2 and still[check].mean() > 20 * error[check].mean()


def test_articulated_scenes_label_bodies_as_one_object_and_keep_exact_flow(photos):
    config = SynthConfig(articulated=1.0, min_objects=1, max_objects=2, seed=2)
    for index in range(2):
        clip = make_clip(config, index, photos)
        # Every object is a body: its parts share its index, so the mask holds only 0..number of objects.
        assert set(np.unique(clip.masks[0])) <= {0, 1, 2} and clip.masks[0].max() >= 1
        error, still, check = warp_check(clip.frames[0], clip.frames[1], clip.flows[0], clip.masks[0], clip.masks[1])
        assert np.median(error[check]) < 2.0 and error[check].mean() < 0.3 * still[check].mean()
        assert all(np.linalg.norm(f, axis=-1).max() <= config.max_flow + 1e-3 for f in clip.flows)
    # A body's flow is not one affine motion (its limbs turn), a plain object's is.
    assert affine_residual(make_clip(config, 0, photos), 1) > 1.0
    assert affine_residual(make_clip(replace(config, articulated=0.0), 0, photos), 1) < 1e-3


def affine_residual(clip, label: int) -> float:
    """RMS distance of object ``label``'s flow in the first frame from the best affine motion fitted to it."""
    ys, xs = np.nonzero(clip.masks[0] == label)
    design = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    flow = clip.flows[0][ys, xs].astype(np.float64)
    fit, *_ = np.linalg.lstsq(design, flow, rcond=None)
    return float(np.sqrt(((design @ fit - flow) ** 2).sum(axis=1).mean()))


def test_articulated_zero_writes_the_data_sets_of_before(tmp_path, small_set):
    """Bodies are off by default and then draw nothing: the same files and record as before they existed."""
    import json

    record = json.loads((small_set / "synth.json").read_text())["config"]
    assert "articulated" not in record
    # A folder written before the field existed (no 'articulated' in its record) resumes with the default,
    # and is refused with bodies on, naming the parameter.
    assert generate(small_set, SMALL, progress=False).clips_written == 0
    with pytest.raises(InputError, match="articulated: 0.0 -> 0.5"):
        generate(small_set, replace(SMALL, articulated=0.5), progress=False)
    generate(tmp_path / "bodies", replace(SMALL, articulated=0.5), progress=False)
    assert json.loads((tmp_path / "bodies/synth.json").read_text())["config"]["articulated"] == 0.5
    with pytest.raises(InputError, match="articulated: 0.5 -> 0.0"):
        generate(tmp_path / "bodies", SMALL, progress=False)
    with pytest.raises(InputError, match="articulated must be a fraction"):
        SynthConfig(articulated=1.5).validate()
