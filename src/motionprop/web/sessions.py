"""The web app's state: one network, per-session encoded images, and one lock around every inference.

:class:`Sessions` is the only object the routes talk to (as sam2's demo keeps
its sessions and its lock in one predictor class beside the routes). Each
upload becomes a :class:`Session` with its own :class:`~motionprop.Propagator`
(the image encoded once); sessions are kept in least-recently-used order, at
most ``max_sessions`` of them, and dropped after ``timeout`` seconds unused.
Every call into the network holds :attr:`Sessions.lock`, so at most one
inference runs at a time whatever the number of pages; the routes call these
methods from a worker thread, never on the event loop. Rendering animation
frames needs no network and runs outside the lock.

Nothing here imports a web framework: the methods take and return plain
Python objects and raise :class:`~motionprop.errors.InputError` (a 4xx) or
:class:`SessionNotFound` (a 404).
"""

from __future__ import annotations

import secrets
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..apps.annotate import DEFAULT_VELOCITY, Annotation, annotate
from ..apps.guidance_file import Guidance, guidance_from_dict
from ..apps.propagate import Propagator, has_dominant_motion
from ..errors import InputError, MotionpropError
from .images import UploadLimits, decode_upload

MAX_POINTS = 256  # arrows + still points of one query; annotation clicks of one object
MAX_OBJECTS = 64  # objects of one annotation export
MAX_FRAMES = 120
ANNOTATION_CACHE = 32  # scores kept per session, by clicks


class SessionNotFound(MotionpropError, KeyError):
    """The session id is unknown or has expired (upload the image again)."""

    def __str__(self) -> str:  # KeyError's str() quotes its message
        return str(self.args[0]) if self.args else "session not found"


class Cancelled(Exception):
    """An animation job was cancelled by its page."""


@dataclass
class AnimationJob:
    """One animation being rendered in a worker thread: progress, cancel flag, result bytes."""

    id: str
    total: int
    fmt: str
    done: int = 0
    state: str = "running"  # running, done, cancelled, failed
    error: str | None = None
    result: bytes | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Session:
    """One uploaded image: its propagator (image encoded), name, size, cached annotation scores, jobs."""

    id: str
    propagator: Propagator
    name: str
    last_used: float
    annotations: "OrderedDict[tuple, Annotation]" = field(default_factory=OrderedDict)
    jobs: dict[str, AnimationJob] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        h, w = self.propagator.image_size
        return w, h

    @property
    def image(self) -> np.ndarray:
        return self.propagator.image


class Sessions:
    """Sessions (LRU, time-out) around one shared network, with one lock that serializes inference."""

    def __init__(self, model: Any, *, working_size: int | tuple[int, int] | None = None, max_sessions: int = 8,
                 timeout: float = 3600.0, limits: UploadLimits = UploadLimits(), max_points: int = MAX_POINTS,
                 clock: Callable[[], float] = time.monotonic, precision: str = "fp32"):
        if max_sessions < 1:
            raise InputError(f"max sessions must be at least 1, got {max_sessions}")
        self.model = model.eval()
        self.working_size = working_size
        self.max_sessions = max_sessions
        self.timeout = timeout
        self.limits = limits
        self.max_points = max_points
        self.clock = clock
        self.precision = precision
        self.lock = threading.Lock()  # one inference at a time
        self._table = threading.Lock()  # guards _sessions (held briefly, never during inference)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        # checks the working size and the precision now, not at the first upload
        Propagator(model, working_size, channels_last=True, precision=precision)

    # ----------------------------------------------------------------- the table

    def __len__(self) -> int:
        with self._table:
            return len(self._sessions)

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if now - s.last_used > self.timeout]:
            self._drop(sid)

    def _drop(self, sid: str) -> None:
        session = self._sessions.pop(sid)
        for job in session.jobs.values():
            job.cancel.set()

    def get(self, sid: str) -> Session:
        """The session ``sid`` (now the most recently used); :class:`SessionNotFound` if unknown or expired."""
        with self._table:
            now = self.clock()
            self._expire(now)
            session = self._sessions.get(sid)
            if session is None:
                raise SessionNotFound("unknown or expired session: upload the image again")
            session.last_used = now
            self._sessions.move_to_end(sid)
            return session

    def create(self, data: bytes, name: str = "image") -> Session:
        """Decode an upload (checked), encode it once under the lock, and add it as the newest session."""
        rgb = decode_upload(data, self.limits)
        propagator = Propagator(self.model, self.working_size, channels_last=True, precision=self.precision)
        with self.lock:
            propagator.set_image(rgb)
        session = Session(secrets.token_urlsafe(16), propagator, _safe_name(name), self.clock())
        with self._table:
            self._expire(session.last_used)
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._drop(next(iter(self._sessions)))
        return session

    def delete(self, sid: str) -> None:
        with self._table:
            if sid in self._sessions:
                self._drop(sid)

    # ----------------------------------------------------------------- checks

    def guidance(self, session: Session, raw: Any) -> Guidance:
        """A guidance object (the guidance file's JSON) checked and scaled to the session's image."""
        guidance, size, _ = guidance_from_dict(raw, "guidance")
        if len(guidance) == 0:
            raise InputError("guidance: give at least one arrow or still point")
        if len(guidance) > self.max_points:
            raise InputError(f"guidance: {len(guidance)} points; the limit is {self.max_points}")
        if size != session.size:
            guidance = guidance.resized(size, session.size)
        width, height = session.size
        too_long = (np.abs(guidance.arrows[:, 2]) > width) | (np.abs(guidance.arrows[:, 3]) > height)
        if too_long.any():
            raise InputError(f"guidance: an arrow is longer than the {width}x{height} image")
        return guidance

    def clicks(self, session: Session, raw: Any, what: str) -> np.ndarray:
        """(N, 2) clicks from ``[[x, y], ...]`` inside the session's image."""
        if raw is None:
            raw = []
        if not isinstance(raw, list) or len(raw) > self.max_points:
            raise InputError(f"{what}: expected a list of at most {self.max_points} [x, y] points")
        rows = []
        for k, item in enumerate(raw):
            if not (isinstance(item, list) and len(item) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)):
                raise InputError(f"{what}[{k}] must be [x, y] (numbers)")
            rows.append([float(item[0]), float(item[1])])
        points = np.asarray(rows, np.float64).reshape(-1, 2)
        if not np.isfinite(points).all():
            raise InputError(f"{what}: a click is not a finite number")
        Guidance(np.zeros((0, 4)), points).check_inside(*session.size, what)
        return points

    # ----------------------------------------------------------------- inference

    def flow(self, session: Session, guidance: Guidance, confidence: bool = False, dominant_motion: bool = False
             ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
        """Flow (H, W, 2) of the session's image [, confidence (H, W)] and the warnings it raised.

        ``dominant_motion``: with a network trained with the dominant-motion prior
        (:attr:`has_dominant_motion`), pixels far from every arrow move with the
        image's dominant motion (``Propagator.propagate_batch(..., dominant_motion=)``).
        """
        if confidence and getattr(self.model, "bins", None) is None:
            raise InputError("confidence needs a discrete (bin) network; this one regresses flow")
        with self.lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = session.propagator.propagate(guidance.arrows, guidance.still_points,
                                                  return_confidence=confidence, dominant_motion=bool(dominant_motion))
        flow, conf = result if confidence else (result, None)
        return flow, conf, [str(w.message) for w in caught]

    @property
    def has_dominant_motion(self) -> bool:
        """Whether the network was trained with the dominant-motion prior (``model.geodesic_prior_distance``)."""
        return has_dominant_motion(self.model)

    def annotation(self, session: Session, positive: np.ndarray, negative: np.ndarray,
                   velocity: float = DEFAULT_VELOCITY, zoom: float | None = None) -> Annotation:
        """The object's score under the clicks (cached per session by clicks; threshold applied by callers)."""
        if len(positive) == 0:
            raise InputError("annotation needs at least one positive click")
        key = (positive.tobytes(), negative.tobytes(), float(velocity), zoom)
        with self._table:
            cached = session.annotations.get(key)
            if cached is not None:
                session.annotations.move_to_end(key)
                return cached
        with self.lock:
            result = annotate(session.propagator, positive, negative, velocity=velocity, zoom=zoom)
        self._remember(session, key, result)
        return result

    def object_mask(self, session: Session, positive: np.ndarray, negative: np.ndarray, threshold: float,
                    refine: str = "none", velocity: float = DEFAULT_VELOCITY, zoom: float | None = None) -> Annotation:
        """The object's mask at ``threshold``, snapped to the image's colours when ``refine`` is "grabcut".

        The motion score comes from :meth:`annotation` (cached); a refined mask is cached too, by clicks
        and threshold, since GrabCut takes seconds on a CPU.
        """
        from ..apps.refine import check_method, refine_mask

        check_method(refine)
        scored = self.annotation(session, positive, negative, velocity, zoom)
        mask = scored.score > threshold
        if refine == "none":
            return Annotation(mask, scored.score, scored.zoom_box)
        key = (positive.tobytes(), negative.tobytes(), float(velocity), zoom, refine, float(threshold))
        with self._table:
            cached = session.annotations.get(key)
            if cached is not None:
                session.annotations.move_to_end(key)
                return cached
        refined = Annotation(refine_mask(session.image, scored.score, mask, positive, negative),
                             scored.score, scored.zoom_box)
        self._remember(session, key, refined)
        return refined

    def _remember(self, session: Session, key: tuple, result: Annotation) -> None:
        with self._table:
            session.annotations[key] = result
            while len(session.annotations) > ANNOTATION_CACHE:
                session.annotations.popitem(last=False)

    # ----------------------------------------------------------------- animation

    def start_animation(self, session: Session, guidance: Guidance, num_frames: int, mode: str, fps: float,
                        fmt: str, max_side: int | None, dominant_motion: bool = False) -> AnimationJob:
        """Start rendering a clip in a thread: the flow under the lock, the frames and encoding outside it."""
        from ..apps.animate import flow_scales

        if fmt not in ("gif", "mp4"):
            raise InputError(f"format must be gif or mp4, got {fmt!r}")
        if not 2 <= num_frames <= MAX_FRAMES:
            raise InputError(f"frames must be in 2..{MAX_FRAMES}, got {num_frames}")
        if not 0 < fps <= 60:
            raise InputError(f"fps must be in (0, 60], got {fps}")
        if max_side is not None and not 16 <= max_side <= 4096:
            raise InputError(f"max_side must be in 16..4096, got {max_side}")
        flow_scales(num_frames, mode)
        if fmt == "mp4":
            from ..apps.animate import check_writer

            check_writer("clip.mp4")
        if any(job.state == "running" for job in session.jobs.values()):
            raise InputError("an animation of this image is already being rendered: wait or cancel it")
        job = AnimationJob(secrets.token_urlsafe(8), num_frames, fmt)
        session.jobs = {k: j for k, j in session.jobs.items() if j.state == "running"}  # keep memory bounded
        session.jobs[job.id] = job
        worker = threading.Thread(target=self._render,
                                  args=(session, job, guidance, mode, fps, max_side, dominant_motion),
                                  name=f"animate-{job.id}", daemon=True)
        worker.start()
        return job

    def _render(self, session: Session, job: AnimationJob, guidance: Guidance, mode: str, fps: float,
                max_side: int | None, dominant_motion: bool = False) -> None:
        import tempfile
        from pathlib import Path

        from ..apps.animate import render_frames, shrink, write_animation

        def on_frame(done: int, total: int) -> None:
            job.done = done
            if job.cancel.is_set():
                raise Cancelled()

        try:
            flow, _, _ = self.flow(session, guidance, dominant_motion=dominant_motion)
            image = session.image
            if max_side is not None:
                image, flow = shrink(image, flow, max_side)
            frames = render_frames(image, flow, job.total, mode, on_frame=on_frame)
            with tempfile.TemporaryDirectory(prefix="motionprop-app-") as tmp:
                out = Path(tmp) / f"clip.{job.fmt}"
                write_animation(out, frames, fps)
                job.result = out.read_bytes()
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except Exception as exc:  # reported to the page; the server keeps serving
            job.state, job.error = "failed", str(exc) or type(exc).__name__

    def job(self, session: Session, job_id: str) -> AnimationJob:
        job = session.jobs.get(job_id)
        if job is None:
            raise SessionNotFound("unknown animation job")
        return job


def _safe_name(name: str) -> str:
    """A file name for people (shown, written into exports), never used as a path."""
    name = "".join(c for c in str(name) if c.isprintable() and c not in '/\\"<>:|?*')[-120:].strip()
    return name or "image"
