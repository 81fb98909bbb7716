"""Training checkpoints: a motionprop checkpoint folder plus the state needed to resume exactly.

``RUN_DIR/checkpoints/iter_0001000/`` holds ``model.safetensors`` and
``config.yaml`` (loadable by :func:`motionprop.load_model`) and
``train_state.pt``: optimizer, grad scaler, iteration, the schedule's position
and every process's RNG states. Folders appear whole (written under a temporary
name, then renamed); only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import TRAIN_STATE_FILE, WEIGHTS_FILE, write_model_files
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
    """This process's random generators (torch, CUDA, numpy, python)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(run_dir: str | Path, iteration: int, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                             rng_states: list[dict[str, Any]], keep_last: int) -> Path:
    """Write ``iter_N/`` atomically and prune older checkpoints beyond ``keep_last``; returns the folder."""
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
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_train_state(folder: str | Path) -> dict[str, Any]:
    """The resume state of a checkpoint folder (optimizer, scaler, iteration, RNG states)."""
    path = Path(folder) / TRAIN_STATE_FILE
    try:
        # RNG states hold numpy arrays and python tuples: not loadable with weights_only.
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read the training state ({exc})") from None
