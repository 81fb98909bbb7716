"""Training checkpoints: a motionprop checkpoint folder plus the state needed to resume exactly.

``RUN_DIR/checkpoints/iter_0001000/`` holds ``model.safetensors`` and
``config.yaml`` (loadable by :func:`motionprop.load_model`) and
``train_state.pt``: optimizer, grad scaler, iteration, the schedule's position
and every process's RNG states. Folders appear whole (written under a temporary
name, then renamed); only the newest ``keep_last`` are kept, and those whose
iteration is a multiple of ``keep_every`` (if > 0), to score a run along the way.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import TRAIN_STATE_FILE, WEIGHTS_FILE, load_failure, write_model_files
from ..errors import CheckpointError
from ..fileio import atomic_dir

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)$")


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders of a run, oldest first, as (iteration, path)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _NAME.match(path.name)
            if match and (path / WEIGHTS_FILE).is_file() and (path / TRAIN_STATE_FILE).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """This process's random generators (torch, CUDA, numpy, python) as tensors, numbers, lists and dicts.

    Only such plain values, so that ``torch.load(..., weights_only=True)`` reads
    them back: a checkpoint cannot make resuming run code.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(run_dir: str | Path, iteration: int, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                             rng_states: list[dict[str, Any]], keep_last: int, keep_every: int = 0) -> Path:
    """Write ``iter_N/`` atomically and prune older checkpoints beyond ``keep_last``, except those at multiples of
    ``keep_every`` (0: none); returns the folder."""
    target = Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(iteration)
    if target.exists():
        shutil.rmtree(target)
    with atomic_dir(target) as tmp:
        write_model_files(tmp, model, extra={"step": iteration})
        torch.save({
            "iteration": iteration,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "scheduler": {"last_iter": iteration - 1},
            "rng": rng_states,
        }, tmp / TRAIN_STATE_FILE)
    for step, old in list_checkpoints(run_dir)[:-keep_last]:
        if not (keep_every > 0 and step % keep_every == 0):
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_train_state(folder: str | Path) -> dict[str, Any]:
    """The resume state of a checkpoint folder (optimizer, scaler, iteration, RNG states)."""
    import pickle

    path = Path(folder) / TRAIN_STATE_FILE
    try:
        # weights_only: tensors, numbers, strings, lists and dicts only; an untrusted file cannot run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refusing a training state that holds more than plain values (not "
                              f"written by this motionprop; {load_failure(exc, path)})") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the training state ({exc})") from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise CheckpointError(f"{path}: not a motionprop training state")
    return state
