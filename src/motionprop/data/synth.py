"""Built-in training data: short synthetic clips with exact optical flow and object masks.

FlyingChairs-style scenes made from natural photos shipped inside scikit-image
(no download): a background photo moving by its own similarity motion
(translation, rotation, scale) and a few foreground objects -- smooth random
shapes cut out of other photos -- each moving by an independent one; optionally
some objects are articulated bodies: a torso with limbs cut from *other* photos,
each limb turning about its joint while the body moves, so that differently
coloured parts move together without moving rigidly. Every frame
is rendered by backward warping (the inverse of each layer's placement, with
``cv2.warpAffine(..., WARP_INVERSE_MAP)``), so the pixel that frame ``t`` shows at
``(x, y)`` is shown by frame ``t+1`` exactly at ``(x, y) + flow(x, y)``.

Conventions:

* Flow is frame ``t`` -> frame ``t+1``, float32 ``(H, W, 2)``, x (right) then y
  (down), in pixels, integer coordinates at pixel centres (OpenCV's convention).
* Depth order: layer 0 is the background, object ``k`` (1..N) is in front of
  every object with a smaller index. The mask of a frame is this index map
  (0 = background; every part of a body carries its body's index), and where
  objects overlap the front one wins, in the image, the mask and the flow.
* A pixel whose object is hidden or out of view in the next frame keeps its
  true motion in the flow (it is occluded, not invalid).

Output layout of :func:`generate` (the same one ``motionprop prepare`` writes)::

    DIR/synth.json                       generation parameters and seed
    DIR/frames/<clip>/000000.jpg ...     RGB frames (JPEG, quality 95)
    DIR/flow/<clip>/000000.flo ...       flow 000000 -> 000001 (.flo/.png/.npy/.npz,
                                         or 000000_x.jpg + 000000_y.jpg for "jpg")
    DIR/masks/<clip>/000000.png ...      object index map of each frame
    DIR/lists/train.txt, val.txt         one pair per line: img1 img2 flow
                                         (img1 img2 flow_x flow_y for "jpg")

List paths are relative to the list's own folder (``../frames/00000/000000.jpg``),
so the data set can be moved as a whole; motionprop's dataset resolves them
against the list's folder. The original release's ``dataset.py`` opens each path
exactly as written (relative to the directory training runs in): for it, give a
``list_prefix`` (best absolute), written as ``<prefix>/frames/...``. The layout
and list helpers are shared with ``motionprop prepare`` (:mod:`.layout`).
Clips are split whole into train and val, so no clip is in both lists.

Same seed and parameters give byte-identical files (each clip draws from its own
generator seeded by ``(seed, clip index)``), which also makes generation
resumable: clips whose files all exist are kept.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, MotionpropError
from ..fileio import remove_stale_temporaries
from . import layout
from .layout import FLOW_FORMATS, JPEG_QUALITY  # noqa: F401 -- JPEG_QUALITY re-exported

FORMAT_VERSION = 1

# Photos of skimage.data stored inside the wheel (no pooch, no download).
COLOR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
                "hubble_deep_field", "retina", "motorcycle")
GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "cell", "clock")

# Motion ranges, as fractions of the frame's short side (translation) or absolute.
BACKGROUND_SHIFT = 0.06        # per-frame translation, up to this * short side
BACKGROUND_ROTATION = 3.0      # degrees per frame
BACKGROUND_SCALE = 0.04        # per-frame scale in [1 - s, 1 + s]
BACKGROUND_MARGIN = 0.25       # texture extends this fraction beyond each frame edge
OBJECT_SHIFT = 0.14
OBJECT_ROTATION = 12.0
OBJECT_SCALE = 0.07
OBJECT_DIAMETER = (0.2, 0.55)  # fraction of the short side
MOTION_TRIES = 20
LIMBS = (2, 4)                 # limbs of an articulated body
LIMB_LENGTH = (0.45, 0.8)      # fraction of the torso's canvas
LIMB_WIDTH = (0.14, 0.24)
SECOND_SEGMENT = 0.5           # probability that a limb has a second segment (a forearm)
LIMB_ROTATION = 15.0           # degrees per frame about the joint, relative to the part it hangs on
TEXTURE_BLUR = 0.7             # Gaussian sigma, in output pixels, applied to every texture


# Fields of SynthConfig added after data sets were written, with the value such a data set was made with.
ADDED_FIELDS = {"articulated": 0.0}


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`generate` makes; stored in ``synth.json`` and checked on resume."""

    height: int = 192
    width: int = 256
    num_pairs: int = 660
    val_fraction: float = 0.1
    frames_per_clip: int = 3
    min_objects: int = 2
    max_objects: int = 5
    flow_format: str = "flo"
    max_flow: float = 45.0
    seed: int = 0
    articulated: float = 0.0   # fraction of objects that are articulated bodies

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first invalid field."""
        if self.height < 32 or self.width < 32:
            raise InputError(f"size must be at least 32x32, got {self.height}x{self.width}")
        if self.num_pairs < 1:
            raise InputError(f"num_pairs must be positive, got {self.num_pairs}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.frames_per_clip < 2:
            raise InputError(f"frames_per_clip must be at least 2, got {self.frames_per_clip}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise InputError(f"objects must be 0 <= min <= max, got {self.min_objects},{self.max_objects}")
        if self.flow_format not in FLOW_FORMATS:
            raise InputError(f"flow_format must be one of {', '.join(FLOW_FORMATS)}, got {self.flow_format!r}")
        if not 1 < self.max_flow < math.inf:
            raise InputError(f"max_flow must be a number of pixels above 1, got {self.max_flow}")
        if self.seed < 0:  # numpy's generators take no negative seed
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.articulated <= 1:
            raise InputError(f"articulated must be a fraction in [0, 1], got {self.articulated}")

    def record(self) -> dict:
        """The parameters as ``synth.json`` stores them: fields added later (:data:`ADDED_FIELDS`) are left
        out at the value folders written before them were made with, so those folders resume and the
        same data set keeps the same record."""
        return {k: v for k, v in asdict(self).items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}

    @property
    def num_clips(self) -> int:
        """Clips needed for ``num_pairs`` pairs (the last clip may be shorter)."""
        return math.ceil(self.num_pairs / (self.frames_per_clip - 1))

    @property
    def num_val_clips(self) -> int:
        """Clips of the validation split: the last ones; at least one if val_fraction > 0."""
        if self.val_fraction == 0 or self.num_clips < 2:
            return 0
        return min(self.num_clips - 1, max(1, round(self.num_clips * self.val_fraction)))

    def clip_frames(self, index: int) -> int:
        """Number of frames of clip ``index``, so the clips hold exactly ``num_pairs`` pairs."""
        pairs_before = index * (self.frames_per_clip - 1)
        return min(self.frames_per_clip, self.num_pairs - pairs_before + 1)


def parse_size(text: str) -> tuple[int, int]:
    """``"192x256"`` -> ``(192, 256)`` (height, width); :class:`InputError` otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"size must be HEIGHTxWIDTH like 192x256, got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_range(text: str, name: str = "range") -> tuple[int, int]:
    """``"2,5"`` -> ``(2, 5)``; a single number ``"3"`` -> ``(3, 3)``; an error names ``name`` (e.g. ``objects``)."""
    parts = text.split(",")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"{name} must be MIN,MAX of whole numbers >= 0 like 2,5, got {text!r}")
    low, high = int(parts[0]), int(parts[-1])
    if low > high:
        raise InputError(f"{name} must be MIN,MAX with MIN <= MAX, got {text!r}")
    return low, high


# --------------------------------------------------------------------------- photos


def _photo_loaders() -> dict[str, Callable[[], np.ndarray]]:
    """Explicit registry of the bundled skimage photos, each returning an array."""
    try:
        from skimage import data
    except ImportError as exc:
        raise MotionpropError("synthetic data needs scikit-image for its bundled photos: "
                              "pip install 'motionprop[synth]'") from exc
    return {
        "astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee,
        "rocket": data.rocket, "immunohistochemistry": data.immunohistochemistry,
        "hubble_deep_field": data.hubble_deep_field, "retina": data.retina,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "camera": data.camera, "brick": data.brick, "grass": data.grass, "gravel": data.gravel,
        "moon": data.moon, "coins": data.coins, "cell": data.cell, "clock": data.clock,
    }


def load_photos(names: Sequence[str] = COLOR_PHOTOS + GRAY_PHOTOS) -> list[np.ndarray]:
    """The named bundled photos as float32 RGB ``(H, W, 3)`` arrays in 0..255, in the given order."""
    loaders = _photo_loaders()
    unknown = [n for n in names if n not in loaders]
    if unknown:
        raise InputError(f"unknown photo(s) {', '.join(unknown)}; available: {', '.join(loaders)}")
    photos = []
    for name in names:
        image = np.asarray(loaders[name]())
        if image.ndim == 2:  # grey photos get a random tint per use
            image = np.repeat(image[:, :, None], 3, axis=2)
        photos.append(np.ascontiguousarray(image[:, :, :3], dtype=np.float32))
    return photos


def crop_texture(rng: np.random.Generator, photo: np.ndarray, height: int, width: int,
                 zoom: tuple[float, float] = (0.5, 1.5)) -> np.ndarray:
    """A random ``(height, width, 3)`` float32 crop of ``photo``, rescaled, flipped and colour-jittered.

    ``zoom`` is the output/source pixel ratio range; it is raised when the photo is
    too small for the crop. The crop is band-limited (Gaussian of TEXTURE_BLUR
    output pixels, more when shrinking) so that warping it again later
    interpolates faithfully and the frames agree with the flow.
    """
    import cv2

    min_zoom = max(height / photo.shape[0], width / photo.shape[1])
    scale = max(rng.uniform(*zoom), min_zoom * 1.001)
    src_h, src_w = height / scale, width / scale
    top = rng.uniform(0, photo.shape[0] - src_h)
    left = rng.uniform(0, photo.shape[1] - src_w)
    sigma = TEXTURE_BLUR / min(scale, 1.0)  # in source pixels
    pad = int(math.ceil(3 * sigma)) + 2
    y0, x0 = max(0, int(top) - pad), max(0, int(left) - pad)
    y1 = min(photo.shape[0], int(math.ceil(top + src_h)) + pad)
    x1 = min(photo.shape[1], int(math.ceil(left + src_w)) + pad)
    source = cv2.GaussianBlur(photo[y0:y1, x0:x1], (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    # Crop and resize in one affine step: output pixel centre -> source position.
    to_source = np.array([[1 / scale, 0, left - x0 + 0.5 / scale - 0.5],
                          [0, 1 / scale, top - y0 + 0.5 / scale - 0.5]], np.float64)
    crop = cv2.warpAffine(source, to_source, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _jitter_colour(rng, crop)


def _jitter_colour(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Random channel order, per-channel gain and brightness, so a few photos give many textures."""
    if rng.random() < 0.3:
        image = image[:, :, rng.permutation(3)]
    image = image * rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    image = (image - 128) * np.float32(rng.uniform(0.8, 1.2)) + 128 + np.float32(rng.uniform(-20, 20))
    return np.ascontiguousarray(np.clip(image, 0, 255), dtype=np.float32)


# --------------------------------------------------------------------------- shapes


def star_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """Alpha ``(size, size)`` float32 of a smooth random star-convex shape, anti-aliased."""
    radius = 0.42 * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    angle, dist = np.arctan2(ys, xs), np.hypot(xs, ys)
    boundary = np.ones_like(angle)
    for k in range(1, 6):
        amplitude = rng.uniform(-0.4, 0.4) / math.sqrt(k)
        boundary += amplitude * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    # Scale so the farthest point is at ``radius`` (inside the canvas); keep a solid core.
    boundary = radius * np.clip(boundary / boundary.max(), 0.35, None)
    return np.clip(boundary - dist + 0.5, 0, 1).astype(np.float32)


def blob_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """Alpha ``(size, size)`` float32 of a random blob: thresholded smooth noise under a round window.

    The largest connected piece is kept; it may have holes. Falls back to
    :func:`star_shape` when the blob comes out too small.
    """
    import cv2

    noise = cv2.resize(rng.normal(size=(6, 6)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    ys, xs = (np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2) / (0.45 * size)
    window = 1 - xs**2 - ys**2
    inside = ((0.6 * noise + 1.4 * window > 0.6) & (window > 0)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=4)
    if count < 2 or stats[1:, cv2.CC_STAT_AREA].max() < 0.15 * size * size:
        return star_shape(rng, size)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    hard = (labels == largest).astype(np.float32)
    return np.clip(cv2.GaussianBlur(hard, (0, 0), 0.7), 0, 1)


def limb_shape(rng: np.random.Generator, length: int, width: int) -> np.ndarray:
    """Alpha ``(width, length)`` float32 of a limb along x: a capsule tapering by up to a third, anti-aliased."""
    half = width / 2 - 1
    xs = np.arange(length, dtype=np.float32)
    ys = np.arange(width, dtype=np.float32)[:, None] - (width - 1) / 2
    taper = 1 - rng.uniform(0, 0.33) * xs / max(1, length - 1)  # radius along the limb
    core = np.clip(xs, half, length - 1 - half)                    # nearest point on the axis
    dist = np.hypot(xs - core, ys)
    radius = half * taper[np.clip(np.rint(core).astype(int), 0, length - 1)]
    return np.clip(radius - dist + 0.5, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- layers and rendering


def similarity(center: Sequence[float], angle_deg: float, scale: float,
               shift: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """3x3 matrix: rotate by ``angle_deg`` and scale about ``center``, then translate by ``shift``."""
    theta = math.radians(angle_deg)
    c, s = scale * math.cos(theta), scale * math.sin(theta)
    cx, cy = center
    return np.array([[c, -s, cx - c * cx + s * cy + shift[0]],
                     [s, c, cy - s * cx - c * cy + shift[1]],
                     [0, 0, 1]], np.float64)


class Placed:
    """What rendering needs of a layer: its texture, alpha and placement in each frame; the rest follows.

    Subclasses define :meth:`placement`; ``label`` is the mask value of the layer
    (None: its index in the scene).
    """

    texture: np.ndarray
    alpha: np.ndarray | None
    label: int | None

    def placement(self, t: int) -> np.ndarray:
        """3x3 matrix mapping texture pixel coordinates to frame ``t`` coordinates."""
        raise NotImplementedError

    def motion(self, t: int) -> np.ndarray:
        """3x3 matrix mapping frame ``t`` coordinates to frame ``t+1`` coordinates."""
        return self.placement(t + 1) @ np.linalg.inv(self.placement(t))

    def extent(self, t: int, width: int, height: int) -> np.ndarray:
        """(4, 2) frame points bounding where this layer can be seen at frame ``t``."""
        if self.alpha is None:
            return np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)
        h, w = self.texture.shape[:2]
        corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64)
        return (corners @ self.placement(t).T)[:, :2]

    def max_flow(self, num_frames: int, width: int, height: int) -> float:
        """Upper bound of this layer's flow magnitude over the clip (affine: attained at a corner)."""
        worst = 0.0
        for t in range(num_frames - 1):
            points = self.extent(t, width, height)
            moved = points @ self.motion(t)[:2, :2].T + self.motion(t)[:2, 2]
            worst = max(worst, float(np.linalg.norm(moved - points, axis=1).max()))
        return worst


@dataclass
class Layer(Placed):
    """One moving layer: a texture, its shape and its motion, in depth order of a scene.

    At frame ``t`` the texture's centre sits at ``center + t * shift`` and the
    texture is rotated by ``angle0 + t * angle`` degrees and scaled by
    ``scale0 * scale**t``: a constant motion in the layer's own frame.
    """

    texture: np.ndarray              # (h, w, 3) float32 RGB, 0..255
    alpha: np.ndarray | None         # (h, w) float32 in 0..1; None = opaque and unbounded
    center: tuple[float, float]      # frame position of the texture centre at frame 0
    angle0: float = 0.0
    scale0: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)  # per-frame translation, pixels
    angle: float = 0.0               # per-frame rotation, degrees
    scale: float = 1.0               # per-frame scale factor
    label: int | None = None

    def placement(self, t: int) -> np.ndarray:
        """3x3 matrix mapping texture pixel coordinates to frame ``t`` coordinates."""
        h, w = self.texture.shape[:2]
        tex_center = ((w - 1) / 2, (h - 1) / 2)
        cx, cy = self.center[0] + t * self.shift[0], self.center[1] + t * self.shift[1]
        rotate = similarity(tex_center, self.angle0 + t * self.angle, self.scale0 * self.scale**t)
        return similarity((0, 0), 0, 1, (cx - tex_center[0], cy - tex_center[1])) @ rotate


@dataclass
class Part(Placed):
    """A limb: a layer hinged on another one (its ``parent``), turning about the joint.

    The point ``anchor`` of this texture stays on the point ``parent_anchor`` of the
    parent's texture, and the part is turned by ``angle0 + t * angle`` degrees in the
    parent's texture frame: it moves with its parent and turns on its own.
    """

    texture: np.ndarray
    alpha: np.ndarray
    parent: Placed
    parent_anchor: tuple[float, float]  # joint, in the parent's texture pixels
    anchor: tuple[float, float]         # joint, in this texture's pixels
    angle0: float = 0.0
    angle: float = 0.0                  # per-frame rotation about the joint, degrees
    label: int | None = None

    def placement(self, t: int) -> np.ndarray:
        """The parent's placement after this part's turn about the joint."""
        hinge = similarity((0, 0), self.angle0 + t * self.angle, 1.0, self.parent_anchor)
        return self.parent.placement(t) @ hinge @ similarity((0, 0), 0, 1, (-self.anchor[0], -self.anchor[1]))


@dataclass
class Clip:
    """Rendered frames with their ground truth: ``T`` frames, ``T-1`` flows, ``T`` masks."""

    frames: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 RGB
    flows: list[np.ndarray] = field(default_factory=list)   # (H, W, 2) float32, frame t -> t+1
    masks: list[np.ndarray] = field(default_factory=list)   # (H, W) uint8, 0 = background


def affine_flow(motion: np.ndarray, height: int, width: int) -> np.ndarray:
    """Flow ``(H, W, 2)`` float32 of the 3x3 affine ``motion`` at every pixel centre."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    a = motion
    u = (a[0, 0] - 1) * xs + a[0, 1] * ys + a[0, 2]
    v = a[1, 0] * xs + (a[1, 1] - 1) * ys + a[1, 2]
    return np.stack([u, v], axis=-1).astype(np.float32)


def render_frame(layers: Sequence[Placed], t: int, height: int, width: int,
                 with_flow: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frame ``t`` of a scene: image ``(H, W, 3)`` uint8, mask ``(H, W)`` uint8, flow to ``t+1`` or None.

    Layers are drawn back to front by backward warping (each output pixel samples
    its layer's texture at the inverse placement). The image blends soft object
    edges; mask and flow take the front layer whose alpha exceeds 0.5 (the mask its
    ``label``, or its index when the label is None).
    """
    import cv2

    image = np.zeros((height, width, 3), np.float32)
    mask = np.zeros((height, width), np.uint8)
    flow = np.zeros((height, width, 2), np.float32) if with_flow else None
    for index, layer in enumerate(layers):
        inverse = np.linalg.inv(layer.placement(t))[:2]
        warp = dict(dsize=(width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        colour = cv2.warpAffine(layer.texture, inverse, borderMode=cv2.BORDER_REFLECT_101, **warp)
        if layer.alpha is None:
            image[:], visible = colour, np.ones((height, width), bool)
        else:
            alpha = cv2.warpAffine(layer.alpha, inverse, borderMode=cv2.BORDER_CONSTANT, borderValue=0, **warp)
            image += alpha[:, :, None] * (colour - image)
            visible = alpha > 0.5
        mask[visible] = index if layer.label is None else layer.label
        if flow is not None and visible.any():
            flow[visible] = affine_flow(layer.motion(t), height, width)[visible]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask, flow


def render_clip(layers: Sequence[Placed], num_frames: int, height: int, width: int) -> Clip:
    """All ``num_frames`` frames, masks, and the ``num_frames - 1`` flows of a scene."""
    clip = Clip()
    for t in range(num_frames):
        image, mask, flow = render_frame(layers, t, height, width, with_flow=t < num_frames - 1)
        clip.frames.append(image)
        clip.masks.append(mask)
        if flow is not None:
            clip.flows.append(flow)
    return clip


def _random_motion(rng: np.random.Generator, shift: float, rotation: float, scale: float) -> dict:
    """Per-frame translation (uniform in a disc), rotation and scale of one layer."""
    radius, direction = shift * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    return dict(shift=(radius * math.cos(direction), radius * math.sin(direction)),
                angle=rng.uniform(-rotation, rotation), scale=math.exp(rng.uniform(-scale, scale)))


def _set_bounded_motion(rng: np.random.Generator, layer: Layer, limits: tuple[float, float, float],
                        num_frames: int, width: int, height: int, max_flow: float,
                        joints: Sequence[Part] = ()) -> None:
    """Give ``layer`` a random motion, and each of the ``joints`` hinged on it a random turn, whose flow stays
    below ``max_flow`` in every one of them (redraw, then damp every motion together)."""
    def worst() -> float:
        return max(p.max_flow(num_frames, width, height) for p in (layer, *joints))

    for _ in range(MOTION_TRIES):
        for name, value in _random_motion(rng, *limits).items():
            setattr(layer, name, value)
        for part in joints:
            part.angle = rng.uniform(-LIMB_ROTATION, LIMB_ROTATION)
        if worst() <= max_flow:
            return
    while worst() > max_flow:
        layer.shift = (layer.shift[0] / 2, layer.shift[1] / 2)
        layer.angle, layer.scale = layer.angle / 2, math.sqrt(layer.scale)
        for part in joints:
            part.angle /= 2


def random_body(rng: np.random.Generator, photos: Sequence[np.ndarray], torso: Layer, label: int) -> list[Placed]:
    """The parts of an articulated body around ``torso`` (whose motion is set later), back to front.

    2-4 limbs, each segment textured from a photo drawn at random (so mostly not the
    torso's; it may be) and hinged at a point inside the torso, pointing outwards; half
    of them carry a second segment at their far end. Each limb is behind or in front of
    the torso at random.
    """
    size = torso.texture.shape[0]
    torso_centre = ((size - 1) / 2, (size - 1) / 2)
    behind: list[Placed] = []
    front: list[Placed] = []
    for _ in range(int(rng.integers(LIMBS[0], LIMBS[1] + 1))):
        direction = rng.uniform(-180, 180)
        reach = rng.uniform(0.12, 0.25) * size
        joint = (torso_centre[0] + reach * math.cos(math.radians(direction)),
                 torso_centre[1] + reach * math.sin(math.radians(direction)))
        segments: list[Placed] = []
        parent, parent_joint = torso, joint
        length = max(8, int(round(rng.uniform(*LIMB_LENGTH) * size)))
        thickness = max(4, int(round(rng.uniform(*LIMB_WIDTH) * size)))
        angle0 = direction + rng.uniform(-60, 60)
        for segment in range(2):
            texture = crop_texture(rng, photos[int(rng.integers(len(photos)))], thickness, length, (0.25, 1.0))
            part = Part(texture, limb_shape(rng, length, thickness), parent, parent_joint,
                        anchor=(thickness / 2, (thickness - 1) / 2), angle0=angle0, label=label)
            segments.append(part)
            if segment == 1 or rng.random() >= SECOND_SEGMENT:
                break
            parent, parent_joint = part, (length - 1 - thickness / 2, (thickness - 1) / 2)
            length = max(8, int(round(length * rng.uniform(0.7, 1.0))))
            thickness = max(4, int(round(thickness * rng.uniform(0.8, 1.0))))
            angle0 = rng.uniform(-90, 90)
        (behind if rng.random() < 0.5 else front).extend(segments)
    return behind + [torso] + front


def random_scene(rng: np.random.Generator, photos: Sequence[np.ndarray], height: int, width: int,
                 num_frames: int, num_objects: int, max_flow: float, articulated: float = 0.0) -> list[Placed]:
    """Background plus ``num_objects`` objects (back to front) with random textures, shapes and motions;
    each object is an articulated body (:func:`random_body`) with probability ``articulated``.

    With ``articulated`` 0 the scene draws the same random numbers as before bodies existed, so
    data sets written then are reproduced byte for byte."""
    short = min(height, width)
    order = rng.permutation(len(photos))
    margin = int(round(BACKGROUND_MARGIN * max(height, width)))
    background = Layer(crop_texture(rng, photos[order[0]], height + 2 * margin, width + 2 * margin, (0.6, 1.4)),
                       None, center=((width - 1) / 2, (height - 1) / 2))
    _set_bounded_motion(rng, background, (BACKGROUND_SHIFT * short, BACKGROUND_ROTATION, BACKGROUND_SCALE),
                        num_frames, width, height, max_flow)
    layers: list[Placed] = [background]
    for k in range(num_objects):
        size = max(8, int(round(rng.uniform(*OBJECT_DIAMETER) * short / 0.84)))
        shape = star_shape(rng, size) if rng.random() < 0.5 else blob_shape(rng, size)
        photo = photos[order[1 + k % (len(photos) - 1)]]
        obj = Layer(crop_texture(rng, photo, size, size, (0.25, 1.0)), shape,
                    center=(rng.uniform(0.1, 0.9) * (width - 1), rng.uniform(0.1, 0.9) * (height - 1)),
                    angle0=rng.uniform(-180, 180), scale0=1.0, label=k + 1)
        if articulated > 0 and rng.random() < articulated:
            parts = random_body(rng, photos, obj, label=k + 1)
        else:
            parts = [obj]
        _set_bounded_motion(rng, obj, (OBJECT_SHIFT * short, OBJECT_ROTATION, OBJECT_SCALE),
                            num_frames, width, height, max_flow, [p for p in parts if isinstance(p, Part)])
        layers.extend(parts)
    return layers


def make_clip(config: SynthConfig, index: int, photos: Sequence[np.ndarray]) -> Clip:
    """Clip ``index`` of the data set ``config`` describes; depends only on ``(config, index)``."""
    rng = np.random.default_rng([config.seed, index])
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    num_frames = config.clip_frames(index)
    layers = random_scene(rng, photos, config.height, config.width, num_frames, num_objects, config.max_flow,
                          config.articulated)
    return render_clip(layers, num_frames, config.height, config.width)


# --------------------------------------------------------------------------- files


def clip_name(index: int) -> str:
    """Folder name of clip ``index``."""
    return f"{index:05d}"


def _flow_names(config: SynthConfig, clip: str, t: int) -> list[str]:
    """Flow file(s) of pair ``t`` relative to the data root: one file, or the x/y JPEG pair."""
    return layout.flow_paths(clip, t, config.flow_format)


def clip_files(config: SynthConfig, index: int) -> list[str]:
    """Every file of clip ``index``, relative to the data root."""
    clip, num_frames = clip_name(index), config.clip_frames(index)
    files = [f"frames/{clip}/{t:06d}.jpg" for t in range(num_frames)]
    files += [f"masks/{clip}/{t:06d}.png" for t in range(num_frames)]
    for t in range(num_frames - 1):
        files += _flow_names(config, clip, t)
    return files


def write_clip(root: Path, config: SynthConfig, index: int, clip: Clip) -> None:
    """Write the frames, masks and flows of clip ``index`` under ``root``, each file atomically."""
    import cv2

    name = clip_name(index)
    for t, (frame, mask) in enumerate(zip(clip.frames, clip.masks)):
        layout.write_frame(root / layout.frame_path(name, t), frame)
        layout.write_image(root / f"masks/{name}/{t:06d}.png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    for t, flow in enumerate(clip.flows):
        layout.write_flow_files(root, _flow_names(config, name, t), flow)


def list_lines(config: SynthConfig, prefix: str | None = None) -> dict[str, list[str]]:
    """Lines of ``train.txt`` and ``val.txt``: paths relative to ``lists/``, or ``<prefix>/<path in root>``."""
    first_val = config.num_clips - config.num_val_clips
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for index in range(config.num_clips):
        name = clip_name(index)
        for t in range(config.clip_frames(index) - 1):
            paths = [f"frames/{name}/{t:06d}.jpg", f"frames/{name}/{t + 1:06d}.jpg"]
            paths += _flow_names(config, name, t)
            lines["val" if index >= first_val else "train"].append(layout.list_line(paths, prefix))
    return lines


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` did."""

    root: Path
    train_list: Path
    val_list: Path
    train_pairs: int
    val_pairs: int
    clips_written: int
    clips_kept: int


def generate(out_dir: str | os.PathLike, config: SynthConfig = SynthConfig(), list_prefix: str | None = None,
             progress: bool = True) -> SynthSummary:
    """Write the synthetic data set ``config`` describes under ``out_dir``; resumable.

    List paths are relative to the lists folder unless ``list_prefix`` is given,
    which is then written before every path (see the module docstring). Clips whose files all exist
    are kept, so re-running into a complete folder writes nothing; temporary files
    that a killed run left are removed (:func:`motionprop.fileio.remove_stale_temporaries`).
    The progress bar shows only on a terminal.
    """
    from tqdm import tqdm

    config.validate()
    root = Path(out_dir)
    layout.check_list_prefix(list_prefix)
    layout.check_output_folder(root, "synth.json", asdict(config), "synthetic data", added=ADDED_FIELDS)
    remove_stale_temporaries(root, recursive=True)  # of an earlier run killed with -9
    meta = {"format_version": FORMAT_VERSION, "generator": "motionprop synth", "config": config.record(),
            "photos": list(COLOR_PHOTOS + GRAY_PHOTOS), "list_prefix": list_prefix,
            "clips": {"train": config.num_clips - config.num_val_clips, "val": config.num_val_clips}}
    layout.write_text_if_changed(root / "synth.json", json.dumps(meta, indent=2) + "\n")

    todo = [i for i in range(config.num_clips) if not all((root / f).is_file() for f in clip_files(config, i))]
    if todo:
        photos = load_photos()
        for index in tqdm(todo, desc="synth clips", unit="clip", disable=None if progress else True):
            write_clip(root, config, index, make_clip(config, index, photos))

    lines = list_lines(config, list_prefix)
    paths = layout.write_lists(root, lines)
    return SynthSummary(root, paths["train"], paths["val"], len(lines["train"]), len(lines["val"]),
                        clips_written=len(todo), clips_kept=config.num_clips - len(todo))
