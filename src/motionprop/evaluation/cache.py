"""Encoder runs of ``motionprop transfer``, kept between commands.

A run's scores depend only on the encoder's weights and layer, the data and the settings. The
default command recomputes random init's three seeds (three quarters of its time) every time a
checkpoint is scored, and a command stopped half-way lost every run it had finished.
:class:`RunCache` keeps each run in a folder under a key made of everything it depends on: the
encoder (its architecture, layer, input normalization and weights, or a random init's seed), the
settings, the frames and masks as read (their bytes), the code that computes it (the package's
``evaluation`` and ``models`` sources), torch's version, its CPU kernels and thread count, the device
(float results may differ in their last bits between those). A change to any of them is a
different key; an entry that cannot be read is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..fileio import atomic_path

if TYPE_CHECKING:
    from .benchmark import ClipData, RunOutput, TransferSettings
    from .encoders import FrozenEncoder

CACHE_ENV = "MOTIONPROP_CACHE_DIR"
FORMAT = 1
_SOURCES = ("evaluation", "models")
"""Sub-packages whose code decides a run's result (the frames and masks are hashed as read)."""


def default_cache_dir() -> Path:
    """``$MOTIONPROP_CACHE_DIR``, else ``$XDG_CACHE_HOME/motionprop``, else ``~/.cache/motionprop``; then
    ``transfer``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "motionprop")
    return Path(root).expanduser() / "transfer"


def code_digest() -> str:
    """A digest of the sources that compute a run (``motionprop/evaluation`` and ``motionprop/models``)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for folder in _SOURCES:
        for path in sorted((package / folder).glob("*.py")):
            digest.update(f"{folder}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def environment(device: torch.device) -> dict[str, object]:
    """What besides the code may change a run's floats: torch's version, CPU kernels and threads, the GPU."""
    env: dict[str, object] = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "threads": torch.get_num_threads(), "device": device.type}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of a module's parameters and buffers: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class RunCache:
    """Encoder runs on one set of clips with one set of settings, kept in ``folder``."""

    def __init__(self, folder: str | Path, data: list[ClipData], settings: TransferSettings,
                 device: torch.device = torch.device("cpu")) -> None:
        self.folder = Path(folder)
        run_settings = asdict(settings)
        for irrelevant in ("random_baseline", "random_seeds"):        # which runs are made, not what one gives
            run_settings.pop(irrelevant)
        digest = hashlib.sha256(json.dumps({"format": FORMAT, "settings": run_settings, "code": code_digest(),
                                            "environment": environment(device)}, sort_keys=True, default=str).encode())
        for item in data:
            digest.update(f"{item.clip.name}\0{item.frames.shape}\0{item.labels.shape}\0".encode())
            digest.update(item.frames.tobytes())
            digest.update(item.labels.tobytes())
        self._base = digest.hexdigest()
        self._last: tuple[FrozenEncoder, str] | None = None   # a lookup and then a store hash the weights once

    def key(self, encoder: FrozenEncoder) -> str:
        """The entry name of ``encoder``'s run: a random init is named by its seed, other encoders by their weights."""
        if self._last is not None and self._last[0] is encoder:
            return self._last[1]
        weights = None if encoder.seed is not None else weights_digest(encoder.features)
        text = json.dumps([self._base, encoder.arch, encoder.seed, encoder.layer, encoder.mean, encoder.std, weights])
        key = hashlib.sha256(text.encode()).hexdigest()[:32]
        self._last = (encoder, key)
        return key

    def get(self, encoder: FrozenEncoder) -> RunOutput | None:
        """The kept run of ``encoder``, or None if there is none; :class:`CacheEntryError` if it cannot be read."""
        from .benchmark import RunOutput

        key = self.key(encoder)
        entry, arrays = self.folder / f"{key}.json", self.folder / f"{key}.npz"
        if not entry.is_file():
            return None
        try:
            meta = json.loads(entry.read_text())
            pictures: dict[str, dict[str, dict[int, np.ndarray]]] = {}
            with np.load(arrays) as stored:
                for index, (task, clip, frame) in enumerate(meta["pictures"]):
                    pictures.setdefault(task, {}).setdefault(clip, {})[int(frame)] = stored[f"p{index}"]
            for task in meta["tasks"]:
                pictures.setdefault(task, {})
            return RunOutput(meta["tasks"], meta["seconds"], meta["cpu_seconds"], pictures)
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise CacheEntryError(f"{entry}: cannot be read ({exc}); computing the run again") from exc

    def put(self, encoder: FrozenEncoder, run: RunOutput) -> None:
        """Keep ``run``: the pictures' arrays first, then the entry that points at them (each written atomically)."""
        key = self.key(encoder)
        where = [(task, clip, int(frame)) for task, clips in run.pictures.items() for clip, frames in clips.items()
                 for frame in frames]
        with atomic_path(self.folder / f"{key}.npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **{f"p{i}": run.pictures[t][c][f] for i, (t, c, f) in enumerate(where)})
        meta = {"format": FORMAT, "arch": encoder.arch, "seed": encoder.seed, "layer": encoder.layer,
                "source": encoder.source,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "tasks": run.tasks, "seconds": run.seconds,
                "cpu_seconds": run.cpu_seconds, "pictures": where}
        with atomic_path(self.folder / f"{key}.json") as tmp:
            tmp.write_text(json.dumps(meta) + "\n")


class CacheEntryError(Exception):
    """A kept run exists but cannot be read (the caller warns and computes it again)."""
