"""Mask refinement for click-to-mask: snap a motion mask to the object's colours with GrabCut.

Not the paper's method, an option of :func:`motionprop.apps.annotate.annotate` (``refine="grabcut"``,
``motionprop annotate --refine grabcut``). A network trained for minutes marks roughly where the
object is but not its outline; GrabCut (Rother et al. 2004, OpenCV's implementation) fits colour
models to the inside and the outside of that mask and moves the outline to the image's edges. What
it is told:

* probably foreground: the motion mask (score above the threshold);
* probably background: the rest;
* surely background: where the motion score is below :data:`SURE_BACKGROUND_SCORE` (the pixels no
  probe moved), and a small disc around every negative click;
* surely foreground: a small disc around every positive click.

Large images are refined at a long side of at most :data:`MAX_SIDE` px and the result is upsampled.
OpenCV's random generator is seeded before each call, so a refinement is deterministic.
"""

from __future__ import annotations

import numpy as np

REFINE_METHODS = ("none", "grabcut")
SURE_BACKGROUND_SCORE = 0.1
CLICK_RADIUS = 3  # px of the image: the disc around a click that is sure
MAX_SIDE = 1024
ITERATIONS = 5


def check_method(refine: object) -> str:
    """``refine`` if it names a method of :data:`REFINE_METHODS`, else :class:`InputError` listing them."""
    from ..errors import InputError

    if not isinstance(refine, str) or refine not in REFINE_METHODS:
        raise InputError(f"refine must be one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    return refine


def grabcut(image: np.ndarray, probable: np.ndarray, sure_foreground: np.ndarray, sure_background: np.ndarray,
            iterations: int = ITERATIONS) -> np.ndarray:
    """GrabCut of RGB uint8 ``image`` (H, W, 3) from boolean seed maps (H, W) -> the foreground (H, W) bool.

    ``sure_foreground`` wins over ``sure_background`` where both are set. When the seeds leave no
    background or no foreground to fit a colour model to, ``probable`` is returned unchanged.
    """
    import cv2

    height, width = probable.shape
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        seeds = [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
                 for m in (probable, sure_foreground, sure_background)]
        out = grabcut(small, *seeds, iterations=iterations).astype(np.float32)
        return cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    seeds = np.where(probable, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seeds[sure_background] = cv2.GC_BGD
    seeds[sure_foreground] = cv2.GC_FGD
    foreground = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if foreground.all() or not foreground.any():
        return probable.copy()
    cv2.setRNGSeed(0)
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), seeds, None, bgd_model, fgd_model, iterations,
                cv2.GC_INIT_WITH_MASK)
    return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)


def click_discs(shape: tuple[int, int], points: np.ndarray, radius: int = CLICK_RADIUS) -> np.ndarray:
    """(H, W) bool: discs of ``radius`` px around the (x, y) ``points``."""
    out = np.zeros(shape, bool)
    yy, xx = np.ogrid[0:shape[0], 0:shape[1]]
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        out |= (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2
    return out


def refine_mask(image: np.ndarray, score: np.ndarray, mask: np.ndarray, positive: np.ndarray,
                negative: np.ndarray) -> np.ndarray:
    """The motion ``mask`` (H, W) of ``image`` snapped to its colours (see the module docstring)."""
    shape = mask.shape
    return grabcut(image, mask, click_discs(shape, positive),
                   (score < SURE_BACKGROUND_SCORE) | click_discs(shape, negative))
