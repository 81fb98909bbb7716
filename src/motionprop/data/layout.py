"""The on-disk layout of a training set, shared by ``motionprop synth`` and ``motionprop prepare``::

    DIR/frames/<clip>/000000.jpg ...     RGB frames (JPEG, quality 95)
    DIR/flow/<clip>/000000.flo ...       flow of the pair starting at frame 000000
                                         (.flo/.png/.npy/.npz, or 000000_x.jpg + 000000_y.jpg)
    DIR/lists/train.txt, val.txt         one pair per line: img1 img2 flow
                                         (img1 img2 flow_x flow_y for the JPEG pair)

List paths are relative to the list's own folder (``../frames/<clip>/000000.jpg``),
so a data set can be moved or copied as a whole; motionprop's dataset resolves
them against the list's folder. The original CMP code opens list paths relative
to the directory it runs in: for it, a ``prefix`` (best absolute) is written
before each path instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path, temp_prefix

FLOW_FORMATS = ("flo", "png", "npy", "npz", "jpg")
JPEG_QUALITY = 95
LIST_SPLITS = ("train", "val")


def frame_path(clip: str, index: int) -> str:
    """Frame ``index`` of ``clip``, relative to the data root."""
    return f"frames/{clip}/{index:06d}.jpg"


def flow_paths(clip: str, index: int, flow_format: str) -> list[str]:
    """Flow file(s) of the pair starting at frame ``index``, relative to the data root.

    One file, or the x and y JPEGs of the original release for ``"jpg"``.
    """
    if flow_format not in FLOW_FORMATS:
        raise InputError(f"flow format must be one of {', '.join(FLOW_FORMATS)}, got {flow_format!r}")
    if flow_format == "jpg":
        return [f"flow/{clip}/{index:06d}_x.jpg", f"flow/{clip}/{index:06d}_y.jpg"]
    return [f"flow/{clip}/{index:06d}.{flow_format}"]


def check_list_prefix(prefix: str | None) -> None:
    """Raise :class:`InputError` if ``prefix`` holds whitespace (the list format splits lines on it)."""
    if prefix is not None and any(c.isspace() for c in prefix):
        raise InputError(f"list paths may not contain whitespace (the list format splits on it): {prefix!r}")


def list_line(paths: Sequence[str], prefix: str | None = None) -> str:
    """One list line from paths relative to the data root.

    Without ``prefix`` each path is written relative to ``DIR/lists/`` (``../frames/...``);
    with one, as ``<prefix>/frames/...``.
    """
    for path in paths:
        if any(c.isspace() for c in path):
            raise InputError(f"list paths may not contain whitespace (the list format splits on it): {path!r}")
    head = "../" if prefix is None else (prefix.rstrip("/") + "/" if prefix else "")
    return " ".join(head + path for path in paths)


def write_image(path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode ``image`` (BGR or gray, as OpenCV) by the extension of ``path`` and write it atomically."""
    import cv2

    path = Path(path)
    ok, buffer = cv2.imencode(path.suffix, np.ascontiguousarray(image), list(params))
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.tobytes())


def write_frame(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB frame ``(H, W, 3)`` uint8 as a JPEG of the layout's quality, atomically."""
    import cv2

    write_image(path, rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def write_flow_files(root: str | os.PathLike, relative_paths: Sequence[str], flow: np.ndarray) -> None:
    """Write ``flow`` (H, W, 2) to the file(s) :func:`flow_paths` named, each atomically."""
    from .flow_io import write_flow, write_flow_jpg

    paths = [Path(root) / p for p in relative_paths]
    if len(paths) == 2:
        write_flow_jpg(paths[0], paths[1], flow)
    else:
        write_flow(paths[0], flow)


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Atomically write ``text`` unless ``path`` already holds it; True if written."""
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def write_text_once(path: str | os.PathLike, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists, and never replace it; True if this call created it.

    For a file that concurrent processes (shards on shared storage) all want to
    write and read: it is written under a temporary name, then hard-linked to
    ``path``, which fails, atomically (also on NFS), if another process was first.
    Where hard links are not supported, ``path`` is created exclusively and written.
    """
    import tempfile

    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FUSE file systems)
            try:
                with open(path, "x") as file:
                    file.write(text)
            except FileExistsError:
                return False
        return True
    finally:
        os.unlink(tmp)


def write_lists(root: str | os.PathLike, lines: dict[str, list[str]]) -> dict[str, Path]:
    """Write ``DIR/lists/train.txt`` and ``val.txt`` (each may be empty); return their paths."""
    paths = {split: Path(root) / "lists" / f"{split}.txt" for split in LIST_SPLITS}
    for split in LIST_SPLITS:
        write_text_if_changed(paths[split], "".join(line + "\n" for line in lines.get(split, [])))
    return paths


def check_output_folder(root: str | os.PathLike, meta_name: str, config: dict, what: str,
                        resumable: Sequence[str] = (), added: dict | None = None) -> None:
    """Refuse an output folder holding anything but an earlier run of the same kind and parameters.

    ``meta_name`` is the run's record (``synth.json``, ``prepare.json``) with the
    parameters under ``"config"``; those in ``resumable`` may change between runs.
    ``added`` maps parameters added after some folders were written to the value
    such a folder, whose record lacks them, was made with.
    An empty or missing folder is fine, and so is one holding only temporary
    files of ``meta_name`` (another process about to write it: a concurrent shard).
    """
    import json

    root = Path(root)
    meta_path = root / meta_name
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a folder")
    if not meta_path.is_file():
        if root.is_dir() and any(not p.name.startswith(f".{meta_name}.") for p in root.iterdir()):
            raise InputError(f"{root} exists, is not empty and holds no {meta_name}; "
                             "choose a new or empty output folder")
        return
    try:
        previous = json.loads(meta_path.read_text())["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{meta_path} is unreadable ({exc}); delete it or choose another output folder") from exc
    before = {**(added or {}), **previous}
    changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in config.items()
               if k not in resumable and before.get(k) != v]
    if changed:
        raise InputError(f"{root} holds {what} made with other parameters ({'; '.join(changed)}); "
                         "use the same ones to resume, or choose another output folder")
