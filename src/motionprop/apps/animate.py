"""Guided video generation: a still image and a few arrows -> a short clip of the image moving.

The flow propagated from the arrows is scaled from 0 to 1 over the frames
(``forward``), or from 0 to 1 and back (``loop``, which repeats seamlessly).
Each frame is the image forward-warped by the scaled flow with softmax
splatting (Niklaus & Liu, CVPR 2020): every source pixel is splatted
bilinearly, and where several land on the same pixel the one moving most
wins (weight ``exp(beta * |flow|)``), so moving objects pass in front of a
still background. Pixels nothing lands on (disocclusions) are filled by
OpenCV's inpainting (Telea).

Output: GIF (Pillow, or PyAV when Pillow is missing), MP4 (PyAV: H.264, or
MPEG-4 part 2 when libx264 is absent) or a folder of PNG frames.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..errors import InputError

MODES = ("forward", "loop")
HOLE_COVERAGE = 0.05  # below this much bilinear coverage a pixel counts as disoccluded
ORDER_SHARPNESS = 20.0  # the largest motion of the frame outweighs a still pixel by e^20


def flow_scales(num_frames: int, mode: str = "forward") -> list[float]:
    """How much of the flow each frame shows: 0 .. 1 (``forward``) or 0 .. 1 .. back towards 0 (``loop``).

    A loop's last frame is one step before the first, so the clip repeats
    without a doubled frame.
    """
    if mode not in MODES:
        raise InputError(f"unknown animation mode {mode!r}; choose {' or '.join(MODES)}")
    if num_frames < 2:
        raise InputError(f"an animation needs at least 2 frames, got {num_frames}")
    if mode == "forward":
        return [k / (num_frames - 1) for k in range(num_frames)]
    return [round(1.0 - abs(1.0 - 2.0 * k / num_frames), 12) for k in range(num_frames)]  # k, n - k: equal


def forward_warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Splat uint8 RGB ``image`` (H, W, 3) forward along ``flow`` (H, W, 2) -> (float RGB frame, hole mask).

    Softmax splatting with the motion length as importance: larger motions are
    drawn in front. The hole mask (H, W) bool marks pixels that received less
    than :data:`HOLE_COVERAGE` of a source pixel; their colour is undefined (0).
    """
    h, w = image.shape[:2]
    if flow.shape != (h, w, 2):
        raise InputError(f"flow is {flow.shape} but the image is {image.shape[:2]}")
    flow_t = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))
    colour = torch.from_numpy(np.ascontiguousarray(image)).reshape(-1, 3).float()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    tx = (xs + flow_t[..., 0]).reshape(-1)
    ty = (ys + flow_t[..., 1]).reshape(-1)
    length = torch.linalg.vector_norm(flow_t, dim=-1).reshape(-1)
    beta = max(1.0, ORDER_SHARPNESS / max(float(length.max()), 1e-6))  # per pixel of motion
    x0, y0 = torch.floor(tx), torch.floor(ty)
    fx, fy = tx - x0, ty - y0
    x0, y0 = x0.long(), y0.long()

    targets, weights, sources = [], [], []
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        wb = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        keep = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (wb > 1e-4)
        targets.append((yi * w + xi)[keep])
        weights.append(wb[keep])
        sources.append(torch.nonzero(keep).squeeze(1))
    target = torch.cat(targets)
    bilinear = torch.cat(weights)
    source = torch.cat(sources)

    importance = beta * length[source]
    # Per-target softmax, shifted by each target's largest importance so nothing underflows to zero.
    front = torch.full((h * w,), -math.inf).scatter_reduce(0, target, importance, reduce="amax")
    weight = bilinear * torch.exp(importance - front[target])
    total = torch.zeros(h * w).index_add_(0, target, weight)
    accum = torch.zeros(h * w, 3).index_add_(0, target, colour[source] * weight[:, None])
    coverage = torch.zeros(h * w).index_add_(0, target, bilinear)
    holes = coverage < HOLE_COVERAGE
    frame = torch.where(holes[:, None], torch.zeros(()), accum / total.clamp_min(1e-12)[:, None])
    return frame.reshape(h, w, 3).numpy(), holes.reshape(h, w).numpy()


def fill_holes(frame: np.ndarray, holes: np.ndarray, radius: int = 3) -> np.ndarray:
    """uint8 RGB frame with the ``holes`` pixels inpainted from their surroundings (OpenCV, Telea)."""
    import cv2

    rgb = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    if not holes.any():
        return rgb
    if holes.all():
        return rgb  # nothing to inpaint from
    return cv2.inpaint(rgb, holes.astype(np.uint8), radius, cv2.INPAINT_TELEA)


def render_frames(image: np.ndarray, flow: np.ndarray, num_frames: int = 24, mode: str = "forward",
                  progress: bool = False, on_frame: Callable[[int, int], None] | None = None
                  ) -> list[np.ndarray]:
    """Frames (list of uint8 RGB (H, W, 3)) of ``image`` moving along ``flow`` scaled by :func:`flow_scales`.

    ``on_frame(done, total)`` is called after each frame (the web app's progress
    bar); an exception it raises stops the rendering (the web app's cancel).
    """
    from tqdm import tqdm

    scales = flow_scales(num_frames, mode)
    flow = np.asarray(flow, dtype=np.float32)
    rendered: dict[float, np.ndarray] = {0.0: image}  # a loop shows every scale twice: render it once
    for k, s in enumerate(tqdm(scales, desc="frames", unit="frame", disable=not progress, leave=False)):
        if s not in rendered:
            frame, holes = forward_warp(image, flow * np.float32(s))
            rendered[s] = fill_holes(frame, holes)
        if on_frame is not None:
            on_frame(k + 1, len(scales))
    return [rendered[s].copy() for s in scales]


def animate(propagator: Any, arrows: Any = (), still_points: Any = (), num_frames: int = 24,
            mode: str = "forward", max_side: int | None = None, progress: bool = False
            ) -> list[np.ndarray]:
    """Frames of the propagator's current image animated by the flow propagated from the guidance.

    ``propagator`` is a :class:`~motionprop.apps.propagate.Propagator` with an
    image set; arrows and still points are in that image's pixels. With
    ``max_side``, frames are rendered at most that many pixels on the long side.
    """
    flow_scales(num_frames, mode)  # check the arguments before the network runs
    flow = propagator.propagate(arrows, still_points)
    image = propagator.image
    if max_side is not None:
        image, flow = shrink(image, flow, max_side)
    return render_frames(image, flow, num_frames, mode, progress)


def shrink(image: np.ndarray, flow: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and flow resized so the long side is at most ``max_side`` (flow vectors scaled with them)."""
    import cv2

    if max_side < 16:
        raise InputError(f"max side must be at least 16 px, got {max_side}")
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image, flow
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_flow = cv2.resize(flow, size, interpolation=cv2.INTER_AREA) * np.float32([size[0] / w, size[1] / h])
    return small, small_flow


# --------------------------------------------------------------------------- writing


def output_kind(path: str | os.PathLike) -> str:
    """``gif``, ``mp4`` or ``frames`` (a folder: a path ending in '/' or without an extension)."""
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    if text.endswith(("/", os.sep)) or Path(text).is_dir() or not suffix:
        return "frames"
    if suffix in (".gif", ".mp4"):
        return suffix[1:]
    raise InputError(f"{text}: write .gif, .mp4 or a folder (ending in '/') of PNG frames")


def check_writer(path: str | os.PathLike) -> str:
    """The output kind of ``path``, after checking its writer library is installed (before any work)."""
    kind = output_kind(path)
    if kind == "mp4" and not _has("av"):
        raise InputError(f"{path}: writing MP4 needs PyAV: pip install av (or motionprop[video])")
    if kind == "gif" and not (_has("PIL") or _has("av")):
        raise InputError(f"{path}: writing GIF needs Pillow or PyAV: pip install pillow")
    return kind


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def write_animation(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 12.0,
                    keep: Iterable[str | os.PathLike] = ()) -> Path:
    """Write frames as a GIF, an MP4 or a folder of PNG frames (by :func:`output_kind`); returns the path.

    A frames folder loses the frames of an earlier, longer clip, never a file in ``keep``.
    """
    if not frames:
        raise InputError("no frames to write")
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    kind = check_writer(path)
    path = Path(path)
    if kind == "frames":
        return write_png_frames(path, frames, keep)
    if kind == "gif":
        return write_gif(path, frames, fps)
    return write_mp4(path, frames, fps)


def write_png_frames(folder: str | os.PathLike, frames: Iterable[np.ndarray],
                     keep: Iterable[str | os.PathLike] = ()) -> Path:
    """``folder/00000.png`` ... (each written atomically), then delete older frames beyond the new count.

    Frames of an earlier, longer clip in the same folder would otherwise mix with
    the new ones; files in ``keep`` (the inputs) are never deleted.
    """
    import re

    from ..fileio import same_file
    from .propagate import write_rgb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, frame in enumerate(frames, start=1):
        write_rgb(folder / f"{count - 1:05d}.png", frame)
    protected = list(keep)
    for path in folder.iterdir():
        match = re.fullmatch(r"(\d{5})\.png", path.name)
        if match and int(match.group(1)) >= count and path.is_file() \
                and not any(same_file(path, p) for p in protected):
            path.unlink()
    return folder


def write_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 12.0) -> Path:
    """An endlessly looping GIF, one 256-colour palette (from the first frame) for every frame (atomically)."""
    from ..fileio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if _has("PIL"):
            _gif_pillow(tmp, frames, fps)
        else:
            _encode_av(tmp, frames, fps, "gif")
    return path


def _gif_pillow(path: Path, frames: Sequence[np.ndarray], fps: float) -> None:
    from PIL import Image

    # One palette from the first frame: every frame is made of the image's own colours, and a shared
    # palette without dithering keeps still regions from flickering between frames.
    palette = Image.fromarray(frames[0]).quantize(256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 / fps)), optimize=False, disposal=1)


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 12.0) -> Path:
    """An H.264 MP4 (yuv420p; odd sides padded by one edge pixel), atomically."""
    from ..fileio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        _encode_av(tmp, frames, fps, "mp4")
    return path


def _encode_av(path: Path, frames: Sequence[np.ndarray], fps: float, kind: str) -> None:
    import fractions

    import av

    rate = fractions.Fraction(fps).limit_denominator(1000)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w", format=kind) as container:
        if kind == "gif":
            stream = container.add_stream("gif", rate=rate)
            stream.pix_fmt = "rgb8"
            pad_h = pad_w = 0
        else:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=rate)
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "medium"}
            else:
                stream.bit_rate = 8_000_000
            pad_h, pad_w = h % 2, w % 2  # 4:2:0 chroma needs even sides
        stream.width, stream.height = w + pad_w, h + pad_h
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise InputError("all frames must have the same size")
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
