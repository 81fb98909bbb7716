"""Propagator (any image size, cached features, batched queries) and the ``propagate`` command."""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import pytest
import torch

import motionprop
from motionprop.apps.guidance_file import Guidance, read_guidance
from motionprop.apps.propagate import Propagator, draw_arrows, working_shape
from motionprop.cli import main
from motionprop.models import create_model, init_weights_trained_like

from handmade_model import SegmentModel, scene


def tiny_config(decoder: str = "plain", flow_loss: str = "discrete") -> motionprop.Config:
    combo = (1, 2, 4, 8) if decoder == "skip" else (1, 2, 4)
    cfg = motionprop.Config(model=motionprop.ModelConfig(
        image_encoder="resnet18", img_enc_dim=32, nbins=15, fmax=20.0, decoder=decoder, decoder_combo=combo,
        flow_loss=flow_loss))
    cfg.data.crop_size = (64, 64)
    cfg.data.short_size = 64
    return cfg


@functools.lru_cache(maxsize=None)
def tiny_model(decoder: str = "plain", flow_loss: str = "discrete") -> motionprop.CMP:
    """A small random network at a trained-like scale, shared by the tests (they do not change it)."""
    return init_weights_trained_like(create_model(tiny_config(decoder, flow_loss))).eval()


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- working size and mapping


def test_working_shape_keeps_the_aspect_ratio_on_multiples_of_the_stride():
    assert working_shape(1080, 1920, 384, 8) == (384, 680)
    assert working_shape(480, 600, 384, 8) == (384, 480)
    assert working_shape(720, 1280, 384, 32) == (384, 672)
    assert working_shape(300, 200, 64, 8) == (96, 64)
    assert working_shape(10, 1000, 64, 8, min_size=32) == (64, 6400)
    assert working_shape(100, 101, 20, 8, min_size=32) == (32, 32)  # never below the network's minimum


def test_an_arrow_moves_the_object_under_it_after_mapping_and_rescaling():
    image, boxes = scene()  # 300 x 200; the red square is 24 px, 7.7 px at the 64 px working size
    propagator = Propagator(SegmentModel(working_size=64))
    propagator.set_image(image)
    assert propagator.working_shape == (64, 96)
    flow = propagator.propagate([(211, 71, 30, -12)])
    assert flow.shape == (200, 300, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow[66:78, 206:218], np.broadcast_to([30, -12], (12, 12, 2)), atol=1e-4)
    assert np.abs(flow[110:170, 40:100]).max() < 1e-6  # the blue square did not move
    assert np.abs(flow[5:40, 5:150]).max() < 1e-6  # nor the black background

    # One square-width to the left the arrow lands on the background: the square stays still.
    flow = propagator.propagate([(185, 71, 30, -12)])
    assert np.abs(flow[66:78, 206:218]).max() < 1e-6
    assert flow[20, 20, 0] == pytest.approx(30, abs=1e-4)


def test_anisotropic_working_size_scales_each_axis_back():
    image, boxes = scene()
    propagator = Propagator(SegmentModel(), working_size=(64, 64))  # x shrinks by 64/300, y by 64/200
    propagator.set_image(image)
    assert propagator.scale == pytest.approx((64 / 300, 64 / 200))
    sparse = propagator.sparse_input([Guidance([(211, 71, 30, -12)])])
    j, i = np.argwhere(sparse[0, 2].numpy() > 0)[0]
    assert (i, j) == (int((211 + 0.5) * 64 / 300), int((71 + 0.5) * 64 / 200))
    assert sparse[0, :2, j, i].tolist() == pytest.approx([30 * 64 / 300, -12 * 64 / 200])
    flow = propagator.propagate([(211, 71, 30, -12)])
    np.testing.assert_allclose(flow[68:76, 208:216], np.broadcast_to([30, -12], (8, 8, 2)), atol=1e-4)


def test_still_points_hold_their_object_and_win_a_shared_pixel():
    image, boxes = scene()
    propagator = Propagator(SegmentModel())
    propagator.set_image(image)
    flow = propagator.propagate([(211, 71, 30, 0), (70, 140, 0, 10)], still_points=[(70, 140)])
    assert flow[70, 210, 0] == pytest.approx(30, abs=1e-4)
    assert np.abs(flow[140, 70]).max() < 1e-6


def test_batch_equals_single_queries_and_images_of_any_size_work():
    model = tiny_model("skip")
    propagator = Propagator(model, batch_size=2)
    image = random_image(75, 130)  # neither side a multiple of 8
    propagator.set_image(image)
    sets = [([(10, 20, 5, 0)], []), ([(100, 60, -3, 4)], [(5, 5)]), ([], [(64, 30)])]
    flows = propagator.propagate_batch(sets)
    assert flows.shape == (3, 75, 130, 2)
    for k, (arrows, still) in enumerate(sets):
        np.testing.assert_allclose(flows[k], propagator.propagate(arrows, still), atol=2e-3)
    assert np.abs(flows[0] - flows[1]).max() > 0.01  # different guidance, different flow


@pytest.mark.parametrize("decoder", ["plain", "skip"])
def test_cached_decoder_matches_the_network(decoder):
    model = tiny_model(decoder)
    image = torch.randn(1, 3, 64, 96)
    sparse = torch.zeros(3, 4, 64, 96)
    sparse[:, :, 10, 20] = torch.tensor([5.0, -2.0, 1.0, 1.0])
    sparse[1, :, 40, 70] = torch.tensor([-8.0, 3.0, 1.0, 1.0])
    with torch.inference_mode():
        features = model.encode_image(image)
        cached = model.cached_decode(features)
        expected, got = model.decode(features, sparse), cached(sparse)
    scale = expected.abs().max()
    assert scale > 1
    assert (expected - got).abs().max() <= 1e-4 * scale


def test_cached_decode_refuses_an_image_batch_and_a_wrong_size():
    model = tiny_model("skip")
    with torch.inference_mode():
        with pytest.raises(motionprop.InputError, match="one image, got a batch of 2"):
            model.cached_decode(model.encode_image(torch.randn(2, 3, 64, 96)))
        cached = model.cached_decode(model.encode_image(torch.randn(1, 3, 64, 96)))
        with pytest.raises(motionprop.InputError, match=r"sparse is \(64, 64\) but the image was \(64, 96\)"):
            cached(torch.zeros(1, 4, 64, 64))


def test_cached_and_plain_paths_give_the_same_flow():
    model = tiny_model("skip")
    image = random_image(70, 90, seed=3)
    fast, slow = Propagator(model), Propagator(model, cached_decoder=False)
    fast.set_image(image)
    slow.set_image(image)
    assert fast._decoder is not None and slow._decoder is None
    np.testing.assert_allclose(fast.propagate([(30, 30, 6, 2)]), slow.propagate([(30, 30, 6, 2)]), atol=1e-3)


@pytest.mark.parametrize("decoder", ["plain", "skip"])
def test_channels_last_gives_the_same_flow_and_zoomed_annotation_keeps_it(decoder, monkeypatch):
    import copy

    from motionprop.apps.annotate import annotate

    model = tiny_model(decoder)
    image = random_image(70, 90, seed=4)
    plain, last = Propagator(model), Propagator(copy.deepcopy(model), channels_last=True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in last.model.parameters() if p.dim() == 4)
    for propagator in (plain, last):
        propagator.set_image(image)
    assert last._features.features.is_contiguous(memory_format=torch.channels_last)
    query = ([(30, 30, 6, 2)], [(70, 50)])
    np.testing.assert_allclose(last.propagate(*query), plain.propagate(*query), atol=1e-3)
    clicks = np.array([[30.0, 30.0], [40.0, 35.0]])
    modes = []
    set_image = Propagator.set_image
    monkeypatch.setattr(Propagator, "set_image", lambda self, im: (modes.append(self.channels_last), set_image(self, im)))
    zoomed = [annotate(p, clicks, np.zeros((0, 2)), zoom=2.0).score for p in (plain, last)]
    np.testing.assert_allclose(zoomed[1], zoomed[0], atol=1e-3)
    assert modes == [False, True]  # each zoomed crop is encoded in its parent's memory format


def test_confidence_comes_from_the_bins_and_regression_networks_refuse_it():
    propagator = Propagator(tiny_model())
    propagator.set_image(random_image(64, 80))
    flow, confidence = propagator.propagate([(10, 10, 3, 3)], return_confidence=True)
    assert flow.shape == (64, 80, 2) and confidence.shape == (64, 80)
    assert 0 <= confidence.min() and confidence.max() <= 1 and confidence.std() > 0
    regression = Propagator(tiny_model(flow_loss="smooth_l1"))
    regression.set_image(random_image(64, 80))
    assert regression.propagate([(10, 10, 3, 3)]).shape == (64, 80, 2)
    with pytest.raises(motionprop.InputError, match="discrete"):
        regression.propagate([(10, 10, 3, 3)], return_confidence=True)


def test_features_are_encoded_once_per_image():
    model = init_weights_trained_like(create_model(tiny_config())).eval()
    calls = []
    original = model.encode_image
    model.encode_image = lambda image: calls.append(image.shape) or original(image)
    propagator = Propagator(model)
    propagator.set_image(random_image(64, 64))
    for k in range(3):
        propagator.propagate([(k, k, 1, 1)])
    assert len(calls) == 1


def test_inputs_are_checked():
    propagator = Propagator(tiny_model())
    with pytest.raises(motionprop.InputError, match="set_image"):
        propagator.propagate([(1, 1, 1, 1)])
    propagator.set_image(random_image(50, 60))
    with pytest.raises(motionprop.InputError, match="outside the 60x50 image"):
        propagator.propagate([(60, 10, 1, 1)])
    with pytest.raises(motionprop.InputError, match="outside"):
        propagator.propagate(still_points=[(10, -3)])
    with pytest.raises(motionprop.InputError, match="empty"):
        propagator.propagate()
    with pytest.raises(motionprop.InputError, match="4-number rows"):
        propagator.propagate([(1, 2, 3)])
    with pytest.raises(motionprop.InputError):
        propagator.set_image(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(motionprop.InputError, match="multiples of 8"):
        Propagator(tiny_model(), working_size=(60, 64))


def test_arrows_beyond_the_range_warn():
    propagator = Propagator(tiny_model())  # fmax 20 px at the 64 px working size
    propagator.set_image(random_image(128, 128))  # working scale 1/2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        propagator.propagate([(50, 50, 38, 0)])  # 19 px at the working size: fine
    with pytest.warns(UserWarning, match="beyond its range"):
        propagator.propagate([(50, 50, 44, 0)])


def test_set_image_accepts_files_gray_and_float(tmp_path):
    import cv2

    propagator = Propagator(SegmentModel())
    image, _ = scene()
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    propagator.set_image(path)
    assert np.array_equal(propagator.image, image)
    propagator.set_image(np.zeros((40, 30)))
    assert propagator.image.shape == (40, 30, 3) and propagator.image.dtype == np.uint8
    with pytest.raises(motionprop.InputError, match="cannot decode"):
        (tmp_path / "bad.jpg").write_bytes(b"not an image")
        propagator.set_image(tmp_path / "bad.jpg")


def test_draw_arrows_marks_the_image():
    image = np.zeros((60, 80, 3), np.uint8)
    out = draw_arrows(image, Guidance([(10, 30, 40, 0)], [(70, 10)]))
    assert image.max() == 0 and out.shape == image.shape
    assert out[30, 30].max() > 100  # along the arrow
    assert out[10, 70].max() > 100  # the still point's cross
    assert out[50, 40].max() == 0


@pytest.mark.parametrize("example", [0, 1, 2])
def test_example_images_at_their_own_resolution(shared_data, example):
    import cv2

    image = cv2.cvtColor(cv2.imread(str(shared_data / "cmp_examples" / f"{example}.jpg")), cv2.COLOR_BGR2RGB)
    propagator = Propagator(tiny_model())
    propagator.set_image(image)
    h, w = image.shape[:2]
    wh, ww = propagator.working_shape
    assert min(wh, ww) == 64 and wh % 8 == 0 and ww % 8 == 0
    assert abs(ww / wh - w / h) < 0.1
    flow = propagator.propagate([(w / 2, h / 2, w / 20, 0)])
    assert flow.shape == (h, w, 2) and np.isfinite(flow).all()


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    motionprop.save_model(folder, tiny_model("skip"))
    return folder


@pytest.fixture
def image_file(tmp_path):
    import cv2

    path = tmp_path / "image.png"
    cv2.imwrite(str(path), random_image(72, 100))
    return path


def test_cli_writes_flow_picture_and_a_replayable_guidance_file(checkpoint, image_file, tmp_path, capsys):
    from motionprop.data.flow_io import read_flow

    out = tmp_path / "out"
    code = main(["propagate", "--checkpoint", str(checkpoint), "--image", str(image_file),
                 "--arrow", "50,30,6,-2", "20,60,0,4", "--still", "90,5",
                 "--out-flow", str(out / "f.flo"), "--out-vis", str(out / "v.png"),
                 "--out-guidance", str(out / "g.json"), "--out-confidence", str(out / "c.png"),
                 "--max-flow", "10"])
    assert code == 0, capsys.readouterr().err
    flow = read_flow(out / "f.flo")
    assert flow.shape == (72, 100, 2)
    import cv2

    picture = cv2.imread(str(out / "v.png"))
    assert picture.shape[0] == 72 and picture.shape[1] > 3 * 100  # image | flow | confidence
    guidance, size, name = read_guidance(out / "g.json")
    assert size == (100, 72) and name == "image.png"
    assert guidance.arrows.tolist() == [[50, 30, 6, -2], [20, 60, 0, 4]]
    assert guidance.still_points.tolist() == [[90, 5]]

    code = main(["propagate", "--checkpoint", str(checkpoint), "--image", str(image_file),
                 "--guidance", str(out / "g.json"), "--out-flow", str(out / "replay.flo")])
    assert code == 0
    np.testing.assert_allclose(read_flow(out / "replay.flo"), flow, atol=1e-5)


def _run_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_input_errors_are_one_line_and_exit_2(checkpoint, image_file, tmp_path, capsys):
    base = ["propagate", "--checkpoint", str(checkpoint), "--out-flow", str(tmp_path / "f.flo")]
    err = _run_error(capsys, base + ["--image", str(image_file), "--arrow", "100,10,1,1"])
    assert "outside the 100x72 image" in err
    err = _run_error(capsys, base + ["--image", str(image_file)])
    assert "no guidance" in err
    err = _run_error(capsys, base + ["--image", str(image_file), "--arrow", "1,2,3"])
    assert "X,Y,DX,DY" in err or "x,y,dx,dy" in err
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    err = _run_error(capsys, base + ["--image", str(tmp_path / "broken.jpg"), "--arrow", "1,1,1,1"])
    assert "cannot decode image" in err
    err = _run_error(capsys, base + ["--image", str(tmp_path / "missing.jpg"), "--arrow", "1,1,1,1"])
    assert "not found" in err
    err = _run_error(capsys, ["propagate", "--checkpoint", str(checkpoint), "--image", str(image_file),
                              "--arrow", "1,1,1,1"])
    assert "nothing to write" in err
    (tmp_path / "g.json").write_text(json.dumps({"format": "something else"}))
    err = _run_error(capsys, base + ["--image", str(image_file), "--guidance", str(tmp_path / "g.json")])
    assert "not a guidance file" in err


def test_cli_rejects_a_checkpoint_of_the_wrong_kind(checkpoint, image_file, tmp_path, capsys):
    encoder = motionprop.export_encoder(checkpoint, tmp_path / "encoder.safetensors")
    err = _run_error(capsys, ["propagate", "--checkpoint", str(encoder), "--image", str(image_file),
                              "--arrow", "1,1,1,1", "--out-flow", str(tmp_path / "f.flo")])
    assert "image_encoder" in err and "not a full CMP network" in err
    torch.save({"epoch": 3, "note": "not weights"}, tmp_path / "other.pth")
    err = _run_error(capsys, ["propagate", "--checkpoint", str(tmp_path / "other.pth"), "--config",
                              "resnet50_yfcc_voc_16gpu_42k", "--image", str(image_file), "--arrow", "1,1,1,1",
                              "--out-flow", str(tmp_path / "f.flo")])
    assert "other.pth" in err and "neither a CMP checkpoint" in err
    err = _run_error(capsys, ["propagate", "--checkpoint", str(tmp_path / "nothing"), "--image",
                              str(image_file), "--arrow", "1,1,1,1", "--out-flow", str(tmp_path / "f.flo")])
    assert "checkpoint not found" in err
    assert not (tmp_path / "f.flo").exists()


def test_default_working_size_is_the_training_images_short_side():
    """Training resizes images to data.short_size before cropping: the network knows objects at that scale."""
    from motionprop.apps.propagate import default_working_size

    data = motionprop.Config().data
    data.short_size, data.crop_size = 192, (128, 128)
    assert default_working_size(data) == 192
    data.short_size, data.long_size = None, 640
    assert default_working_size(data) == 128
    propagator = Propagator(tiny_model())  # short_size 64
    propagator.set_image(random_image(192, 256))
    assert propagator.working_shape == (64, 88)
