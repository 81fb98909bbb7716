"""Walking a DAVIS-style folder: clips, their frames and their annotation masks.

Layouts accepted (``ROOT``)::

    JPEGImages/480p/<clip>/*.jpg   Annotations/480p/<clip>/*.png    (DAVIS as released)
    JPEGImages/<clip>/*.jpg        Annotations/<clip>/*.png         (no resolution folder)

Masks are DAVIS-2016 binary PNGs (0 / 255, one object) or DAVIS-2017 palette
PNGs (object ids 1..K, 255 = void). Every frame needs a mask of the same name
and size: the propagation protocol starts from the first frame's mask and the
metrics score every other frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .metrics import VOID_LABEL

RESOLUTION_FOLDER = "480p"


@dataclass(frozen=True)
class Clip:
    """One annotated clip: frame files and mask files in the same order (same stems)."""

    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]


def dataset_folders(root: str | Path) -> tuple[Path, Path]:
    """(frames folder, annotations folder) of a DAVIS root, with or without the ``480p`` level."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--davis {root}: folder not found")
    folders = []
    for kind in ("JPEGImages", "Annotations"):
        base = root / kind
        if not base.is_dir():
            raise InputError(f"--davis {root}: no {kind}/ folder (expected the DAVIS layout "
                             f"{kind}/[480p/]<clip>/)")
        folders.append(base / RESOLUTION_FOLDER if (base / RESOLUTION_FOLDER).is_dir() else base)
    return folders[0], folders[1]


def list_clips(root: str | Path, names: list[str] | None = None) -> list[Clip]:
    """The clips of ``root`` (all, sorted, or ``names`` in that order), each checked for matching masks."""
    frames_dir, masks_dir = dataset_folders(root)
    available = sorted(p.name for p in frames_dir.iterdir() if p.is_dir())
    if names is None:
        names = available
        if not names:
            raise InputError(f"--davis {root}: no clip folders in {frames_dir}")
    clips = []
    for name in names:
        if name not in available:
            raise InputError(f"clip {name!r} not found in {frames_dir} (available: {', '.join(available) or 'none'})")
        clips.append(_clip(name, frames_dir / name, masks_dir / name))
    return clips


def _clip(name: str, frames_dir: Path, masks_dir: Path) -> Clip:
    frames = tuple(sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")))
    if not frames:
        raise InputError(f"clip {name!r}: no frames in {frames_dir}")
    if not masks_dir.is_dir():
        raise InputError(f"clip {name!r}: no annotation folder {masks_dir}")
    masks = tuple(sorted(masks_dir.glob("*.png")))
    if len(masks) != len(frames):
        raise InputError(f"clip {name!r}: {len(frames)} frames in {frames_dir} but {len(masks)} masks in "
                         f"{masks_dir} (every frame needs its mask)")
    for frame, mask in zip(frames, masks):
        if frame.stem != mask.stem:
            raise InputError(f"clip {name!r}: frame {frame.name} has no mask {frame.stem}.png in {masks_dir}")
    if len(frames) < 3:
        raise InputError(f"clip {name!r}: {len(frames)} frames; the protocol needs at least 3 "
                         f"(the first is given, the last is not scored)")
    return Clip(name, frames, masks)


def read_mask(path: str | Path) -> np.ndarray:
    """A DAVIS mask as uint8 labels (H, W): 0 background, 1..K objects, 255 void.

    Palette PNGs (DAVIS-2017) hold object ids. A greyscale PNG whose values
    are only 0 and 255 is a DAVIS-2016 binary mask (255 -> object 1); other
    greyscale PNGs hold ids like palette ones.
    """
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading DAVIS masks needs Pillow: pip install 'motionprop[transfer]'") from None
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ("P", "L", "1"):
                raise InputError(f"{path}: mask mode {mode} not supported (DAVIS masks are palette or greyscale PNGs)")
            labels = np.array(image.convert("L") if mode == "1" else image, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read mask ({exc})") from None
    if mode != "P":
        values = np.unique(labels)
        if np.isin(values, (0, 255)).all():
            labels = (labels == 255).astype(np.uint8)
    return labels


def read_masks(clip: Clip) -> np.ndarray:
    """All masks of a clip, (T, H, W) uint8 labels; masks of different sizes are an error."""
    masks = [read_mask(p) for p in clip.masks]
    shape = masks[0].shape
    for path, mask in zip(clip.masks, masks):
        if mask.shape != shape:
            raise InputError(f"clip {clip.name!r}: {path} is {mask.shape[1]}x{mask.shape[0]}, "
                             f"the first mask {shape[1]}x{shape[0]}")
    return np.stack(masks)


def foreground(labels: np.ndarray) -> np.ndarray:
    """Union of all objects (any id but background and void) as 0/1 labels, void kept as 255."""
    fg = ((labels != 0) & (labels != VOID_LABEL)).astype(np.uint8)
    fg[labels == VOID_LABEL] = VOID_LABEL
    return fg
