"""The training dataset: frame pairs with optical flow, turned into (image, guidance, target flow) samples.

A list file holds one pair per line, ``img1 img2 flow`` (``.flo``, ``.png``,
``.npy``, ``.npz``) or ``img1 img2 flow_x flow_y`` (the original release's JPEG
pair). Relative paths are resolved against the list's folder, or, as the
original code did, against the current directory (the first line of each list
decides which, so the original YFCC lists work unchanged).

A sample follows the original pipeline: resize by the short (or long) side,
crop (random for training, centred for validation, zero padding when the frame
is smaller), optional flip, flow and colour augmentations, ImageNet normalization of
0..255 pixels, guidance sampling. It differs in speed (OpenCV decoding and
resizing, the fast sampler), in seeding (each sample has its own generator, see
:meth:`ImageFlowDataset.__getitem__`), in resizing flow by the exact x and y
ratios, and in rotating flow vectors correctly (the original's arctan lost the
sign of x).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import CAMERA_FOLLOW, DataConfig
from ..errors import FlowFileError, InputError
from .flow_io import read_flow_jpg, read_flow_with_valid
from .guidance import make_sparse_input, sample_guidance, sample_guidance_any_density

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairRecord:
    """One line of a list file with its paths resolved."""

    image1: str
    image2: str
    flow: tuple[str, ...]  # one flow file, or the x and y JPEGs


def read_pair_list(list_path: str | os.PathLike) -> list[PairRecord]:
    """Parse a list file into :class:`PairRecord` s, resolving relative paths (see module doc)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise InputError(f"list file not found: {list_path}")
    lines = [line.split() for line in list_path.read_text().splitlines() if line.strip()]
    if not lines:
        raise InputError(f"list file is empty: {list_path}")
    for number, fields in enumerate(lines, 1):
        if len(fields) not in (3, 4):
            raise InputError(f"{list_path}:{number}: expected 'img1 img2 flow' or 'img1 img2 flow_x flow_y', "
                             f"got {len(fields)} fields")
    base = _path_base(list_path, lines[0][0])
    return [PairRecord(_join(base, f[0]), _join(base, f[1]), tuple(_join(base, p) for p in f[2:])) for f in lines]


def _path_base(list_path: Path, first: str) -> Path | None:
    """Folder that relative paths of this list are relative to: the list's folder, else the current one."""
    if os.path.isabs(first):
        return None
    if (list_path.parent / first).exists():
        return list_path.parent
    if Path(first).exists():
        return Path.cwd()
    raise InputError(f"{list_path}: the first image {first!r} exists neither relative to the list's folder "
                     f"({list_path.parent}) nor to the current directory ({Path.cwd()})")


def _join(base: Path | None, path: str) -> str:
    return path if base is None else str(base / path)


MAX_IMAGE_PIXELS = 100_000_000
"""Largest image (width x height) decoded; raise it with the environment variable MOTIONPROP_MAX_IMAGE_PIXELS."""


def declared_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares, read without decoding; None for other formats."""
    head = data[:1 << 16].tobytes()
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                return None
            marker, length = head[i + 1], int.from_bytes(head[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7], "big")
            i += 2 + length
    return None


def check_image_pixels(data: np.ndarray, path: str) -> None:
    """Refuse, before decoding, an image whose header declares more pixels than the limit (a tiny file can)."""
    size = declared_size(data)
    limit = int(os.environ.get("MOTIONPROP_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS))
    if size is not None and size[0] * size[1] > limit:
        raise InputError(f"{path}: image declares {size[0]}x{size[1]} pixels, more than the limit of {limit:,}; "
                         "set MOTIONPROP_MAX_IMAGE_PIXELS to raise it")


def read_image_rgb(path: str) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3); an unreadable file is an error naming it."""
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not an image")
    data = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if data is None:
        raise InputError(f"image not found: {path}")
    if data.size == 0:
        raise InputError(f"image file is empty: {path}")
    check_image_pixels(data, path)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise InputError(f"cannot decode image: {path} ({' '.join(str(exc).split())[-120:]})") from None
    if image is None:
        raise InputError(f"cannot decode image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_pair(record: PairRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both frames (uint8 RGB), the flow (H, W, 2) float32 with 0 where unknown, and its valid mask."""
    image1, image2 = read_image_rgb(record.image1), read_image_rgb(record.image2)
    if len(record.flow) == 2:
        flow = read_flow_jpg(*record.flow)
        valid = np.ones(flow.shape[:2], bool)
    else:
        flow, valid = read_flow_with_valid(record.flow[0])
    for name, image in ((record.image1, image1), (record.image2, image2)):
        if image.shape[:2] != flow.shape[:2]:
            raise InputError(f"{name} is {image.shape[1]}x{image.shape[0]} but its flow {record.flow[0]} is "
                             f"{flow.shape[1]}x{flow.shape[0]}")
    return image1, image2, flow, valid


def resized_size(height: int, width: int, short_size: int | None, long_size: int | None) -> tuple[int, int]:
    """(H, W) after scaling the short (or long) side to the given length, as the original (int truncation)."""
    if short_size is not None:
        scale = short_size / min(height, width)
    else:
        scale = long_size / max(height, width)
    if height <= width:
        return (short_size, int(scale * width)) if short_size is not None else (int(scale * height), long_size)
    return (int(scale * height), short_size) if short_size is not None else (long_size, int(scale * width))


def resize_pair(image1: np.ndarray, image2: np.ndarray, flow: np.ndarray, valid: np.ndarray,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resize frames (bicubic), flow (bilinear, vectors scaled by the x and y ratios) and valid mask to (H, W)."""
    height, width = size
    if (height, width) == image1.shape[:2]:
        return image1, image2, flow, valid
    sx, sy = width / image1.shape[1], height / image1.shape[0]
    image1 = cv2.resize(image1, (width, height), interpolation=cv2.INTER_CUBIC)
    image2 = cv2.resize(image2, (width, height), interpolation=cv2.INTER_CUBIC)
    flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    flow *= np.float32([sx, sy])
    if not valid.all():
        valid = cv2.resize(valid.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        valid = np.ones((height, width), bool)
    return image1, image2, flow, valid


def crop_window(height: int, width: int, crop: tuple[int, int], rng: np.random.Generator | None
                ) -> tuple[int, int]:
    """Top-left corner of a crop: random when ``rng`` is given (training), centred otherwise."""
    ch, cw = crop
    if rng is None:
        return (height - ch) // 2, (width - cw) // 2
    return int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))


def crop_arrays(arrays: Sequence[np.ndarray], crop: tuple[int, int], rng: np.random.Generator | None
                ) -> list[np.ndarray]:
    """Crop same-sized arrays at one window, zero-padding (centred) first where they are smaller."""
    height, width = arrays[0].shape[:2]
    ch, cw = crop
    pad_h, pad_w = max(ch - height, 0), max(cw - width, 0)
    if pad_h or pad_w:
        pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        arrays = [np.pad(a, pads + ((0, 0),) * (a.ndim - 2)) for a in arrays]
        height, width = height + pad_h, width + pad_w
    top, left = crop_window(height, width, crop, rng)
    return [a[top:top + ch, left:left + cw] for a in arrays]


def augment_flow(flow: np.ndarray, rng: np.random.Generator, reverse: bool, scale: bool, rotate: bool
                 ) -> np.ndarray:
    """The original's flow augmentations: negate (p=1/2), scale by U(0.5, 2), rotate vectors (p=1/2)."""
    if reverse and rng.random() < 0.5:
        flow = -flow
    if scale:
        flow = flow * np.float32(rng.uniform(0.5, 2.0))
    if rotate and rng.random() < 0.5:
        theta = rng.uniform(0, 2 * np.pi)
        c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        flow = np.stack([c * flow[..., 0] - s * flow[..., 1], s * flow[..., 0] + c * flow[..., 1]], axis=-1)
    return np.ascontiguousarray(flow, dtype=np.float32)


def add_camera_motion(flow: np.ndarray, rng: np.random.Generator, shift: float) -> np.ndarray:
    """The flow of the same scene seen by a camera that also moved: a random similarity after the motion.

    Real training clips mostly come from fixed cameras, where the scenery keeps still; in the
    videos users bring the camera often follows the action and everything moves. A pixel at ``p``
    that the flow takes to ``p + flow`` goes to ``c + s R (p + flow - c) + t`` (``c`` the centre),
    so the new flow is exact for the image the network sees (a sample's ``image2``, which training does
    not load, is left as it was). ``t`` is uniform in [-shift, shift]
    per axis; the zoom ``log s`` and the rotation (radians) are uniform in +-shift / 2 / half-diagonal,
    so neither moves a corner by more than shift / 2.
    """
    height, width = flow.shape[:2]
    half_diagonal = 0.5 * float(np.hypot(height, width))
    limit = 0.5 * shift / half_diagonal
    tx, ty = rng.uniform(-shift, shift, size=2)
    scale = np.exp(rng.uniform(-limit, limit))
    angle = rng.uniform(-limit, limit)
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    px = xs + flow[..., 0] - cx
    py = ys + flow[..., 1] - cy
    moved_x = cx + a * px - b * py + tx
    moved_y = cy + b * px + a * py + ty
    return np.stack([moved_x - xs, moved_y - ys], axis=-1).astype(np.float32)


def follow_subject(flow: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The flow of the same scene seen by a camera that followed the moving subject, as in most user video.

    The subject is the pixels whose motion is large (over 1 px and over half the 95th percentile
    of the motion); the camera translates by a fraction ``alpha`` ~ U(0.5, 1) of their median
    motion, so the subject keeps nearly still and the scenery moves against it. A flow with no
    motion over 1 px is returned as it was. Exact for the image the network sees (a translation
    after the motion), like :func:`add_camera_motion`.
    """
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    if magnitude.max() <= 1.0:
        return flow
    subject = magnitude > max(1.0, 0.5 * float(np.quantile(magnitude, 0.95)))
    shift = np.float32(rng.uniform(0.5, 1.0)) * np.median(flow[subject], axis=0).astype(np.float32)
    return (flow - shift).astype(np.float32)


def jitter_colour(images: Sequence[np.ndarray], brightness: float, contrast: float, saturation: float,
                  gray: bool) -> list[np.ndarray]:
    """The frames of a pair with the same colour change: scale by ``brightness``, then pull towards the
    frame's mean grey by ``contrast`` and towards each pixel's grey by ``saturation`` (1 leaves them,
    0 makes a flat or a grey frame), then make them grey if ``gray``. uint8 RGB in and out.

    Motion does not depend on colour, so the flow target stays as it is; what changes is how much an
    encoder may lean on a part's colour to tell what moves together.
    """
    weights = np.float32([0.299, 0.587, 0.114])
    out = []
    for image in images:
        x = image.astype(np.float32) * np.float32(brightness)
        mean_grey = (x @ weights).mean()
        x = mean_grey + np.float32(contrast) * (x - mean_grey)
        grey = (x @ weights)[..., None]
        x = grey + np.float32(saturation) * (x - grey)
        if gray:
            x = np.repeat((x @ weights)[..., None], 3, axis=-1)
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return out


def random_colour(images: Sequence[np.ndarray], rng: np.random.Generator, strength: float, gray_prob: float
                  ) -> list[np.ndarray]:
    """:func:`jitter_colour` with brightness, contrast and saturation each drawn from U(1 - strength,
    1 + strength) and grey with probability ``gray_prob``; the draws happen only for a non-zero option."""
    factors = rng.uniform(1 - strength, 1 + strength, size=3) if strength > 0 else np.ones(3)
    gray = gray_prob > 0 and rng.random() < gray_prob
    return jitter_colour(images, *(float(f) for f in factors), gray=gray)


class ImageFlowDataset(Dataset):
    """Samples for CMP training from one or more list files.

    An item is a dict of float32 tensors: ``image`` (3,H,W) normalized,
    ``sparse`` (4,H,W) = flow x, flow y, mask, mask, ``flow`` (2,H,W) target,
    ``valid`` (1,H,W) where the target is known, ``image2`` (3,H,W) normalized,
    plus ``index`` and ``skipped`` (how many bad pairs were skipped to give
    this one; always 0 unless ``skip_bad``).
    """

    def __init__(self, list_files: Sequence[str | os.PathLike], config: DataConfig, train: bool,
                 seed: int = 0, skip_bad: bool = False, load_image2: bool = True):
        if not list_files:
            raise InputError("no list files given (data.train_source / data.val_source are empty)")
        self.records = [r for path in list_files for r in read_pair_list(path)]
        self.config = config
        self.train = train
        self.seed = seed
        self.skip_bad = skip_bad
        self.load_image2 = load_image2
        # Normalization as a per-channel lookup table of the 256 pixel values: 5x faster than arithmetic.
        levels = np.arange(256, dtype=np.float32)[:, None]
        self._lut = np.ascontiguousarray(((levels - np.float32(config.mean)) / np.float32(config.std)).T)

    def __len__(self) -> int:
        return len(self.records)

    def sample_rng(self, index: int, draw: int = 0) -> np.random.Generator:
        """The generator of one sample: a function of (dataset seed, index, draw), independent of workers."""
        return np.random.default_rng([self.seed, index, draw])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """``key`` is an index, or (index, draw) where ``draw`` numbers the times this index was drawn.

        Samplers that yield (index, draw) make every sample's augmentation and
        guidance reproducible whatever the number of workers, and resumable.
        """
        index, draw = key if isinstance(key, tuple) else (key, 0)
        skipped = 0
        while True:
            try:
                item = self.make_sample(self.records[index], self.sample_rng(index, draw))
                break
            except (InputError, FlowFileError) as exc:
                if not self.skip_bad or skipped >= 100:
                    raise
                log.warning("skipping a bad pair: %s", exc)
                skipped += 1
                index = (index + 1) % len(self.records)
        item["index"] = torch.tensor(index)
        item["skipped"] = torch.tensor(skipped)
        return item

    def make_sample(self, record: PairRecord, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Read, resize, crop, augment, normalize and sample guidance for one pair."""
        cfg = self.config
        image1, image2, flow, valid = read_pair(record)
        size = resized_size(*image1.shape[:2], cfg.short_size, cfg.long_size)
        image1, image2, flow, valid = resize_pair(image1, image2, flow, valid, size)
        image1, image2, flow, valid = crop_arrays([image1, image2, flow, valid], tuple(cfg.crop_size),
                                                  rng if self.train else None)
        if self.train:
            if cfg.flip and rng.random() < 0.5:
                image1, image2, flow, valid = (a[:, ::-1] for a in (image1, image2, flow, valid))
                flow = flow * np.float32([-1, 1])
            flow = augment_flow(flow, rng, cfg.flow_reverse, cfg.flow_scale, cfg.flow_rotate)
            if cfg.camera_motion == CAMERA_FOLLOW:
                if rng.random() < cfg.camera_prob:
                    flow = follow_subject(flow, rng)
            elif cfg.camera_motion > 0 and rng.random() < cfg.camera_prob:
                flow = add_camera_motion(flow, rng, cfg.camera_motion)
        flow = np.ascontiguousarray(flow, dtype=np.float32)
        guided = np.where(valid[..., None], flow, np.nan).astype(np.float32) if not valid.all() else flow
        if self.train and cfg.guidance_density == "random":
            sparse_flow, mask = sample_guidance_any_density(guided, rng, cfg.nms_ks, cfg.dense_prob,
                                                            cfg.dense_grid, cfg.max_sparse)
        else:
            sparse_flow, mask = sample_guidance(guided, cfg.sample_strategy, cfg.bg_ratio, cfg.nms_ks,
                                                cfg.max_num_guide, rng=rng)
        if self.train and (cfg.colour_jitter > 0 or cfg.gray_prob > 0):
            # drawn after everything else, so the option changes the pixels of a sample and nothing more
            image1, image2 = random_colour([image1, image2], rng, cfg.colour_jitter, cfg.gray_prob)
        item = {
            "image": self._normalize(image1),
            "sparse": torch.from_numpy(make_sparse_input(sparse_flow, mask)),
            "flow": torch.from_numpy(flow.transpose(2, 0, 1).copy()),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)[None].astype(np.float32)),
        }
        if self.load_image2:
            item["image2"] = self._normalize(image2)
        return item

    def _normalize(self, image: np.ndarray) -> torch.Tensor:
        """uint8 RGB (H, W, 3) -> float32 (3, H, W), (pixel - mean) / std."""
        channels = cv2.split(np.ascontiguousarray(image))
        return torch.from_numpy(np.stack([self._lut[c].take(ch) for c, ch in enumerate(channels)]))
