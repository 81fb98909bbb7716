"""Pictures of flow and guidance: the Middlebury colour wheel, arrows and guidance marks."""

from __future__ import annotations

import cv2
import numpy as np

# Hue segments of the Middlebury colour wheel (Baker et al., 2011): red-yellow, yellow-green, green-cyan,
# cyan-blue, blue-magenta, magenta-red, with as many steps as in the reference code.
_SEGMENTS = (15, 6, 4, 11, 13, 6)


def _colour_wheel() -> np.ndarray:
    """(55, 3) float RGB colours in 0..1 around the wheel, starting at red (flow pointing right)."""
    ramps = []
    primaries = [(1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1), (1, 0, 1), (1, 0, 0)]
    for (start, end), steps in zip(zip(primaries, primaries[1:]), _SEGMENTS):
        t = np.arange(steps)[:, None] / steps
        ramps.append(np.asarray(start) * (1 - t) + np.asarray(end) * t)
    return np.concatenate(ramps)


_WHEEL = _colour_wheel()
_WHEEL32 = _WHEEL.astype(np.float32)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Flow (H, W, 2) -> uint8 RGB (H, W, 3): hue = direction, saturation = length / ``max_flow``.

    ``max_flow`` fixes the scale (compare pictures of different flows); by
    default it is the largest length in this flow. Unknown (NaN) flow is black.
    Float32 without boolean indexing of colour arrays: the web app draws one per query.
    """
    flow = np.asarray(flow, dtype=np.float32)
    unknown = ~np.isfinite(flow).all(axis=-1)
    if unknown.any():
        flow = np.where(unknown[..., None], np.float32(0), flow)
    u, v = flow[..., 0], flow[..., 1]
    length = np.hypot(u, v)
    scale = float(max_flow) if max_flow else float(length.max(initial=0.0))
    ratio = length / np.float32(max(scale, 1e-6))
    steps = len(_WHEEL32)
    position = np.arctan2(-v, -u)  # -pi..pi, as in the Middlebury reference
    position += np.float32(np.pi)
    position *= np.float32((steps - 1) / (2 * np.pi))
    i0 = position.astype(np.intp)  # position >= 0: truncation is the floor
    position -= i0
    i1 = i0 + 1
    i1[i1 == steps] = 0
    low = np.take(_WHEEL32, i0, axis=0)
    colour = np.take(_WHEEL32, i1, axis=0)
    colour -= low
    colour *= position[..., None]
    colour += low  # the hue, interpolated between wheel steps
    colour -= 1  # ... fading to white as the length goes to 0
    colour *= np.minimum(ratio, 1)[..., None]
    colour += 1
    shade = np.where(ratio > 1, np.float32(0.75 * 255), np.float32(255))  # beyond the scale: darker
    shade[unknown] = 0
    colour *= shade[..., None]
    return np.rint(colour, out=colour).astype(np.uint8)


def draw_guidance(image: np.ndarray, mask: np.ndarray, sparse_flow: np.ndarray | None = None,
                  radius: int | None = None) -> np.ndarray:
    """Copy of uint8 RGB ``image`` with a cross at every guidance point, and its vector as an arrow."""
    out = np.ascontiguousarray(image.copy())
    radius = radius or max(2, min(image.shape[:2]) // 60)
    ys, xs = np.nonzero(mask)
    for y, x in zip(ys.tolist(), xs.tolist()):
        if sparse_flow is not None:
            dx, dy = sparse_flow[y, x]
            if abs(dx) + abs(dy) > 0.5:
                cv2.arrowedLine(out, (x, y), (int(round(x + dx)), int(round(y + dy))), (255, 255, 0), 1,
                                cv2.LINE_AA, tipLength=0.25)
        cv2.drawMarker(out, (x, y), (255, 0, 0), cv2.MARKER_CROSS, 2 * radius, 1)
    return out


def denormalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Normalized (3, H, W) float -> uint8 RGB (H, W, 3)."""
    pixels = np.asarray(image).transpose(1, 2, 0) * np.float32(std) + np.float32(mean)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def hstack_images(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side-by-side uint8 RGB images of the same height, separated by white gaps."""
    height = images[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts = []
    for image in images:
        parts += [image, spacer]
    return np.concatenate(parts[:-1], axis=1)
