"""Propagation: a few arrows on an image of any size -> its dense flow, with the image encoded once.

:class:`Propagator` wraps a CMP network as sam2's predictor does:
``set_image`` encodes an image once and keeps everything that depends on the
image alone; ``propagate`` then answers a query (one set of arrows and still
points) with only the sparse encoder and the decoder, and ``propagate_batch``
answers many in one batched call.

Working size. The network sees the image resized so that its short side is the
working size (by default the short side its training images were resized to,
``data.short_size``, e.g. 416 px; the original demo worked at that scale too),
both sides rounded to a multiple of the network's stride; the aspect ratio is
kept. Guidance is mapped into that frame (positions with pixel centres
kept aligned, vectors scaled by the x and y ratios) and the flow is mapped back
to the image's pixels. A discrete network represents motions up to ``fmax``
(50 px) per axis *at its working size*: on a 1920x1080 image with a 416 px
working size (736x416), that is +-130 px.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import DataConfig
from ..errors import InputError
from ..precision import autocast
from ..precision import resolve as resolve_precision
from .guidance_file import Guidance

DEFAULT_BATCH_SIZE = 8
MAX_ASPECT = 16.0
"""Longest side / shortest side of an image the apps accept (``Propagator(max_aspect=...)`` raises it): a
2000x4 image at a 192 px working size would be 96000x192."""


def working_shape(height: int, width: int, short_side: int, multiple: int, min_size: int = 1) -> tuple[int, int]:
    """(H, W) the network sees for an image of ``height`` x ``width``: short side ``short_side``, both multiples."""
    if height < 1 or width < 1:
        raise InputError(f"image is {width}x{height}: empty")
    scale = short_side / min(height, width)
    floor = max(multiple, math.ceil(min_size / multiple) * multiple)

    def side(length: float) -> int:
        return max(floor, int(round(length / multiple)) * multiple)

    return side(height * scale), side(width * scale)


def default_working_size(data: DataConfig) -> int:
    """The short side at which the network saw whole images in training: ``data.short_size``.

    Training resizes every image to that short side before cropping, so objects
    look their training size there (for the quickstart's network, trained at
    short side 192 with 128 px crops, click-to-mask IoU was 0.45 at 192 against
    0.39 at 128: ``benchmarks/bench_annotate.py``). With ``data.long_size``
    instead, the short side of the training crop.
    """
    if data.short_size is not None:
        return int(data.short_size)
    return int(min(data.crop_size))


def load_image(image: np.ndarray | str | os.PathLike) -> np.ndarray:
    """An RGB image (H, W, 3) uint8 from an array (gray, RGB or RGBA; uint8 or float 0..255) or a file."""
    if isinstance(image, (str, os.PathLike)):
        from ..data.dataset import read_image_rgb

        return read_image_rgb(str(image))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"an image must be (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray, got {array.shape}")
    array = array[:, :, :3]
    if array.dtype == np.uint16:  # 16-bit PNGs: keep the 8 high bits
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise InputError(f"image has dtype {array.dtype}; expected uint8, uint16 or float RGB values 0..255")
        if np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise InputError("image has a non-finite value; expected RGB values 0..255")
            if array.size and 0 < float(array.max()) <= 1.0:
                raise InputError("float image with values in 0..1: give RGB values 0..255 (multiply by 255) "
                                 "or uint8")
        array = np.clip(np.round(array.astype(np.float32)), 0, 255).astype(np.uint8)
    if min(array.shape[:2]) < 1:
        raise InputError(f"image is {array.shape[1]}x{array.shape[0]}: empty")
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------- the propagator


def has_dominant_motion(model: Any) -> bool:
    """Whether ``model`` was trained with the dominant-motion prior (``model.geodesic_prior_distance`` > 0), so a
    caller can choose to leave it out (``Propagator(dominant_motion=...)``)."""
    return getattr(model, "geodesic_prior_distance", 0) > 0


class Propagator:
    """Dense flow of one image from sparse arrows, the image encoded once for many queries.

    ``model`` is a CMP network (or any module with its interface:
    ``encode_image``, ``decode``, ``output_to_flow``, ``input_multiple``,
    ``min_input_size``, ``config``); it is put in eval mode. ``working_size``
    is the short side the network sees (default: :func:`default_working_size`),
    or an explicit ``(height, width)`` of multiples
    of the network's stride. ``channels_last`` converts the model's weights (in
    place) and every input to the channels-last memory format: the same outputs
    up to float rounding; on a CPU, 0.74-0.83x the time of a query and
    0.68-0.86x that of an annotation click (4 probes), the bins then being
    decoded along their contiguous axis (``benchmarks/bench_propagate.py``).
    ``precision`` is ``fp32`` (default), ``bf16`` (bfloat16 autocast for the
    network's convolutions; decoding, fills and flow stay float32) or ``auto``
    (bf16 where it is native: CPUs with AVX512-BF16/AMX, CUDA): see
    :mod:`motionprop.precision`. ``dominant_motion``: whether a model with
    ``model.geodesic_prior_distance`` moves pixels far from every arrow with
    the image's dominant motion (the guidance vectors' mean weighted by the
    image border each one's cell holds). Off by default: for a few hand-placed
    arrows and still points it spreads part of the arrows' motion over the
    whole image; on for guidance sampled over the whole frame, such as tracks
    from a video (what ``model.predict_flow`` and the benchmarks do).
    Not thread-safe: give each thread its own, or lock.

    Example::

        propagator = Propagator(motionprop.load_model("ckpt"))
        propagator.set_image(rgb)                                    # (H, W, 3) uint8
        flow = propagator.propagate([(900, 500, 40, -10)], still_points=[(300, 800)])  # (H, W, 2)
    """

    def __init__(self, model: nn.Module, working_size: int | tuple[int, int] | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, cached_decoder: bool = True, max_aspect: float = MAX_ASPECT,
                 channels_last: bool = False, precision: str = "fp32", dominant_motion: bool = False):
        self.model = model.eval()
        self.dominant_motion = bool(dominant_motion)
        self.precision = resolve_precision(precision, self.device)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.max_aspect = float(max_aspect)
        config = model.config
        self.mean = torch.tensor(config.data.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(config.data.std, dtype=torch.float32).view(1, 3, 1, 1)
        if working_size is None:
            working_size = default_working_size(config.data)
        if isinstance(working_size, (tuple, list)):
            h, w = (int(v) for v in working_size)
            k = model.input_multiple
            if h % k or w % k or min(h, w) < model.min_input_size:
                raise InputError(f"working size {h}x{w} must be multiples of {k} and at least "
                                 f"{model.min_input_size} px")
            working_size = (h, w)
        elif int(working_size) < 1:
            raise InputError(f"working size must be positive, got {working_size}")
        self.working_size = working_size
        self.batch_size = max(1, int(batch_size))
        self.use_cached_decoder = cached_decoder
        bins = getattr(model, "bins", None)
        self.fmax = float(bins.fmax) if bins is not None else None
        self.image: np.ndarray | None = None
        self._features: Any = None
        self._decoder: Callable[[torch.Tensor], torch.Tensor] | None = None

    # ----------------------------------------------------------------- image

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        self._require_image()
        return self.image.shape[0], self.image.shape[1]

    @property
    def working_shape(self) -> tuple[int, int]:
        """(H, W) the network sees for the current image."""
        return self._working_shape(*self.image_size)

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) ratios of the working frame to the image: working pixels per image pixel."""
        (h, w), (wh, ww) = self.image_size, self.working_shape
        return ww / w, wh / h

    def _working_shape(self, height: int, width: int) -> tuple[int, int]:
        if isinstance(self.working_size, tuple):
            return self.working_size
        if max(height, width) > self.max_aspect * min(height, width):
            raise InputError(f"image is {width}x{height}: its aspect ratio is beyond the limit of "
                             f"{self.max_aspect:g}:1 (Propagator(max_aspect=...) raises it); crop it first")
        return working_shape(height, width, self.working_size, self.model.input_multiple,
                             self.model.min_input_size)

    def _require_image(self) -> None:
        if self.image is None:
            raise InputError("no image set: call set_image(image) first")

    @torch.inference_mode()
    def set_image(self, image: np.ndarray | str | os.PathLike) -> None:
        """Encode ``image`` ((H, W, 3) RGB uint8, or a file) once; later queries reuse its features."""
        import cv2

        rgb = load_image(image)
        self.image = rgb
        h, w = rgb.shape[:2]
        wh, ww = self._working_shape(h, w)
        if (wh, ww) != (h, w):
            shrink = wh < h and ww < w
            rgb = cv2.resize(rgb, (ww, wh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        device = self.device
        x = torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float()
        x = (x - self.mean.to(device)) / self.std.to(device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            self._features = self.model.encode_image(x)
            self._decoder = self._cached_decoder() if self.use_cached_decoder else None

    def _autocast(self) -> Any:
        """The network's autocast context for :attr:`precision` (a no-op for float32)."""
        return autocast(self.precision, self.device)

    def _cached_decoder(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The model's :meth:`~motionprop.models.cmp.CMP.cached_decode` for the current image, if it has one."""
        cached_decode = getattr(self.model, "cached_decode", None)
        if cached_decode is None:
            return None
        try:
            return cached_decode(self._features)
        except TypeError:  # a decoder with convolutions that cannot be split: decode in full
            return None

    def reset_image(self) -> None:
        """Forget the current image and its features."""
        self.image, self._features, self._decoder = None, None, None

    # ----------------------------------------------------------------- guidance

    def sparse_input(self, guidance_sets: Sequence[Guidance | tuple]) -> torch.Tensor:
        """The network's guidance input (N, 4, h, w) at the working size for N guidance sets.

        Positions are mapped as pixel centres, ``x' = (x + 0.5) * sx - 0.5``,
        rounded to the nearest working pixel; vectors are scaled by ``(sx, sy)``.
        Still points are written after arrows, so a still point wins a pixel both claim.
        """
        self._require_image()
        h, w = self.image_size
        wh, ww = self.working_shape
        sx, sy = ww / w, wh / h
        sets = [Guidance.of(g) for g in guidance_sets]
        sparse = torch.zeros(len(sets), 4, wh, ww)
        for b, guidance in enumerate(sets):
            if len(guidance) == 0:
                raise InputError("a guidance set is empty: give at least one arrow or still point")
            guidance.check_inside(w, h)
            for x, y, dx, dy in guidance.arrows.tolist():
                self._check_bound((x, y, dx, dy), w, h)
                vx, vy = dx * sx, dy * sy
                self._check_range(vx, vy, (x, y, dx, dy))
                i, j = self._to_working(x, y, sx, sy, ww, wh)
                sparse[b, :, j, i] = torch.tensor([vx, vy, 1.0, 1.0])
            for x, y in guidance.still_points.tolist():
                i, j = self._to_working(x, y, sx, sy, ww, wh)
                sparse[b, :, j, i] = torch.tensor([0.0, 0.0, 1.0, 1.0])
        return sparse

    @staticmethod
    def _to_working(x: float, y: float, sx: float, sy: float, width: int, height: int) -> tuple[int, int]:
        i = int(np.clip(np.floor((x + 0.5) * sx), 0, width - 1))  # == round((x + 0.5) * sx - 0.5)
        j = int(np.clip(np.floor((y + 0.5) * sy), 0, height - 1))
        return i, j

    def _check_bound(self, arrow: tuple[float, ...], width: int, height: int) -> None:
        """An arrow longer than the image itself is a mistake (and overflows the network): an error."""
        x, y, dx, dy = arrow
        if abs(dx) > width or abs(dy) > height:
            shown = ",".join(f"{v:g}" for v in arrow)
            (wh, ww), scale = self.working_shape, self.fmax
            reach = (f"; the network's range is +-{scale:g} px per axis at its working size {ww}x{wh} "
                     f"(+-{scale * width / ww:.0f} x +-{scale * height / wh:.0f} px in this image)") if scale else ""
            raise InputError(f"arrow {shown} moves farther than the {width}x{height} image is wide or high{reach}")

    def _check_range(self, vx: float, vy: float, arrow: tuple[float, ...]) -> None:
        if self.fmax is not None and max(abs(vx), abs(vy)) > self.fmax:
            shown = ",".join(f"{v:g}" for v in arrow)
            warnings.warn(f"arrow {shown} is ({vx:.0f}, {vy:.0f}) px at the network's working size "
                          f"{self.working_shape[1]}x{self.working_shape[0]}, beyond its range of "
                          f"+-{self.fmax:g} px per axis: the propagated motion saturates", stacklevel=4)

    # ----------------------------------------------------------------- queries

    def propagate(self, arrows: Any = (), still_points: Any = (), *, return_confidence: bool = False,
                  dominant_motion: bool | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Flow (H, W, 2) float32 in the image's pixels from arrows (x, y, dx, dy) and still points (x, y).

        With ``return_confidence``: also the confidence (H, W) in [0, 1] from
        the bin distributions (discrete networks only). ``dominant_motion``: as
        :meth:`propagate_batch`.
        """
        result = self.propagate_batch([Guidance(arrows, still_points)], return_confidence=return_confidence,
                                      dominant_motion=dominant_motion)
        if return_confidence:
            return result[0][0], result[1][0]
        return result[0]

    def propagate_batch(self, guidance_sets: Sequence[Guidance | tuple], *, return_confidence: bool = False,
                        dominant_motion: bool | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Flows (N, H, W, 2) float32 for N guidance sets (each a Guidance or an (arrows, still_points) pair).

        The sets are decoded in batches of ``batch_size`` against the cached
        image features. With ``return_confidence``: also confidences (N, H, W).
        ``dominant_motion``: this call's choice of the dominant-motion prior
        (default: the propagator's); click-to-mask's probes leave it out.
        """
        if dominant_motion is None:
            dominant_motion = self.dominant_motion
        self._require_image()
        if return_confidence and getattr(self.model, "bins", None) is None:
            raise InputError("confidence needs a discrete (bin) network; this one regresses flow directly")
        sparse = self.sparse_input(guidance_sets)
        h, w = self.image_size
        flows = np.empty((len(sparse), h, w, 2), np.float32)
        confidences = np.empty((len(sparse), h, w), np.float32) if return_confidence else None
        for start in range(0, len(sparse), self.batch_size):
            chunk = sparse[start:start + self.batch_size]
            flow, confidence = self._query(chunk, return_confidence, dominant_motion)
            flows[start:start + len(chunk)] = flow
            if confidences is not None:
                confidences[start:start + len(chunk)] = confidence
        return (flows, confidences) if return_confidence else flows

    @torch.inference_mode()
    def _query(self, sparse: torch.Tensor, return_confidence: bool, dominant_motion: bool
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """sparse (B,4,h,w) at the working size -> flow (B,H,W,2) in image pixels [, confidence (B,H,W)]."""
        sparse = sparse.to(self.device)
        if self.channels_last:
            sparse = sparse.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            raw = self._decoder(sparse) if self._decoder is not None else self.model.decode(self._features, sparse)
        raw = raw.float()
        working = tuple(sparse.shape[-2:])
        if getattr(self.model, "needs_guidance_for_flow", False):  # residual or blended models
            cost = getattr(self._features, "guidance_cost", None)  # the image's, for a geodesic fill
            fill = None
            if not dominant_motion and has_dominant_motion(self.model):
                fill = self.model.residual_fill(sparse, cost, dominant_motion=False)
            flow = self.model.output_to_flow(raw, working, sparse, fill=fill, cost=cost).float()  # (B,2,h,w) px
        else:
            flow = self.model.output_to_flow(raw, working).float()
        (h, w), (wh, ww) = self.image_size, working
        if (wh, ww) != (h, w):
            # Half-pixel-centred resampling, matching the image resize and the guidance mapping.
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / ww, h / wh], device=flow.device).view(1, 2, 1, 1)
        confidence = None
        if return_confidence:
            conf = self.model.output_to_confidence(raw, working).float()
            if (wh, ww) != (h, w):
                conf = F.interpolate(conf, size=(h, w), mode="bilinear", align_corners=False)
            confidence = conf[:, 0].clamp(0, 1).cpu().numpy()
        return flow.permute(0, 2, 3, 1).cpu().numpy(), confidence


# --------------------------------------------------------------------------- pictures and files


def draw_arrows(image: np.ndarray, guidance: Guidance, thickness: int | None = None) -> np.ndarray:
    """Copy of uint8 RGB ``image`` with the arrows (yellow, red start) and still points (red crosses) drawn."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    thickness = thickness or max(1, round(min(image.shape[:2]) / 250))
    marker = 4 * thickness + 4
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    scale = 1 << shift

    def point(x: float, y: float) -> tuple[int, int]:
        return int(round(x * scale)), int(round(y * scale))

    for x, y, dx, dy in guidance.arrows.tolist():
        length = math.hypot(dx, dy)
        if length >= 1:
            cv2.arrowedLine(out, point(x, y), point(x + dx, y + dy), (255, 230, 0), thickness, cv2.LINE_AA,
                            shift, min(0.4, max(0.1, 3 * marker / length / 2)))
        cv2.circle(out, point(x, y), (thickness + 1) * scale, (255, 40, 40), -1, cv2.LINE_AA, shift)
    for x, y in guidance.still_points.tolist():
        cv2.drawMarker(out, (int(round(x)), int(round(y))), (255, 40, 40), cv2.MARKER_TILTED_CROSS, marker,
                       thickness, cv2.LINE_AA)
    return out


def flow_picture(image: np.ndarray, flow: np.ndarray, guidance: Guidance, max_flow: float | None = None,
                 confidence: np.ndarray | None = None) -> np.ndarray:
    """The image with its arrows beside the flow in the Middlebury colours (and the confidence, if given)."""
    from ..visualize import flow_to_color, hstack_images

    parts = [draw_arrows(image, guidance), flow_to_color(flow, max_flow)]
    if confidence is not None:
        grey = np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8)
        parts.append(np.repeat(grey[:, :, None], 3, axis=2))
    return hstack_images(parts, gap=max(4, image.shape[1] // 200))


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 RGB (or gray) image; the format follows the extension (atomically)."""
    import cv2

    from ..fileio import atomic_path

    path = Path(path)
    data = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(path.suffix or ".png", data)
    if not ok:
        raise InputError(f"{path}: OpenCV cannot write images of this extension (use .png or .jpg)")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.tobytes())
    return path
