"""COCO run-length encoding of binary masks and COCO-style annotation files, without pycocotools.

COCO's RLE runs over the mask in column-major (Fortran) order and starts with
a run of zeros (possibly empty): ``[0-run, 1-run, 0-run, ...]``. The
*compressed* form writes the counts as one ASCII string: each count (from the
third on, as the difference to the count two before) in 5-bit groups, low
bits first, each group + 48, bit 0x20 set while more groups follow, bit 0x10
of the last group being the sign (pycocotools' ``rleToString``). Both forms
read back with ``pycocotools.mask.decode`` (the uncompressed one after
``frPyObjects``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a (H, W) binary mask in column-major order, starting with a (possibly empty) 0-run."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"a mask must be (H, W), got {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts


def counts_to_string(counts: Sequence[int]) -> str:
    """Compressed RLE string of run lengths (pycocotools' ``rleToString``)."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences end at -1
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(text: str) -> list[int]:
    """Run lengths from a compressed RLE string (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise InputError("truncated compressed RLE string")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise InputError(f"invalid character {text[p]!r} in a compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: np.ndarray, compressed: bool = True) -> dict[str, Any]:
    """COCO RLE of a (H, W) mask: ``{"size": [H, W], "counts": str}`` (or a list of ints, uncompressed)."""
    counts = mask_to_counts(mask)
    h, w = np.asarray(mask).shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(counts) if compressed else counts}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A (H, W) bool mask from a COCO RLE (compressed string, bytes or uncompressed list of counts)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise InputError("an RLE must be {'size': [H, W], 'counts': ...}") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise InputError(f"RLE counts sum to {sum(counts)} but the mask has {h} x {w} = {h * w} pixels")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy() if h * w else np.zeros((h, w), bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO box ``[x, y, width, height]`` of the mask's pixels (all 0 for an empty mask), as pycocotools."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


class CocoWriter:
    """Collects images and mask annotations; :meth:`write` saves a COCO-style JSON (instances format)."""

    def __init__(self, description: str = "motionprop annotate"):
        self.description = description
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.categories: dict[str, int] = {}

    def add_image(self, file_name: str, width: int, height: int) -> int:
        """Register an image; returns its id."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        return image_id

    def category_id(self, name: str) -> int:
        if name not in self.categories:
            self.categories[name] = len(self.categories) + 1
        return self.categories[name]

    def add_mask(self, image_id: int, mask: np.ndarray, category: str = "object",
                 extra: dict[str, Any] | None = None) -> int:
        """Add one object's mask (compressed RLE, area, bbox); returns the annotation id."""
        annotation_id = len(self.annotations) + 1
        self.annotations.append({
            "id": annotation_id,
            "image_id": image_id,
            "category_id": self.category_id(category),
            "segmentation": encode_rle(mask),
            "area": int(np.count_nonzero(mask)),
            "bbox": mask_bbox(mask),
            "iscrowd": 0,
            **(extra or {}),
        })
        return annotation_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": {"description": self.description},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n, "supercategory": n} for n, i in self.categories.items()],
        }

    def write(self, path: str | os.PathLike) -> Path:
        from ..fileio import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict()))
        return path
