"""Off-the-shelf optical flow estimators that label video frame pairs for training.

Every estimator has one interface: ``estimator(frame1, frame2) -> flow``, with
frames uint8 RGB ``(H, W, 3)`` of the same size and flow float32 ``(H, W, 2)``
from frame 1 to frame 2, x (right) then y (down), in pixels of the frames.
:data:`ESTIMATORS` maps each name to the factory that builds one;
:func:`create_estimator` looks a name up and passes it its options.

* ``dis`` (default): OpenCV's DIS (Kroeger et al. 2016), presets ``ultrafast``,
  ``fast``, ``medium``. On MPI-Sintel final (1024x436, this machine) the
  average end-point error is 0.62/0.51/0.32 px on alley_1 (~3 px motion) and
  2.71/2.44/1.95 px on cave_2 (~15 px), at 4/6/34 ms per pair: ``medium`` is the
  default because training targets are worth 30 ms.
* ``farneback``: OpenCV's polynomial-expansion flow; slower and worse than DIS
  here (EPE 1.15 and 6.66 px on the same pairs, 70 ms), kept as a classic baseline.
* ``raft``: RAFT-large from torchvision, a learned estimator far better than
  the two on large motion, and far slower on a CPU (not measured here: torchvision
  is not installed). Needs torchvision (not a dependency) and its weights on
  disk: nothing is downloaded.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, MotionpropError

FlowEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]

DIS_PRESETS = ("ultrafast", "fast", "medium")
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=5, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
RAFT_ITERATIONS = 12


def _gray(frame: np.ndarray) -> np.ndarray:
    """uint8 grayscale of an RGB frame, what the OpenCV estimators take."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _check_pair(frame1: np.ndarray, frame2: np.ndarray) -> None:
    """Raise :class:`InputError` unless both frames are uint8 RGB of one size."""
    for frame in (frame1, frame2):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"frames must be uint8 RGB (H, W, 3), got {frame.dtype} {frame.shape}")
    if frame1.shape != frame2.shape:
        raise InputError(f"frames of a pair must have one size, got {frame1.shape[:2]} and {frame2.shape[:2]}")


def dis_estimator(preset: str = "medium") -> FlowEstimator:
    """OpenCV DIS flow with the named preset (``ultrafast``, ``fast`` or ``medium``)."""
    import cv2

    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    if preset not in presets:
        raise InputError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(presets[preset])

    def estimate(frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        _check_pair(frame1, frame2)
        return dis.calc(_gray(frame1), _gray(frame2), None).astype(np.float32, copy=False)

    return estimate


def farneback_estimator() -> FlowEstimator:
    """OpenCV Farneback flow, 5 pyramid levels so that tens of pixels of motion are reachable."""
    import cv2

    def estimate(frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        _check_pair(frame1, frame2)
        flow = cv2.calcOpticalFlowFarneback(_gray(frame1), _gray(frame2), None, **FARNEBACK_PARAMS)
        return flow.astype(np.float32, copy=False)

    return estimate


def raft_estimator(weights: str | os.PathLike | None = None, iterations: int = RAFT_ITERATIONS) -> FlowEstimator:
    """RAFT-large from torchvision, weights read from ``weights`` or torch hub's cache; never downloads.

    Raises :class:`MotionpropError` when torchvision is missing and
    :class:`InputError` when the weights file is not on disk.
    """
    import torch

    try:
        from torchvision.models.optical_flow import Raft_Large_Weights, raft_large
    except ImportError as exc:
        raise MotionpropError("the 'raft' estimator needs torchvision, which is not installed; "
                              "install the torchvision release matching your torch, or use --estimator dis") from exc
    path = Path(weights) if weights else _raft_cache_path(Raft_Large_Weights.DEFAULT.url)
    if not path.is_file():
        raise InputError(f"RAFT weights not found at {path}; download {Raft_Large_Weights.DEFAULT.url} "
                         "there (or give its path with --raft-weights)")
    model = raft_large(weights=None, progress=False)
    from ..checkpoint import read_torch_file

    model.load_state_dict(read_torch_file(path))
    model.eval()

    def estimate(frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        _check_pair(frame1, frame2)
        images = [_raft_input(torch, f) for f in (frame1, frame2)]
        with torch.inference_mode():
            flow = model(*images, num_flow_updates=iterations)[-1]  # (1, 2, H8, W8)
        height, width = frame1.shape[:2]
        return flow[0, :, :height, :width].permute(1, 2, 0).numpy().astype(np.float32)

    return estimate


def _raft_cache_path(url: str) -> Path:
    """Where torchvision keeps the weights of ``url`` once downloaded: torch hub's checkpoints folder."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _raft_input(torch, frame: np.ndarray):
    """uint8 RGB (H, W, 3) -> (1, 3, H8, W8) float in [-1, 1], edge-padded to multiples of 8 (RAFT's stride)."""
    height, width = frame.shape[:2]
    pad_h, pad_w = -height % 8, -width % 8
    padded = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    tensor = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float()
    return tensor / 127.5 - 1.0


ESTIMATORS: dict[str, Callable[..., FlowEstimator]] = {
    "dis": dis_estimator,
    "farneback": farneback_estimator,
    "raft": raft_estimator,
}


def create_estimator(name: str, **options) -> FlowEstimator:
    """The estimator ``name`` of :data:`ESTIMATORS` built with ``options`` (e.g. ``preset="fast"`` for DIS)."""
    factory = ESTIMATORS.get(name)
    if factory is None:
        raise InputError(f"unknown flow estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"flow estimator {name!r} takes no option {', '.join(unknown)} "
                         f"(its options: {', '.join(accepted) or 'none'})")
    return factory(**options)


@functools.lru_cache(maxsize=4)
def cached_estimator(name: str, options: tuple[tuple[str, object], ...] = ()) -> FlowEstimator:
    """:func:`create_estimator` built once per process (RAFT loads its weights once per worker)."""
    return create_estimator(name, **dict(options))
