"""Read and write optical flow files.

Flow is a float32 numpy array ``(H, W, 2)`` in pixels; channel 0 is x (right),
channel 1 is y (down). The format follows the file name's extension:

* ``.flo``: Middlebury (float32 magic 202021.25, int32 width, int32 height,
  then ``H x W x 2`` float32, little-endian). Exact.
* ``.png``: KITTI 16-bit RGB PNG, ``u = (R - 2**15) / 64``, ``v = (G - 2**15) / 64``,
  B = 1 where the flow is known. Quantized to 1/64 px, range about +-512 px.
* ``.npy`` / ``.npz`` (array under the key ``"flow"``). Exact.
* The original CMP release stores one flow as two grayscale JPEGs, one per
  component, ``value = (flow + 50) / 100 * 255``: use :func:`read_flow_jpg` and
  :func:`write_flow_jpg`. Lossy, range +-50 px.

Unknown flow. :func:`read_flow` returns NaN in both channels of every pixel whose
flow is unknown (a ``.flo`` component above 1e9 in magnitude, the KITTI valid
channel at 0, a non-finite value in a numpy file), so unknown motion can never be
mistaken for real motion. :func:`read_flow_with_valid` returns zero there instead,
with a boolean mask, which is what a training loss wants. Writers store NaN (or
``valid=False``) with the format's own marker; the JPEG pair has none and stores 0.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import FlowFileError, InputError
from ..fileio import atomic_path

FLO_MAGIC = 202021.25
FLO_UNKNOWN_THRESHOLD = 1e9  # Middlebury: a component above this means "unknown"
FLO_UNKNOWN_VALUE = 1e10  # what the Middlebury tools write for unknown flow
KITTI_OFFSET = 2**15
KITTI_SCALE = 64.0
JPG_FLOW_RANGE = 50.0  # the original release maps [-50, 50] px onto 0..255
FLOW_SUFFIXES = (".flo", ".png", ".npy", ".npz")

_FLO_HEADER_BYTES = 12
_MAX_FLO_PIXELS = 1 << 28  # a sanity bound so a corrupt header cannot ask for terabytes


def read_flow(path: str | os.PathLike) -> np.ndarray:
    """Return the flow stored in ``path`` as float32 ``(H, W, 2)``, NaN where unknown.

    The format follows the extension (``.flo``, ``.png``, ``.npy``, ``.npz``).
    Raises :class:`FlowFileError` naming the file if it is missing, truncated,
    has a wrong magic number or a wrong size.
    """
    flow, valid = read_flow_with_valid(path)
    flow[~valid] = np.nan
    return flow


def read_flow_with_valid(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(flow, valid)``: float32 ``(H, W, 2)`` with 0 where unknown, and bool ``(H, W)``.

    Same formats and errors as :func:`read_flow`.
    """
    path = Path(path)
    readers = {".flo": _read_flo, ".png": _read_kitti_png, ".npy": _read_npy, ".npz": _read_npz}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        hint = " (a JPEG pair of the original release: use read_flow_jpg)" if _is_jpeg_name(path) else ""
        raise FlowFileError(f"{path}: unsupported flow file extension {path.suffix!r}{hint}; "
                            f"expected one of {', '.join(FLOW_SUFFIXES)}")
    flow, valid = reader(path)
    flow[~valid] = 0.0
    return flow, valid


def write_flow(path: str | os.PathLike, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write ``flow`` (H, W, 2) to ``path`` atomically, in the format of its extension.

    Pixels where ``flow`` is NaN or ``valid`` is False are stored as unknown
    (``.flo``: 1e10, KITTI: valid channel 0, numpy: NaN). ``.flo`` and numpy
    files keep float32 values bit-exactly; KITTI rounds to 1/64 px.
    """
    path = Path(path)
    writers = {".flo": _flo_bytes, ".png": _kitti_png_bytes, ".npy": _npy_bytes, ".npz": _npz_bytes}
    writer = writers.get(path.suffix.lower())
    if writer is None:
        raise FlowFileError(f"{path}: unsupported flow file extension {path.suffix!r}; "
                            f"expected one of {', '.join(FLOW_SUFFIXES)}")
    flow = _checked_flow(flow, path)
    known = _known_mask(flow, valid, path)
    _write_bytes(path, writer(flow, known, path))


def read_flow_jpg(x_path: str | os.PathLike, y_path: str | os.PathLike) -> np.ndarray:
    """Return the flow stored by the original release as two grayscale JPEGs, float32 (H, W, 2).

    Decoded exactly as the original ``dataset.py`` does
    (``float32(pixel) / 255 * 100 - 50``), so values are multiples of 100/255 px
    in [-50, 50].
    """
    x_path, y_path = Path(x_path), Path(y_path)
    components = [_read_gray_jpeg(p) for p in (x_path, y_path)]
    if components[0].shape != components[1].shape:
        raise FlowFileError(f"{x_path} is {_size(components[0])} but {y_path} is {_size(components[1])}; "
                            "the two components of a flow must have the same size")
    # Same operations in the same order and precision as the original loader.
    scaled = [c.astype(np.float32) / 255 * (2 * JPG_FLOW_RANGE) - JPG_FLOW_RANGE for c in components]
    return np.stack(scaled, axis=-1)


def write_flow_jpg(x_path: str | os.PathLike, y_path: str | os.PathLike, flow: np.ndarray,
                   quality: int = 95) -> None:
    """Write ``flow`` as the original release's pair of grayscale JPEGs (x, then y).

    ``pixel = round((flow + 50) / 100 * 255)``, clipped to 0..255: flow beyond
    +-50 px is clipped, unknown (NaN) flow is stored as 0. Each file is written
    atomically (the pair as a whole is not).
    """
    x_path, y_path = Path(x_path), Path(y_path)
    if not 0 <= quality <= 100:
        raise InputError(f"{x_path}: JPEG quality must be in 0..100, got {quality}")
    flow = _checked_flow(flow, x_path)
    flow = np.where(np.isfinite(flow), flow, 0.0)
    pixels = np.rint((flow.astype(np.float64) + JPG_FLOW_RANGE) / (2 * JPG_FLOW_RANGE) * 255)
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    for channel, path in enumerate((x_path, y_path)):
        data = _encode(".jpg", np.ascontiguousarray(pixels[:, :, channel]), path,
                       [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        _write_bytes(path, data)


# ---------------------------------------------------------------- readers


def _read_flo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a Middlebury .flo file into (flow, known)."""
    data = _read_bytes(path)
    if len(data) < _FLO_HEADER_BYTES:
        raise FlowFileError(f"{path}: truncated .flo file ({len(data)} bytes, the header alone is 12)")
    magic = float(np.frombuffer(data, "<f4", count=1)[0])
    if magic != FLO_MAGIC:
        raise FlowFileError(f"{path}: not a Middlebury .flo file (magic number {magic!r}, "
                            f"expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(data, "<i4", count=2, offset=4))
    if width < 1 or height < 1 or width * height > _MAX_FLO_PIXELS:
        raise FlowFileError(f"{path}: implausible .flo size {width}x{height} in the header")
    expected = _FLO_HEADER_BYTES + 8 * width * height
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "wrong size"
        raise FlowFileError(f"{path}: {problem}: {len(data)} bytes, expected {expected} "
                            f"for a {width}x{height} flow")
    flow = np.frombuffer(data, "<f4", offset=_FLO_HEADER_BYTES).reshape(height, width, 2)
    flow = flow.astype(np.float32)  # native byte order, writable copy
    with np.errstate(invalid="ignore"):
        known = np.all(np.abs(flow) <= FLO_UNKNOWN_THRESHOLD, axis=-1)  # False for NaN too
    return flow, known


def _read_kitti_png(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a KITTI 16-bit flow PNG into (flow, known)."""
    image = _decode(path, _read_bytes(path))
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise FlowFileError(f"{path}: not a KITTI flow PNG (expected 16-bit, 3 channels; "
                            f"got {image.dtype}, shape {image.shape})")
    # OpenCV gives BGR: B = valid, G = v, R = u.
    flow = (image[:, :, [2, 1]].astype(np.float32) - KITTI_OFFSET) / KITTI_SCALE
    return flow, image[:, :, 0] > 0


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a ``.npy`` flow; non-finite values mark unknown flow."""
    _require_file(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FlowFileError(f"{path}: cannot be read as a .npy array ({exc})") from exc
    return _numpy_flow(array, None, path)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load the ``"flow"`` array of a ``.npz`` (and its optional ``"valid"`` mask)."""
    _require_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = archive.files
            array = archive["flow"] if "flow" in names else None
            valid = archive["valid"] if "valid" in names else None
    except Exception as exc:  # BadZipFile, zlib.error, ValueError, EOFError on damaged archives
        raise FlowFileError(f"{path}: cannot be read as a .npz archive ({exc})") from exc
    if array is None:
        raise FlowFileError(f"{path}: no array named 'flow' (found: {', '.join(names) or 'none'})")
    return _numpy_flow(array, valid, path)


def _numpy_flow(array: np.ndarray, valid: np.ndarray | None, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check a loaded array is (H, W, 2) numeric; return it as float32 with its known mask."""
    if array.ndim != 3 or array.shape[2] != 2 or min(array.shape) < 1:
        raise FlowFileError(f"{path}: flow must have shape (H, W, 2), got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FlowFileError(f"{path}: flow must be numeric, got dtype {array.dtype}")
    flow = np.array(array, dtype=np.float32)  # always a writable copy
    known = np.all(np.isfinite(flow), axis=-1)
    if valid is not None:
        if valid.shape != known.shape:
            raise FlowFileError(f"{path}: 'valid' has shape {valid.shape}, expected {known.shape}")
        known &= valid.astype(bool)
    return flow, known


def _read_gray_jpeg(path: Path) -> np.ndarray:
    """Decode one component JPEG of the original release into uint8 (H, W)."""
    data = _read_bytes(path)
    # libjpeg pads a truncated stream with grey and only warns; refuse it instead.
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise FlowFileError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = _decode(path, data)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise FlowFileError(f"{path}: a flow component must be an 8-bit grayscale JPEG, "
                            f"got {image.dtype} with shape {image.shape}")
    return image


# ---------------------------------------------------------------- writers


def _flo_bytes(flow: np.ndarray, known: np.ndarray, path: Path) -> bytes:
    """Encode a Middlebury .flo file."""
    height, width = flow.shape[:2]
    values = np.where(known[:, :, None], flow, np.float32(FLO_UNKNOWN_VALUE)).astype("<f4")
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    return header + values.tobytes()


def _kitti_png_bytes(flow: np.ndarray, known: np.ndarray, path: Path) -> bytes:
    """Encode a KITTI 16-bit PNG; unknown pixels are all zero, as the KITTI devkit writes them."""
    # float64: in float32 the offset 2**15 would eat the bits that decide the rounding.
    raw = np.rint(np.where(known[:, :, None], flow, 0.0).astype(np.float64) * KITTI_SCALE + KITTI_OFFSET)
    if raw.size and (raw.min() < 0 or raw.max() > 65535):
        largest = float(np.abs(np.where(known[:, :, None], flow, 0.0)).max())
        raise FlowFileError(f"{path}: flow up to {largest:.1f} px does not fit a KITTI PNG (-512 .. 511.98 px); "
                            "write .flo, .npy or .npz instead")
    raw = raw.astype(np.uint16)
    image = np.stack([known.astype(np.uint16), raw[:, :, 1], raw[:, :, 0]], axis=-1)  # BGR
    image[~known] = 0
    return _encode(".png", image, path)


def _npy_bytes(flow: np.ndarray, known: np.ndarray, path: Path) -> bytes:
    """Encode a ``.npy`` file, NaN where unknown."""
    buffer = io.BytesIO()
    np.save(buffer, _nan_where_unknown(flow, known), allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(flow: np.ndarray, known: np.ndarray, path: Path) -> bytes:
    """Encode a ``.npz`` archive holding ``"flow"``, NaN where unknown."""
    buffer = io.BytesIO()
    np.savez(buffer, flow=_nan_where_unknown(flow, known))
    return buffer.getvalue()


# ---------------------------------------------------------------- helpers


def _checked_flow(flow: np.ndarray, path: Path) -> np.ndarray:
    """Return ``flow`` as float32 (H, W, 2), or raise InputError naming the target file."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or min(flow.shape) < 1:
        raise InputError(f"{path}: flow to write must have shape (H, W, 2), got {flow.shape}")
    if not (np.issubdtype(flow.dtype, np.floating) or np.issubdtype(flow.dtype, np.integer)):
        raise InputError(f"{path}: flow to write must be numeric, got dtype {flow.dtype}")
    return flow.astype(np.float32, copy=False)


def _known_mask(flow: np.ndarray, valid: np.ndarray | None, path: Path) -> np.ndarray:
    """Pixels whose flow is finite and, if given, marked valid."""
    known = np.all(np.isfinite(flow), axis=-1)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != known.shape:
            raise InputError(f"{path}: valid mask has shape {valid.shape}, expected {known.shape}")
        known &= valid.astype(bool)
    return known


def _nan_where_unknown(flow: np.ndarray, known: np.ndarray) -> np.ndarray:
    """A copy of ``flow`` with NaN in both channels of unknown pixels."""
    out = np.array(flow, dtype=np.float32)
    out[~known] = np.nan
    return out


def _require_file(path: Path) -> None:
    """Raise FlowFileError if ``path`` is not an existing file."""
    if not path.is_file():
        raise FlowFileError(f"{path}: no such flow file")


def _read_bytes(path: Path) -> bytes:
    """The whole content of ``path``, or FlowFileError naming it."""
    _require_file(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FlowFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _decode(path: Path, data: bytes) -> np.ndarray:
    """Decode image bytes without any colour or orientation conversion."""
    # imdecode (not imread) so non-ASCII paths work on every platform.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise FlowFileError(f"{path}: cannot be decoded as an image (truncated or corrupt)")
    return image


def _encode(suffix: str, image: np.ndarray, path: Path, params: list[int] | None = None) -> bytes:
    """Encode an image to bytes in the format of ``suffix``."""
    ok, buffer = cv2.imencode(suffix, image, params or [])
    if not ok:
        raise FlowFileError(f"{path}: OpenCV could not encode the flow as {suffix}")
    return buffer.tobytes()


def _is_jpeg_name(path: Path) -> bool:
    """Whether ``path`` is named like a JPEG (for a hint towards read_flow_jpg)."""
    return path.suffix.lower() in (".jpg", ".jpeg")


def _size(image: np.ndarray) -> str:
    """``WxH`` of an image, for messages."""
    return f"{image.shape[1]}x{image.shape[0]}"
