"""User guidance (arrows and still points) and its JSON file, shared by the command line and the web app.

Coordinates are in pixels of the image the guidance was drawn on: ``x`` to the
right, ``y`` down, pixel centres at integers, so the top-left pixel is
``(0, 0)`` and the bottom-right one ``(W - 1, H - 1)``. An arrow ``(x, y, dx,
dy)`` says "the pixel at (x, y) moves by (dx, dy)"; a still point is an arrow
of length zero ("this pixel does not move").

The file (``docs/apps.md`` documents it for other programs)::

    {
      "format": "motionprop.guidance",
      "version": 1,
      "image": "0.jpg",
      "image_size": {"width": 1920, "height": 1080},
      "arrows": [{"x": 900, "y": 500, "dx": 40, "dy": -10}],
      "still_points": [{"x": 300, "y": 800}]
    }

``image`` (a name, for people) is optional. When the file is replayed on an
image of another size, points and vectors are scaled to it
(:meth:`Guidance.resized`), so a scene drawn on a preview replays on the
full-resolution image.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path

FORMAT_NAME = "motionprop.guidance"
FORMAT_VERSION = 1


def _as_rows(values: Any, width: int, what: str) -> np.ndarray:
    """(N, width) float64 from a sequence of rows; an empty input gives (0, width)."""
    array = np.asarray(values if len(values) else np.zeros((0, width)), dtype=np.float64)
    if array.ndim == 1 and array.size == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise InputError(f"{what} must be a list of {width}-number rows, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{what} contain a non-finite number")
    return array


@dataclass
class Guidance:
    """Arrows ``(N, 4)`` = x, y, dx, dy and still points ``(M, 2)`` = x, y, in pixels of an image."""

    arrows: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    still_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def __post_init__(self) -> None:
        self.arrows = _as_rows(self.arrows, 4, "arrows")
        self.still_points = _as_rows(self.still_points, 2, "still points")

    @classmethod
    def of(cls, value: "Guidance | tuple[Any, Any]") -> "Guidance":
        """A :class:`Guidance` from itself or an ``(arrows, still_points)`` pair."""
        if isinstance(value, Guidance):
            return value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(value[0], value[1])
        raise InputError("a guidance set must be a Guidance or an (arrows, still_points) pair")

    def __len__(self) -> int:
        return len(self.arrows) + len(self.still_points)

    def points(self) -> np.ndarray:
        """(N + M, 2) positions of every arrow start and still point."""
        return np.concatenate([self.arrows[:, :2], self.still_points])

    def check_inside(self, width: int, height: int, source: str = "") -> None:
        """Raise :class:`InputError` naming the first point outside a ``width`` x ``height`` image."""
        where = f"{source}: " if source else ""
        for kind, rows in (("arrow", self.arrows), ("still point", self.still_points)):
            for row in rows:
                x, y = row[:2]
                if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                    shown = ",".join(f"{v:g}" for v in row)
                    raise InputError(f"{where}{kind} {shown} starts outside the {width}x{height} image "
                                     f"(x must be in 0..{width - 1}, y in 0..{height - 1})")

    def resized(self, from_size: tuple[int, int], to_size: tuple[int, int]) -> "Guidance":
        """The same guidance on the image resized from ``(width, height)`` to ``(width, height)``."""
        sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
        arrows = self.arrows.copy()
        arrows[:, 0] = (arrows[:, 0] + 0.5) * sx - 0.5
        arrows[:, 1] = (arrows[:, 1] + 0.5) * sy - 0.5
        arrows[:, 2] *= sx
        arrows[:, 3] *= sy
        still = self.still_points.copy()
        still[:, 0] = (still[:, 0] + 0.5) * sx - 0.5
        still[:, 1] = (still[:, 1] + 0.5) * sy - 0.5
        return Guidance(arrows, still)

    def merged(self, other: "Guidance") -> "Guidance":
        return Guidance(np.concatenate([self.arrows, other.arrows]),
                        np.concatenate([self.still_points, other.still_points]))


# --------------------------------------------------------------------------- command-line values


def parse_numbers(text: str, count: int, option: str) -> tuple[float, ...]:
    """``"x,y,dx,dy"`` -> floats; a wrong count or a non-number is an error naming the option."""
    names = {2: "x,y", 4: "x,y,dx,dy"}.get(count, ",".join(["n"] * count))
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} {text!r}: expected {count} numbers {names}")
    return values


def guidance_from_args(arrows: Iterable[str] = (), still_points: Iterable[str] = ()) -> Guidance:
    """A :class:`Guidance` from ``--arrow x,y,dx,dy`` and ``--still x,y`` strings."""
    return Guidance([parse_numbers(a, 4, "--arrow") for a in arrows],
                    [parse_numbers(s, 2, "--still") for s in still_points])


# --------------------------------------------------------------------------- the JSON file


def guidance_to_dict(guidance: Guidance, image_size: tuple[int, int], image_name: str | None = None
                     ) -> dict[str, Any]:
    """The JSON object of the guidance file; ``image_size`` is ``(width, height)``."""
    out: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
    if image_name:
        out["image"] = image_name
    out["image_size"] = {"width": int(image_size[0]), "height": int(image_size[1])}
    out["arrows"] = [{"x": _num(x), "y": _num(y), "dx": _num(dx), "dy": _num(dy)}
                     for x, y, dx, dy in guidance.arrows.tolist()]
    out["still_points"] = [{"x": _num(x), "y": _num(y)} for x, y in guidance.still_points.tolist()]
    return out


def _num(value: float) -> float | int:
    """Integers stay integers in the file; other values keep 3 decimals (1/1000 px)."""
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded


def _points(raw: Any, keys: tuple[str, ...], what: str, source: str) -> list[list[float]]:
    if not isinstance(raw, list):
        raise InputError(f"{source}: '{what}' must be a list")
    rows = []
    for k, item in enumerate(raw):
        if not isinstance(item, dict) or any(key not in item for key in keys):
            raise InputError(f"{source}: {what}[{k}] must be an object with keys {', '.join(keys)}")
        try:
            row = [float(item[key]) for key in keys]
        except (TypeError, ValueError):
            raise InputError(f"{source}: {what}[{k}] has a value that is not a number") from None
        if not all(math.isfinite(v) for v in row):
            raise InputError(f"{source}: {what}[{k}] has a non-finite value")
        rows.append(row)
    return rows


def guidance_from_dict(raw: Any, source: str = "guidance") -> tuple[Guidance, tuple[int, int], str | None]:
    """Parse the JSON object of a guidance file -> (guidance, (width, height), image name)."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: a guidance file holds one JSON object")
    if raw.get("format") != FORMAT_NAME:
        raise InputError(f"{source}: not a guidance file ('format' must be {FORMAT_NAME!r})")
    version = raw.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise InputError(f"{source}: unsupported guidance file version {version!r} (this motionprop reads "
                         f"version {FORMAT_VERSION})")
    size = raw.get("image_size")
    if (not isinstance(size, dict) or not all(isinstance(size.get(k), int) and size[k] > 0
                                              for k in ("width", "height"))):
        raise InputError(f"{source}: 'image_size' must be {{\"width\": W, \"height\": H}} with positive integers")
    arrows = _points(raw.get("arrows", []), ("x", "y", "dx", "dy"), "arrows", source)
    still = _points(raw.get("still_points", []), ("x", "y"), "still_points", source)
    image_name = raw.get("image")
    guidance = Guidance(arrows, still)
    width, height = size["width"], size["height"]
    guidance.check_inside(width, height, source)
    return guidance, (width, height), image_name if isinstance(image_name, str) else None


def read_guidance(path: str | os.PathLike, image_size: tuple[int, int] | None = None
                  ) -> tuple[Guidance, tuple[int, int], str | None]:
    """Read a guidance file -> (guidance, (width, height) it was drawn at, image name).

    With ``image_size`` (``(width, height)`` of the image it is replayed on),
    the guidance is scaled to that size and that size is returned.
    """
    from ..fileio import read_json

    path = Path(path)
    raw = read_json(path, "guidance file")
    guidance, size, name = guidance_from_dict(raw, str(path))
    if image_size is not None and tuple(image_size) != size:
        guidance, size = guidance.resized(size, image_size), (int(image_size[0]), int(image_size[1]))
    return guidance, size, name


def format_json(raw: dict[str, Any]) -> str:
    """The guidance object as JSON text with one line per key, arrow and still point."""
    lines = []
    for key, value in raw.items():
        if isinstance(value, list):
            items = ",\n".join(f"  {json.dumps(item)}" for item in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]" if value else f" {json.dumps(key)}: []")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_guidance(path: str | os.PathLike, guidance: Guidance, image_size: tuple[int, int],
                   image_name: str | None = None) -> Path:
    """Write a guidance file (atomically); ``image_size`` is ``(width, height)``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(format_json(guidance_to_dict(guidance, image_size, image_name)))
    return path
