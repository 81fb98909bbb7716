"""GrabCut refinement of click-to-mask: it snaps a rough mask to the object, keeps the clicks, and is an option."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from motionprop.apps import refine
from motionprop.apps.annotate import annotate
from motionprop.apps.propagate import Propagator
from motionprop.apps.refine import click_discs, grabcut, refine_mask
from motionprop.cli import main
from motionprop.errors import InputError

from handmade_model import SegmentModel, box_mask, iou, scene


def noisy_disc_scene(width: int = 160, height: int = 120, radius: int = 25, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A reddish disc on a greenish background, both with pixel noise: the image (H, W, 3) and the disc mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    truth = (xx - 70) ** 2 + (yy - 60) ** 2 <= radius ** 2
    image = np.where(truth[..., None], (200, 60, 50), (60, 150, 70)).astype(np.float64)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_grabcut_snaps_a_too_large_mask_to_the_object():
    image, truth = noisy_disc_scene()
    yy, xx = np.mgrid[0:120, 0:160]
    rough = (xx - 78) ** 2 + (yy - 55) ** 2 <= 42 ** 2  # off-centre and 2.8x the area
    score = np.clip(1 - np.sqrt((xx - 78) ** 2 + (yy - 55) ** 2) / 84, 0, 1).astype(np.float32)
    refined = refine_mask(image, score, rough, np.array([[70.0, 60.0]]), np.zeros((0, 2)))
    assert iou(rough, truth) < 0.4
    assert iou(refined, truth) > 0.9


def test_clicks_are_sure_and_the_unmoved_is_background():
    image, truth = noisy_disc_scene()
    rough = truth.copy()
    score = truth.astype(np.float32)
    # a positive click on the background and a negative one inside the disc: the user's word wins
    positive, negative = np.array([[10.0, 10.0]]), np.array([[70.0, 60.0]])
    refined = refine_mask(image, score, rough, positive, negative)
    assert refined[click_discs(truth.shape, positive)].all()
    assert not refined[click_discs(truth.shape, negative)].any()
    far = (score < refine.SURE_BACKGROUND_SCORE) & ~click_discs(truth.shape, positive)
    assert not refined[far].any()  # what no probe moved stays out


def test_nothing_to_fit_a_colour_model_to_returns_the_mask():
    image, _ = noisy_disc_scene()
    everything = np.ones(image.shape[:2], bool)
    nothing = np.zeros(image.shape[:2], bool)
    assert grabcut(image, everything, nothing, nothing).all()
    assert not grabcut(image, nothing, nothing, np.ones_like(nothing)).any()


def test_refinement_is_deterministic():
    image, truth = noisy_disc_scene(seed=3)
    yy, xx = np.mgrid[0:120, 0:160]
    rough = (xx - 75) ** 2 + (yy - 60) ** 2 <= 35 ** 2
    first = grabcut(image, rough, click_discs(rough.shape, [[70, 60]]), ~((xx - 75) ** 2 + (yy - 60) ** 2 <= 60 ** 2))
    for _ in range(3):
        cv2.kmeans(np.random.rand(50, 2).astype(np.float32), 3, None,  # moves OpenCV's random state
                   (cv2.TERM_CRITERIA_MAX_ITER, 3, 0), 1, cv2.KMEANS_RANDOM_CENTERS)
        again = grabcut(image, rough, click_discs(rough.shape, [[70, 60]]),
                        ~((xx - 75) ** 2 + (yy - 60) ** 2 <= 60 ** 2))
        assert np.array_equal(first, again)


def test_large_images_are_cut_at_a_bounded_size(monkeypatch):
    image, truth = noisy_disc_scene()
    big = cv2.resize(image, (2240, 1680), interpolation=cv2.INTER_NEAREST)
    big_truth = cv2.resize(truth.astype(np.uint8), (2240, 1680), interpolation=cv2.INTER_NEAREST) > 0
    seen = []
    real = cv2.grabCut
    monkeypatch.setattr(cv2, "grabCut", lambda img, *a: seen.append(img.shape) or real(img, *a))
    rough = cv2.dilate(big_truth.astype(np.uint8), np.ones((61, 61), np.uint8)) > 0
    out = grabcut(big, rough, click_discs(rough.shape, [[980, 840]], radius=40), ~cv2.dilate(
        rough.astype(np.uint8), np.ones((201, 201), np.uint8)).astype(bool))
    assert seen and max(seen[0][:2]) <= refine.MAX_SIDE
    assert out.shape == big_truth.shape and iou(out, big_truth) > 0.9 > iou(rough, big_truth)


def test_annotate_refines_only_on_request():
    image, boxes = scene()
    propagator = Propagator(SegmentModel())
    propagator.set_image(image)
    plain = annotate(propagator, [(211, 71)], threshold=0.2)  # a low threshold: a mask too large
    refined = annotate(propagator, [(211, 71)], threshold=0.2, refine="grabcut")
    red = box_mask(boxes["red"])
    assert np.array_equal(plain.score, refined.score)  # the score stays the motion score
    assert iou(plain.mask, red) < 0.85 < 0.95 < iou(refined.mask, red)
    with pytest.raises(InputError, match="refine must be one of none, grabcut"):
        annotate(propagator, [(211, 71)], refine="snake")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_refine(tmp_path, capsys):
    import motionprop
    from motionprop.models import create_model, init_weights_trained_like

    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=32, nbins=15))
    cfg.data.crop_size = (64, 64)
    cfg.data.short_size = 64
    motionprop.save_model(tmp_path / "ckpt", init_weights_trained_like(create_model(cfg)))
    image, _ = scene()
    cv2.imwrite(str(tmp_path / "image.png"), image)
    base = ["annotate", "--checkpoint", str(tmp_path / "ckpt"), "--image", str(tmp_path / "image.png"),
            "--positive", "211,71"]
    with pytest.raises(SystemExit) as stop:
        main(base + ["--out", str(tmp_path / "x.png"), "--refine", "snake"])
    assert stop.value.code == 2 and "invalid choice: 'snake'" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "m.png"), "--refine", "grabcut"]) == 0, capsys.readouterr().err
    mask = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (200, 300) and mask[71, 211] == 255  # the click is always in its mask
