"""Click-to-mask annotation: probes, score and threshold, negative clicks, zoom-in, batch mode, command line."""

from __future__ import annotations

import importlib
import json

import cv2
import numpy as np
import pytest

from motionprop.apps.annotate import (annotate, annotate_batch, label_map, motion_score, probe_guidance,
                                      read_batch, zoom_box)
from motionprop.apps.coco import decode_rle
from motionprop.apps.propagate import Propagator
from motionprop.cli import main
from motionprop.errors import InputError

from handmade_model import SegmentModel, box_mask, iou, scene


@pytest.fixture
def propagator():
    image, _ = scene()
    propagator = Propagator(SegmentModel())
    propagator.set_image(image)
    return propagator


def test_probes_move_positive_clicks_four_ways_and_hold_negatives():
    sets = probe_guidance(np.array([[10.0, 20.0], [30.0, 40.0]]), np.array([[5.0, 5.0]]), (3.0, 2.0))
    assert len(sets) == 4
    assert [s.arrows[0, 2:].tolist() for s in sets] == [[3, 0], [-3, 0], [0, 2], [0, -2]]
    assert all(s.arrows[:, :2].tolist() == [[10, 20], [30, 40]] for s in sets)
    assert all(s.still_points.tolist() == [[5, 5]] for s in sets)


def test_probe_velocity_is_in_working_pixels(propagator):
    seen = []
    original = propagator.propagate_batch
    propagator.propagate_batch = lambda sets, **kw: seen.append(propagator.sparse_input(sets)) or original(sets)
    annotate(propagator, [(70, 140)], velocity=12)
    sparse = seen[0]
    assert sparse.shape[0] == 4
    j, i = np.argwhere(sparse[0, 2].numpy() > 0)[0]
    vectors = [sparse[k, :2, j, i].tolist() for k in range(4)]
    assert vectors == [pytest.approx(v) for v in ([12, 0], [-12, 0], [0, 12], [0, -12])]


def test_motion_score_is_the_normalized_mean_speed():
    flows = np.zeros((4, 3, 3, 2), np.float32)
    flows[0, 1, 1] = (8, 0)
    flows[2, 1, 1] = (0, -8)
    flows[1, 0, 0] = (4, 0)
    score = motion_score(flows)
    assert score[1, 1] == 1 and score[0, 0] == pytest.approx(0.25) and score[2, 2] == 0
    assert motion_score(np.zeros((4, 2, 2, 2))).max() == 0  # nothing moves: an empty mask, no division by 0


def test_a_click_gives_the_object_under_it(propagator):
    _, boxes = scene()
    result = annotate(propagator, [(70, 140)])
    assert result.mask.shape == (200, 300) and result.mask.dtype == bool
    assert iou(result.mask, box_mask(boxes["blue"])) > 0.85
    assert result.score.max() == pytest.approx(1) and result.zoom_box is None
    red = annotate(propagator, [(211, 71)])
    assert iou(red.mask, box_mask(boxes["red"])) > 0.6  # 7.7 px at the working size: edges blur
    assert not (red.mask & box_mask(boxes["blue"])).any()


def test_negative_clicks_hold_their_region_still(propagator):
    _, boxes = scene()
    both = annotate(propagator, [(70, 140), (10, 10)])
    background = ~box_mask(boxes["blue"]) & ~box_mask(boxes["red"])
    assert both.mask[background].mean() > 0.95  # a click on the background selects it too
    held = annotate(propagator, [(70, 140), (10, 10)], negative=[(150, 20)])
    assert held.mask[background].mean() < 0.05
    assert iou(held.mask, box_mask(boxes["blue"])) > 0.85


def test_threshold_moves_the_boundary(propagator):
    loose = annotate(propagator, [(211, 71)], threshold=0.05).mask.sum()
    strict = annotate(propagator, [(211, 71)], threshold=0.9).mask.sum()
    assert loose > strict > 0


def test_zoom_box():
    positive = np.array([[100.0, 100.0], [110.0, 104.0]])
    assert zoom_box(positive[:1], np.zeros((0, 2)), 400, 300, 4) is None  # one click: no extent
    assert zoom_box(positive, np.zeros((0, 2)), 400, 300, 4) == (85, 82, 125, 122)  # 4 x the 10 px extent
    assert zoom_box(positive, np.zeros((0, 2)), 400, 300, 100) is None  # the whole image
    x0, y0, x1, y1 = zoom_box(np.array([[2.0, 3.0], [20.0, 10.0]]), np.zeros((0, 2)), 400, 300, 4)
    assert (x0, y0) == (0, 0) and (x1, y1) == (72, 72)  # shifted inside the image


def test_zoom_recovers_a_small_object():
    image = np.zeros((300, 400, 3), np.uint8)
    image[200:212, 300:312] = (0, 255, 0)  # 12 px: 2.6 px at the 64 px working size
    truth = np.zeros((300, 400), bool)
    truth[200:212, 300:312] = True
    propagator = Propagator(SegmentModel())
    propagator.set_image(image)
    clicks = [(303, 203), (308, 208)]
    plain = annotate(propagator, clicks)
    zoomed = annotate(propagator, clicks, zoom=4)
    assert zoomed.zoom_box is not None
    x0, y0, x1, y1 = zoomed.zoom_box
    assert x0 <= 300 and y0 <= 200 and x1 >= 312 and y1 >= 212 and x1 - x0 < 100
    assert iou(zoomed.mask, truth) > 0.8
    assert iou(zoomed.mask, truth) > iou(plain.mask, truth) + 0.1
    assert np.array_equal(propagator.image, image) and propagator.working_shape == (64, 88)  # untouched


def test_inputs_are_checked(propagator):
    with pytest.raises(InputError, match="positive"):
        annotate(propagator, [])
    with pytest.raises(InputError, match="negative click 10,250 is outside the 300x200"):
        annotate(propagator, [(10, 10)], negative=[(10, 250)])
    with pytest.raises(InputError, match="positive click 300,5 is outside"):  # a click, not a "still point"
        annotate(propagator, [(300, 5)])
    with pytest.raises(InputError, match="threshold"):
        annotate(propagator, [(10, 10)], threshold=1.5)


def test_label_map_gives_overlaps_to_the_higher_score():
    from motionprop.apps.annotate import Annotation

    a = Annotation(np.array([[1, 1, 0]], bool), np.array([[0.9, 0.6, 0.1]], np.float32))
    b = Annotation(np.array([[0, 1, 1]], bool), np.array([[0.2, 0.8, 0.7]], np.float32))
    assert label_map([a, b]).tolist() == [[1, 2, 2]]


# --------------------------------------------------------------------------- batch mode


def write_batch(tmp_path, objects_second=None):
    image, _ = scene()
    (tmp_path / "imgs").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "imgs" / "b.png"), cv2.cvtColor(image[:, ::-1], cv2.COLOR_RGB2BGR))
    batch = {"images": [
        {"file": "imgs/a.png", "objects": [
            {"positive": [[70, 140]], "category": "box"},
            {"positive": [{"x": 211, "y": 71}], "negative": [[150, 20]], "category": "small box"}]},
        {"file": "imgs/b.png", "objects": objects_second or [{"positive": [[229, 140]]}]},
    ]}
    path = tmp_path / "clicks.json"
    path.write_text(json.dumps(batch))
    return path


def test_batch_writes_a_png_per_object_and_a_coco_file(tmp_path):
    _, boxes = scene()
    path = write_batch(tmp_path)
    summary = annotate_batch(Propagator(SegmentModel()), path, tmp_path / "out", coco_path=tmp_path / "m.json",
                             overlays=True)
    assert summary.images == 2 and summary.objects == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "a_1.png", "a_2.png", "a_overlay.png", "b_1.png", "b_overlay.png"]
    first = cv2.imread(str(tmp_path / "out" / "a_1.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(first)) == {0, 255}
    assert iou(first > 0, box_mask(boxes["blue"])) > 0.85
    mirrored = cv2.imread(str(tmp_path / "out" / "b_1.png"), cv2.IMREAD_UNCHANGED) > 0
    assert iou(mirrored, box_mask(boxes["blue"])[:, ::-1]) > 0.85

    coco = json.loads((tmp_path / "m.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["imgs/a.png", "imgs/b.png"]
    assert [c["name"] for c in coco["categories"]] == ["box", "small box", "object"]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1, 2]
    assert np.array_equal(decode_rle(coco["annotations"][0]["segmentation"]), first > 0)
    assert coco["annotations"][1]["clicks"] == {"positive": [[211, 71]], "negative": [[150, 20]]}


def test_batch_indexed_labels(tmp_path):
    _, boxes = scene()
    path = write_batch(tmp_path)
    annotate_batch(Propagator(SegmentModel()), path, tmp_path / "out", indexed=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    labels = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert iou(labels == 1, box_mask(boxes["blue"])) > 0.85
    assert iou(labels == 2, box_mask(boxes["red"])) > 0.6


@pytest.mark.parametrize("second, message", [
    ([{"positive": [[400, 10]]}], "outside the 300x200"),
    ([{"negative": [[10, 10]]}], "at least one positive"),
    ([{"positive": [[10, "a"]]}], r"positive\[0\] must be \[x, y\]"),
    ([], "non-empty \"objects\""),
])
def test_batch_is_checked_before_any_image_runs(tmp_path, second, message):
    path = write_batch(tmp_path)
    raw = json.loads(path.read_text())
    raw["images"][1]["objects"] = second
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=message):
        read_batch(path)


def test_batch_names_must_be_unique_and_images_readable(tmp_path):
    path = write_batch(tmp_path)
    raw = json.loads(path.read_text())
    raw["images"][1]["name"] = "a"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="output name 'a'"):
        read_batch(path)
    raw["images"][1] = {"file": "imgs/none.png", "objects": [{"positive": [[1, 1]]}]}
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="image not found"):
        read_batch(path)


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import motionprop
    from motionprop.models import create_model, init_weights_trained_like

    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=32, nbins=15,
                                                         decoder="skip", decoder_combo=(1, 2, 4, 8)))
    cfg.data.crop_size = (64, 64)
    cfg.data.short_size = 64
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    motionprop.save_model(folder, init_weights_trained_like(create_model(cfg)))
    return folder


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_single_image(checkpoint, tmp_path, capsys):
    image, _ = scene()
    cv2.imwrite(str(tmp_path / "image.png"), image)
    out = tmp_path / "out"
    code = main(["annotate", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "image.png"),
                 "--positive", "70,140", "80,150", "--negative", "250,20", "--zoom",
                 "--out", str(out / "mask.png"), "--overlay", str(out / "overlay.png"),
                 "--out-score", str(out / "score.png"), "--coco", str(out / "mask.json")])
    assert code == 0, capsys.readouterr().err
    mask = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (200, 300) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
    assert cv2.imread(str(out / "overlay.png")).shape == (200, 300, 3)
    coco = json.loads((out / "mask.json").read_text())
    assert np.array_equal(decode_rle(coco["annotations"][0]["segmentation"]), mask > 0)
    coco_api = pytest.importorskip("pycocotools.coco")
    loaded = coco_api.COCO(str(out / "mask.json"))
    assert np.array_equal(loaded.annToMask(loaded.loadAnns(1)[0]), (mask > 0).astype(np.uint8))


def test_cli_batch_mode(checkpoint, tmp_path, capsys):
    path = write_batch(tmp_path)
    code = main(["annotate", "--checkpoint", str(checkpoint), "--batch", str(path), "--out", str(tmp_path / "o"),
                 "--indexed", "--coco", str(tmp_path / "o.json"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]
    assert len(json.loads((tmp_path / "o.json").read_text())["annotations"]) == 3


def test_cli_errors(checkpoint, tmp_path, capsys):
    image, _ = scene()
    cv2.imwrite(str(tmp_path / "image.png"), image)
    base = ["annotate", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "image.png"),
            "--out", str(tmp_path / "m.png")]
    bad_batch = write_batch(tmp_path, objects_second=[{"positive": [[500, 1]]}])
    for argv, message in ((base, "no positive click"),
                          (base + ["--positive", "310,10"], "outside the 300x200"),
                          (base + ["--positive", "10"], "--positive"),
                          (base + ["--positive", "10,10", "--indexed"], "batch mode"),
                          (base + ["--positive", "10,10", "--border-per-side", "0"], "border_per_side must be positive"),
                          (["annotate", "--checkpoint", str(checkpoint), "--batch", str(bad_batch),
                            "--out", str(tmp_path / "o")], "images[1].objects[0]")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "o").exists()


class _Recorder:
    """A propagator stand-in that records the guidance of every probe and moves nothing but the clicks."""

    def __init__(self, residual: bool):
        self.model = type("Model", (), {"residual": residual})()
        self.image_size, self.scale, self.sets, self.options = (60, 100), (1.0, 1.0), [], []

    def propagate_batch(self, sets, **options):
        self.sets += sets
        self.options.append(options)
        flows = np.zeros((len(sets), 60, 100, 2), np.float32)
        flows[:, 30, 50] = 1.0
        return flows


@pytest.mark.parametrize("residual, border_still, added", [(True, None, True), (False, None, False),
                                                           (False, True, True), (True, False, False)])
def test_border_still_points_are_added_for_residual_networks_or_on_request(residual, border_still, added):
    from motionprop.apps.annotate import border_points

    recorder = _Recorder(residual)
    annotate(recorder, [(50, 30)], [(5, 5)], border_still=border_still)
    assert len(recorder.sets) == 4
    assert recorder.options == [{"dominant_motion": False}]  # the probes' still points, not a prior, say the rest
    for guidance in recorder.sets:
        if added:
            assert np.array_equal(guidance.still_points[1:], border_points(100, 60))
        else:
            assert len(guidance.still_points) == 1


@pytest.mark.parametrize("width, height", [(100, 60), (256, 192), (854, 480), (3, 3)])
def test_border_points_ring_the_image_at_a_twelfth_of_its_short_side(width, height):
    from motionprop.apps.annotate import BORDER_STILL_PER_SIDE, border_points

    points = border_points(width, height)
    x, y = points[:, 0], points[:, 1]
    on_border = (x == 0) | (x == width - 1) | (y == 0) | (y == height - 1)
    assert on_border.all() and (x >= 0).all() and (x <= width - 1).all() and (y >= 0).all() and (y <= height - 1).all()
    corners = {(0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)}
    assert corners <= {tuple(p) for p in points.tolist()}
    assert len({tuple(p) for p in points.tolist()}) == len(points)  # no point twice
    spacing = max(1.0, (min(width, height) - 1) / BORDER_STILL_PER_SIDE)
    for along in (np.sort(x[y == 0]), np.sort(y[x == 0])):  # neighbours along the top and the left edge
        gaps = np.diff(along)
        assert gaps.max() <= 1.5 * spacing and gaps.min() >= 0.5 * spacing


def test_border_points_do_not_depend_on_the_resolution():
    from motionprop.apps.annotate import border_points

    small, large = border_points(213, 120), border_points(853, 481)
    assert len(small) == len(large)
    assert np.allclose(small / [212, 119], large / [852, 480])


def test_border_per_side_sets_how_many_still_points_ring_the_image():
    from motionprop.apps.annotate import border_points

    recorder = _Recorder(True)
    annotate(recorder, [(50, 30)], border_per_side=3)
    assert np.array_equal(recorder.sets[0].still_points, border_points(100, 60, 3))
    assert len(border_points(100, 60, 3)) < len(border_points(100, 60))
    with pytest.raises(InputError, match="border_per_side"):
        annotate(recorder, [(50, 30)], border_per_side=0)


class _BatchRecorder(_Recorder):
    """The recorder for batch mode: takes the image's size from the file it is given."""

    def set_image(self, path):
        self.image = cv2.imread(str(path))[..., ::-1]
        self.image_size = self.image.shape[:2]

    def propagate_batch(self, sets, **options):
        self.sets += sets
        height, width = self.image_size
        flows = np.zeros((len(sets), height, width, 2), np.float32)
        flows[:, height // 2, width // 2] = 1.0
        return flows


@pytest.mark.parametrize("border_still, per_side", [(None, None), (False, None), (None, 3)])
def test_batch_mode_passes_the_border_still_points_on(tmp_path, border_still, per_side):
    from motionprop.apps.annotate import border_points

    recorder = _BatchRecorder(True)
    annotate_batch(recorder, write_batch(tmp_path), tmp_path / "out", border_still=border_still,
                   border_per_side=per_side)
    height, width = recorder.image_size
    first = recorder.sets[0]  # the first object: one positive click, no negative one
    if border_still is False:
        assert len(first.still_points) == 0
    else:
        assert np.array_equal(first.still_points, border_points(width, height, per_side or 12))


def test_cli_batch_mode_hands_its_border_options_to_the_batch(checkpoint, tmp_path, monkeypatch):
    annotate_module = importlib.import_module("motionprop.apps.annotate")  # the package exports a function so named
    seen = {}

    def fake_batch(propagator, images, out, **kwargs):
        seen.update(kwargs)
        return annotate_module.BatchSummary(images=0, objects=0, masks=[], coco=None)

    monkeypatch.setattr(annotate_module, "annotate_batch", fake_batch)
    code = main(["annotate", "--checkpoint", str(checkpoint), "--batch", str(write_batch(tmp_path)),
                 "--out", str(tmp_path / "o"), "--no-border-still", "--border-per-side", "5", "--no-progress"])
    assert code == 0
    assert seen["border_still"] is False and seen["border_per_side"] == 5
