"""Guided animation: flow schedule, forward warping with occlusion order, hole filling, GIF/MP4/PNG output."""

from __future__ import annotations

import numpy as np
import pytest

from motionprop.apps.animate import (animate, fill_holes, flow_scales, forward_warp, output_kind, render_frames,
                                     write_animation)
from motionprop.apps.propagate import Propagator
from motionprop.cli import main
from motionprop.errors import InputError

from handmade_model import SegmentModel, scene


def square_scene(background=(0, 0, 0)):
    image = np.zeros((40, 60, 3), np.uint8)
    image[:] = background
    flow = np.zeros((40, 60, 2), np.float32)
    return image, flow


def test_flow_scales_forward_and_loop():
    assert flow_scales(5, "forward") == [0, 0.25, 0.5, 0.75, 1]
    loop = flow_scales(8, "loop")
    assert loop == [0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25]  # repeats without a doubled frame
    with pytest.raises(InputError, match="forward or loop"):
        flow_scales(5, "bounce")
    with pytest.raises(InputError, match="at least 2"):
        flow_scales(1)


def test_a_moving_square_lands_where_its_flow_says():
    image, flow = square_scene()
    image[10:20, 10:20] = 255
    flow[10:20, 10:20] = (7, 3)
    frame, holes = forward_warp(image, flow)
    assert frame[13:23, 17:27].min() > 254  # the square, moved by (7, 3)
    assert holes[10:13, 10:20].all() and holes[10:20, 10:17].all()  # where it was, nothing landed
    assert not holes[13:23, 17:27].any() and not holes[30:, 40:].any()


def test_sub_pixel_motion_splats_bilinearly():
    image, flow = square_scene()
    image[10:20, 10:20] = 200
    flow[10:20, 10:20] = (0.5, 0)
    frame, holes = forward_warp(image, flow)
    assert frame[15, 12] == pytest.approx([200, 200, 200])
    assert not holes[15, 20]  # half a source pixel landed beside the square
    assert frame[15, 20, 0] == pytest.approx(200)  # normalized: its colour is the square's, not a blend with 0


@pytest.mark.parametrize("mover", ["red", "blue"])
def test_larger_motion_is_drawn_in_front(mover):
    image, flow = square_scene()
    image[10:20, 5:15] = (255, 0, 0)  # red on the left
    image[10:20, 35:45] = (0, 0, 255)  # blue on the right
    if mover == "red":
        flow[10:20, 5:15] = (30, 0)  # red slides onto blue
    else:
        flow[10:20, 35:45] = (-30, 0)  # blue slides onto red
    frame, _ = forward_warp(image, flow)
    spot = frame[12:18, 37:43] if mover == "red" else frame[12:18, 7:13]
    expected = (255, 0, 0) if mover == "red" else (0, 0, 255)
    np.testing.assert_allclose(spot.reshape(-1, 3), np.broadcast_to(expected, (36, 3)), atol=1e-3)


def test_disoccluded_pixels_are_inpainted_from_their_surroundings():
    image, flow = square_scene(background=(120, 160, 90))
    image[10:20, 10:20] = (250, 250, 250)
    flow[10:20, 10:20] = (12, 0)
    frame, holes = forward_warp(image, flow)
    assert holes.sum() >= 100
    filled = fill_holes(frame, holes)
    assert filled.dtype == np.uint8
    np.testing.assert_allclose(filled[12:18, 11:18].reshape(-1, 3).mean(0), (120, 160, 90), atol=25)
    assert (filled[holes] > 60).all()  # no black left in the holes


def test_render_frames_counts_and_ends():
    image, flow = square_scene()
    image[10:20, 10:20] = 255
    flow[10:20, 10:20] = (8, 0)
    frames = render_frames(image, flow, num_frames=5)
    assert len(frames) == 5 and all(f.shape == image.shape and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(frames[0], image)
    assert frames[-1][15, 24].min() == 255 and frames[-1][15, 11].max() < 50
    assert frames[2][15, 21].min() == 255 and frames[2][15, 10].max() < 50  # halfway: moved by 4
    loop = render_frames(image, flow, num_frames=6, mode="loop")
    assert len(loop) == 6 and np.array_equal(loop[0], image)
    assert np.array_equal(loop[1], loop[5]) and np.array_equal(loop[2], loop[4])


def test_animate_moves_the_object_under_the_arrow():
    image, boxes = scene()  # red square at x 200..224, y 60..84
    propagator = Propagator(SegmentModel())
    propagator.set_image(image)
    frames = animate(propagator, [(211, 71, 40, 10)], num_frames=3)
    assert len(frames) == 3
    last = frames[-1]
    assert (last[72:92, 242:262] == (255, 0, 0)).all()  # the square, 40 px right and 10 down
    assert (last[115:165, 45:95] == (0, 0, 255)).all()  # the blue square stayed
    small = animate(propagator, [(211, 71, 40, 10)], num_frames=3, max_side=150)
    assert small[0].shape == (100, 150, 3)
    assert (small[-1][38:44, 122:130] == (255, 0, 0)).all()


def test_output_kinds():
    assert output_kind("a.gif") == "gif" and output_kind("a.MP4") == "mp4"
    assert output_kind("frames/") == "frames" and output_kind("frames") == "frames"
    with pytest.raises(InputError, match="gif, .mp4"):
        output_kind("a.avi")


def test_gif_mp4_and_png_frames_hold_every_frame(tmp_path):
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (25, 33, 3), dtype=np.uint8) for _ in range(7)]  # odd sides
    write_animation(tmp_path / "a.mp4", frames, fps=10)
    write_animation(tmp_path / "a.gif", frames, fps=10)
    write_animation(tmp_path / "png/", frames)
    with av.open(str(tmp_path / "a.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 7 and decoded[0].shape[:2] == (26, 34)  # padded to even sides
    with av.open(str(tmp_path / "a.gif")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 7
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [f"{k:05d}.png" for k in range(7)]
    import cv2

    back = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "00003.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, frames[3])


def test_gif_colours_stay_close(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    image, flow = square_scene(background=(30, 140, 200))
    image[10:20, 10:20] = (250, 200, 20)
    frames = render_frames(image, flow + np.float32([3, 0]), num_frames=4)
    write_animation(tmp_path / "a.gif", frames)
    with pil.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4
        gif.seek(3)
        last = np.asarray(gif.convert("RGB"))
    assert np.abs(last.astype(int) - frames[3]).mean() < 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import motionprop
    from motionprop.models import create_model, init_weights_trained_like

    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=32, nbins=15))
    cfg.data.crop_size = (64, 64)
    cfg.data.short_size = 64
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    motionprop.save_model(folder, init_weights_trained_like(create_model(cfg)))
    return folder


def test_cli_writes_every_output(checkpoint, tmp_path, capsys):
    import cv2

    pytest.importorskip("av")
    cv2.imwrite(str(tmp_path / "image.png"), np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8))
    code = main(["animate", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "image.png"),
                 "--arrow", "30,20,8,4", "--frames", "6", "--mode", "loop", "--no-progress",
                 "--out", str(tmp_path / "a.gif"), "--out", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "f/")])
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "f").glob("*.png"))) == 6
    assert (tmp_path / "a.gif").stat().st_size > 0 and (tmp_path / "a.mp4").stat().st_size > 0


def test_cli_checks_before_running(checkpoint, tmp_path, capsys):
    import cv2

    cv2.imwrite(str(tmp_path / "image.png"), np.zeros((50, 70, 3), np.uint8))
    base = ["animate", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "image.png")]
    for extra, message in ((["--arrow", "30,20,8,4", "--out", str(tmp_path / "a.avi")], ".avi"),
                           (["--arrow", "80,20,8,4", "--out", str(tmp_path / "a.gif")], "outside the 70x50"),
                           (["--out", str(tmp_path / "a.gif")], "no guidance"),
                           (["--arrow", "3,2,1,1", "--frames", "1", "--out", str(tmp_path / "a.gif")], "2 frames")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a.gif").exists()
