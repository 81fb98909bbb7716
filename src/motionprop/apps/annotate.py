"""Semi-automatic annotation: a few clicks on an object -> its mask, by probing how it would move.

The paper's method (and its demo's): every positive click gets guidance of a
fixed velocity in four directions (+x, -x, +y, -y: four guidance sets,
decoded in one batch against the once-encoded image); negative clicks are
still points in all four. A pixel that moves with the clicks in every probe
belongs to the object: the score is the mean ``|flow|`` over the four probes
(and both axes), divided by its maximum, and the mask is ``score >
threshold`` (0.5). The velocity (30 px, as in the original demo) is in pixels
of the network's working size.

Small objects: with ``zoom`` (the demo used 4), the image is cropped to a
square ``zoom`` times the extent of the clicks around their centre (at least
two clicks are needed to have an extent), the crop is run at the full working
size, and its score is pasted back.

Batch mode (:func:`annotate_batch`) reads a JSON of images with clicks for
several objects each (format in ``docs/apps.md``) and writes one PNG per
object (or one label PNG per image) and a COCO-style JSON with RLE masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .guidance_file import Guidance

DEFAULT_VELOCITY = 30.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_ZOOM = 4.0
MIN_ZOOM_SIDE = 32  # px of the image: a zoom box never gets smaller than this
BORDER_STILL_PER_SIDE = 12  # border still points: one every 1/12 of the short side (16 px at 192)

_DIRECTIONS = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))


@dataclass
class Annotation:
    """One object's result: ``mask`` (H, W) bool, ``score`` (H, W) float32 in [0, 1], the zoom box if any."""

    mask: np.ndarray
    score: np.ndarray
    zoom_box: tuple[int, int, int, int] | None = None
    """(x0, y0, x1, y1) of the crop the network saw, in image pixels (x1, y1 exclusive)."""


def _points(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values if len(values) else np.zeros((0, 2)), dtype=np.float64)
    if array.ndim == 1 and array.size == 2:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise InputError(f"{what} clicks must be (x, y) pairs of finite numbers, got shape {array.shape}")
    return array


def _check_clicks_inside(positive: np.ndarray, negative: np.ndarray, width: int, height: int) -> None:
    """Raise :class:`InputError` naming the first click outside a ``width`` x ``height`` image."""
    for kind, points in (("positive", positive), ("negative", negative)):
        for x, y in points.tolist():
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                raise InputError(f"{kind} click {x:g},{y:g} is outside the {width}x{height} image "
                                 f"(x must be in 0..{width - 1}, y in 0..{height - 1})")


def probe_guidance(positive: np.ndarray, negative: np.ndarray, velocity: tuple[float, float]) -> list[Guidance]:
    """The four probes: every positive click moving by ``velocity`` along +x, -x, +y, -y; negatives still."""
    vx, vy = velocity
    sets = []
    for ux, uy in _DIRECTIONS:
        arrows = np.array([[x, y, ux * vx, uy * vy] for x, y in positive.tolist()]).reshape(-1, 4)
        sets.append(Guidance(arrows, negative))
    return sets


def motion_score(flows: np.ndarray) -> np.ndarray:
    """(P, H, W, 2) probe flows -> (H, W) mean |flow| over probes and axes, divided by its maximum."""
    score = np.abs(flows).mean(axis=(0, 3)).astype(np.float32)
    peak = float(score.max())
    return score / peak if peak > 0 else score


def zoom_box(positive: np.ndarray, negative: np.ndarray, width: int, height: int, zoom: float
             ) -> tuple[int, int, int, int] | None:
    """The crop (x0, y0, x1, y1) around the clicks for ``zoom``, or None when it would hold the whole image."""
    points = np.concatenate([positive, negative])
    if len(points) < 2:
        return None
    low, high = points.min(axis=0), points.max(axis=0)
    side = max(float((high - low).max()) * zoom, MIN_ZOOM_SIDE)
    box_w, box_h = min(int(np.ceil(side)), width), min(int(np.ceil(side)), height)
    if box_w >= width and box_h >= height:
        return None
    cx, cy = (low + high) / 2
    x0 = int(np.clip(round(cx - box_w / 2), 0, width - box_w))
    y0 = int(np.clip(round(cy - box_h / 2), 0, height - box_h))
    return x0, y0, x0 + box_w, y0 + box_h


def annotate(propagator: Any, positive: Any, negative: Any = (), *, velocity: float = DEFAULT_VELOCITY,
             threshold: float = DEFAULT_THRESHOLD, zoom: float | None = None,
             border_still: bool | None = None, border_per_side: float | None = None,
             refine: str = "none") -> Annotation:
    """Mask of the object under the ``positive`` clicks (x, y) of the propagator's current image.

    ``negative`` clicks mark pixels outside the object (still points).
    ``velocity`` is the probe speed in pixels of the working size; ``zoom``
    (e.g. 4) enables the zoom-in for small objects. ``border_still`` adds
    still points all along the border of the image the network sees (the
    background rarely moves with the object; :func:`border_points`,
    ``border_per_side`` of them along the short side, None for
    ``BORDER_STILL_PER_SIDE``); None: only for networks whose flow starts
    from an interpolation of the guidance (``model.prediction: residual``),
    which moves the whole image with a lone click. ``refine="grabcut"`` snaps the mask to the image's colours
    (:mod:`motionprop.apps.refine`; not the paper's method); the score stays the motion score.
    """
    from .refine import check_method

    positive, negative = _points(positive, "positive"), _points(negative, "negative")
    if len(positive) == 0:
        raise InputError("annotation needs at least one positive click")
    if not 0 <= threshold < 1:
        raise InputError(f"threshold must be in [0, 1), got {threshold}")
    if velocity <= 0:
        raise InputError(f"velocity must be positive, got {velocity}")
    if zoom is not None and zoom <= 0:
        raise InputError(f"zoom must be positive, got {zoom}")
    check_method(refine)
    height, width = propagator.image_size
    _check_clicks_inside(positive, negative, width, height)
    both = {tuple(p) for p in np.round(positive).tolist()} & {tuple(p) for p in np.round(negative).tolist()}
    if both:
        x, y = sorted(both)[0]
        raise InputError(f"pixel ({x:g}, {y:g}) is both a positive and a negative click: remove one")
    border_per_side = _border_per_side(border_per_side)
    if border_still is None:
        border_still = bool(getattr(getattr(propagator, "model", None), "residual", False))
    border = border_per_side if border_still else 0.0
    result = _motion_mask(propagator, positive, negative, velocity, threshold, zoom, border)
    if refine == "grabcut":
        from .refine import refine_mask

        result.mask = refine_mask(propagator.image, result.score, result.mask, positive, negative)
    return result


def _motion_mask(propagator: Any, positive: np.ndarray, negative: np.ndarray, velocity: float, threshold: float,
                 zoom: float | None, border: float) -> Annotation:
    """The paper's mask of :func:`annotate`, zoomed in on the clicks when ``zoom`` gives a box."""
    from .propagate import Propagator

    height, width = propagator.image_size
    box = zoom_box(positive, negative, width, height, zoom) if zoom else None
    if box is None:
        return Annotation(*_probe(propagator, positive, negative, velocity, threshold, border))
    x0, y0, x1, y1 = box
    crop = Propagator(propagator.model, propagator.working_size, propagator.batch_size,
                      propagator.use_cached_decoder, channels_last=getattr(propagator, "channels_last", False),
                      precision=getattr(propagator, "precision", "fp32"))
    crop.set_image(propagator.image[y0:y1, x0:x1])
    offset = np.array([x0, y0], np.float64)
    _, crop_score = _probe(crop, positive - offset, negative - offset, velocity, threshold, border)
    score = np.zeros((height, width), np.float32)
    score[y0:y1, x0:x1] = crop_score
    return Annotation(score > threshold, score, box)


def _border_per_side(value: float | None) -> float:
    """The number of border still points per short side: ``value``, or the default for None; must be positive."""
    if value is None:
        return BORDER_STILL_PER_SIDE
    if not value > 0:
        raise InputError(f"border_per_side must be positive, got {value}")
    return float(value)


def border_points(width: int, height: int, per_short_side: float = BORDER_STILL_PER_SIDE) -> np.ndarray:
    """(N, 2) (x, y): still points all along the border of a ``width`` x ``height`` image, corners included.

    Spaced evenly, about ``min(width, height) / per_short_side`` apart, so the
    same picture at any resolution gets the same points. A ring of still
    points tells a residual network that the background stays put everywhere,
    not only at a few spots (chosen on the synthetic validation clips, see
    docs/apps.md).
    """
    spacing = max(1.0, (min(width, height) - 1) / per_short_side)
    xs = np.linspace(0, width - 1, max(2, round((width - 1) / spacing) + 1))
    ys = np.linspace(0, height - 1, max(2, round((height - 1) / spacing) + 1))
    top, bottom = [(x, 0.0) for x in xs], [(x, height - 1.0) for x in xs]
    left, right = [(0.0, y) for y in ys[1:-1]], [(width - 1.0, y) for y in ys[1:-1]]
    return np.array(top + bottom + left + right, np.float64)


def _probe(propagator: Any, positive: np.ndarray, negative: np.ndarray, velocity: float, threshold: float,
           border: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(mask, score) of the four probes; ``border`` > 0 adds that many still points per short side along the border."""
    if border > 0:
        height, width = propagator.image_size
        negative = np.concatenate([negative, border_points(width, height, border)])
    sx, sy = propagator.scale
    # The probes' still points say how the rest of the image moves: no dominant-motion prior (a smaller mask).
    flows = propagator.propagate_batch(probe_guidance(positive, negative, (velocity / sx, velocity / sy)),
                                       dominant_motion=False)
    score = motion_score(flows)
    return score > threshold, score


def overlay(image: np.ndarray, mask: np.ndarray, positive: Any = (), negative: Any = (),
            colour: tuple[int, int, int] = (30, 110, 255), alpha: float = 0.5) -> np.ndarray:
    """The image with the mask tinted and outlined, positive clicks green, negative red (uint8 RGB)."""
    import cv2

    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = out[m] * (1 - alpha) + np.float32(colour) * alpha
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    thickness = max(1, round(min(image.shape[:2]) / 300))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, thickness, cv2.LINE_AA)
    size = 6 * thickness + 6
    for points, tint in ((positive, (40, 230, 40)), (negative, (255, 40, 40))):
        for x, y in _points(points, "click").tolist():
            cv2.drawMarker(out, (int(round(x)), int(round(y))), tint, cv2.MARKER_CROSS, size, thickness + 1)
    return out


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """A mask as an 8-bit PNG: 255 inside, 0 outside (atomically)."""
    from .propagate import write_rgb

    return write_rgb(path, np.where(mask, 255, 0).astype(np.uint8))


# --------------------------------------------------------------------------- batch mode


@dataclass
class BatchObject:
    positive: np.ndarray
    negative: np.ndarray
    category: str = "object"


@dataclass
class BatchImage:
    path: Path
    file_name: str
    """As written in the batch file (the COCO ``file_name``)."""
    name: str
    """Output file stem."""
    width: int
    height: int
    objects: list[BatchObject] = field(default_factory=list)


def _click_list(raw: Any, where: str) -> np.ndarray:
    if not isinstance(raw, list):
        raise InputError(f"{where} must be a list of [x, y] points")
    rows = []
    for k, item in enumerate(raw):
        if isinstance(item, dict) and "x" in item and "y" in item:
            item = [item["x"], item["y"]]
        if not (isinstance(item, (list, tuple)) and len(item) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)):
            raise InputError(f"{where}[{k}] must be [x, y] (numbers)")
        rows.append([float(item[0]), float(item[1])])
    return _points(rows, where)


def read_batch(path: str | os.PathLike) -> list[BatchImage]:
    """Parse and check a batch file: every image readable, every click inside it, output names unique.

    Everything is checked before any network runs, so a mistake in the 100th
    entry fails in a second, not after 99 images.
    """
    import cv2

    from ..fileio import read_json

    path = Path(path)
    raw = read_json(path, "batch file")
    entries = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: expected {{\"images\": [{{\"file\": ..., \"objects\": [...]}}, ...]}}")
    images, names = [], {}
    for i, entry in enumerate(entries):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise InputError(f"{where} needs a \"file\" (path relative to the batch file)")
        file_name = entry["file"]
        image_path = Path(file_name) if os.path.isabs(file_name) else path.parent / file_name
        if not image_path.is_file():
            raise InputError(f"{where}: image not found: {image_path}")
        from ..data.dataset import check_image_pixels

        data = np.fromfile(image_path, np.uint8)
        check_image_pixels(data, str(image_path))
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if decoded is None:
            raise InputError(f"{where}: cannot decode image: {image_path}")
        height, width = decoded.shape[:2]
        del decoded
        name = entry.get("name", Path(file_name).stem)
        if not isinstance(name, str) or not name or "/" in name or "\\" in name:
            raise InputError(f"{where}: \"name\" must be a file stem without slashes")
        if name in names:
            raise InputError(f"{where}: output name {name!r} is also that of images[{names[name]}]; "
                             f"give one of them a \"name\"")
        names[name] = i
        objects_raw = entry.get("objects")
        if not isinstance(objects_raw, list) or not objects_raw:
            raise InputError(f"{where} needs a non-empty \"objects\" list")
        objects = []
        for k, obj in enumerate(objects_raw):
            where_obj = f"{where}.objects[{k}]"
            if not isinstance(obj, dict):
                raise InputError(f"{where_obj} must be an object with \"positive\" clicks")
            positive = _click_list(obj.get("positive", []), f"{where_obj}.positive")
            negative = _click_list(obj.get("negative", []), f"{where_obj}.negative")
            if len(positive) == 0:
                raise InputError(f"{where_obj} needs at least one positive click")
            category = obj.get("category", "object")
            if not isinstance(category, str) or not category:
                raise InputError(f"{where_obj}.category must be a non-empty string")
            Guidance(np.zeros((0, 4)), np.concatenate([positive, negative])).check_inside(width, height, where_obj)
            objects.append(BatchObject(positive, negative, category))
        images.append(BatchImage(image_path, file_name, name, width, height, objects))
    return images


@dataclass
class BatchSummary:
    images: int
    objects: int
    masks: list[Path]
    coco: Path | None


def annotate_batch(propagator: Any, batch: str | os.PathLike | Sequence[BatchImage], out_dir: str | os.PathLike,
                   *, indexed: bool = False, coco_path: str | os.PathLike | None = None,
                   overlays: bool = False, velocity: float = DEFAULT_VELOCITY,
                   threshold: float = DEFAULT_THRESHOLD, zoom: float | None = None,
                   border_still: bool | None = None, border_per_side: float | None = None,
                   refine: str = "none", progress: bool = False) -> BatchSummary:
    """Annotate every object of a batch file; write masks to ``out_dir`` and optionally a COCO JSON.

    Masks: ``NAME_K.png`` per object (K from 1; 255 inside), or with
    ``indexed`` one ``NAME.png`` per image whose pixel value is the object's K
    (0 = background; where objects overlap, the higher score wins). With
    ``overlays``, ``NAME_overlay.png`` shows every object on the image. Output
    names are checked (unique, no input among them) before any network work;
    masks an earlier run wrote for these images and this run did not are deleted.
    ``refine``, ``border_still`` and ``border_per_side`` as in :func:`annotate`, for every object.
    """
    from tqdm import tqdm

    _border_per_side(border_per_side)  # a bad value stops the batch before any work
    from .coco import CocoWriter
    from .propagate import write_rgb

    images = read_batch(batch) if isinstance(batch, (str, os.PathLike)) else list(batch)
    out_dir = Path(out_dir)
    planned = batch_outputs(images, out_dir, indexed, overlays)
    inputs = [im.path for im in images] + ([Path(batch)] if isinstance(batch, (str, os.PathLike)) else [])
    _check_batch_outputs(planned, inputs, coco_path)
    for image in images if indexed else ():
        if len(image.objects) > 255:
            raise InputError(f"{image.file_name}: a label PNG (--indexed) holds at most 255 objects, got "
                             f"{len(image.objects)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    coco = CocoWriter()
    written: list[Path] = []
    count = 0
    bar = tqdm(total=sum(len(im.objects) for im in images), desc="objects", unit="object", disable=not progress)
    for image in images:
        propagator.set_image(image.path)
        image_id = coco.add_image(image.file_name, image.width, image.height)
        results = []
        for k, obj in enumerate(image.objects, start=1):
            result = annotate(propagator, obj.positive, obj.negative, velocity=velocity, threshold=threshold,
                              zoom=zoom, border_still=border_still, border_per_side=border_per_side,
                              refine=refine)
            results.append(result)
            coco.add_mask(image_id, result.mask, obj.category, {"clicks": {
                "positive": obj.positive.tolist(), "negative": obj.negative.tolist()}})
            if not indexed:
                written.append(write_mask(out_dir / f"{image.name}_{k}.png", result.mask))
            count += 1
            bar.update()
        if indexed:
            written.append(write_rgb(out_dir / f"{image.name}.png", label_map(results)))
        if overlays:
            picture = propagator.image
            for k, (obj, result) in enumerate(zip(image.objects, results)):
                picture = overlay(picture, result.mask, obj.positive, obj.negative, _COLOURS[k % len(_COLOURS)])
            write_rgb(out_dir / f"{image.name}_overlay.png", picture)
    bar.close()
    coco_written = coco.write(coco_path) if coco_path is not None else None
    _remove_stale_masks(images, out_dir, planned, inputs)
    return BatchSummary(len(images), count, written, coco_written)


def batch_outputs(images: Sequence[BatchImage], out_dir: Path, indexed: bool, overlays: bool) -> list[Path]:
    """Every file a batch run writes into ``out_dir``, in order (masks or label maps, then overlays)."""
    paths = []
    for image in images:
        if indexed:
            paths.append(out_dir / f"{image.name}.png")
        else:
            paths += [out_dir / f"{image.name}_{k}.png" for k in range(1, len(image.objects) + 1)]
        if overlays:
            paths.append(out_dir / f"{image.name}_overlay.png")
    return paths


def _check_batch_outputs(planned: Sequence[Path], inputs: Sequence[Path], coco_path: Any) -> None:
    """Before any network work: no two outputs share a name, none is an input, label maps fit 255 objects."""
    from ..fileio import same_file

    seen: set[str] = set()
    for path in planned:
        if path.name in seen:
            raise InputError(f"two outputs of the batch would be named {path.name} (e.g. an image named "
                             f"'X_overlay' next to X's overlay): give one image another \"name\"")
        seen.add(path.name)
        for source in inputs:
            if same_file(path, source):
                raise InputError(f"output {path} is the input {source}: choose another --out folder")
        if coco_path is not None and same_file(path, coco_path):
            raise InputError(f"--coco {coco_path} is also the mask {path}")


def _remove_stale_masks(images: Sequence[BatchImage], out_dir: Path, planned: Sequence[Path],
                        inputs: Sequence[Path]) -> None:
    """Delete masks an earlier run wrote for these images (NAME_K.png, NAME.png) that this run did not."""
    import re

    from ..fileio import same_file

    new = {p.name for p in planned}
    names = {image.name for image in images}
    for path in out_dir.iterdir():
        match = re.fullmatch(r"(.+?)(?:_(\d+))?\.png", path.name)
        if (match and match.group(1) in names and path.name not in new and path.is_file()
                and not any(same_file(path, source) for source in inputs)):
            path.unlink()


_COLOURS = ((30, 110, 255), (255, 150, 0), (200, 40, 220), (0, 200, 200), (240, 220, 0), (120, 255, 80))


def label_map(results: Sequence[Annotation]) -> np.ndarray:
    """(H, W) uint8: K where object K's mask is (K from 1), 0 elsewhere; overlaps go to the higher score."""
    if len(results) > 255:
        raise InputError(f"a label PNG holds at most 255 objects, got {len(results)}")
    scores = np.stack([np.where(r.mask, r.score, -1.0) for r in results])
    best = scores.argmax(axis=0)
    inside = scores.max(axis=0) >= 0
    return np.where(inside, best + 1, 0).astype(np.uint8)
