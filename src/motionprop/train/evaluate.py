"""Evaluate a trained network on list files: end-point error against the two non-learned baselines.

The numbers are those of training's validation (:func:`~motionprop.train.trainer.validate`):
each pair is resized and centre-cropped by the checkpoint's data config, its
guidance is sampled with the config's strategy, seeded per pair (so every run
and every network sees the same guidance), and the end-point error of the
network's flow is averaged over the known pixels, next to nearest-guidance
fill and inverse-distance interpolation of the same guidance.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..config import Config, apply_overrides, section_overrides
from ..errors import InputError


def evaluation_config(cfg: Config, lists: Sequence[str | os.PathLike], overrides: Sequence[str] = (),
                      workers: int | None = None, batch_size: int | None = None) -> Config:
    """``cfg`` set to evaluate every pair of ``lists``; ``overrides`` (``section.key=value``) applied last."""
    if not lists:
        raise InputError("give at least one list file to evaluate on")
    for path in lists:
        if not Path(path).is_file():
            raise InputError(f"list file not found: {path}")
    cfg = apply_overrides(cfg, list(overrides))
    data = replace(cfg.data, val_source=[str(p) for p in lists])
    if workers is not None:
        data = replace(data, workers=workers)
    if batch_size is not None:
        data = replace(data, batch_size_val=batch_size)
    if data.workers < 0 or data.batch_size_val < 1:
        raise InputError(f"workers must be >= 0 and the batch size >= 1, got {data.workers} and "
                         f"{data.batch_size_val}")
    return replace(cfg, data=data, train=replace(cfg.train, val_iter=-1))


def evaluate(checkpoint: str | os.PathLike, lists: Sequence[str | os.PathLike], overrides: Sequence[str] = (),
             device: str = "auto", workers: int | None = None, batch_size: int | None = None,
             config: str | os.PathLike | None = None, progress: bool = False) -> dict[str, float]:
    """EPE of the network in ``checkpoint`` on every pair of ``lists``, with the baselines' on the same guidance.

    Returns ``{"epe", "epe_nearest", "epe_idw", "loss", "samples"}``, and ``"epe_fill"`` (its fill alone) for a
    residual model. ``config``
    is only needed for an original-release file without ``config.yaml`` beside it;
    ``progress`` shows a bar on a terminal.
    """
    from ..checkpoint import load_model
    from ..losses import build_flow_loss
    from .distributed import DistInfo, pick_device
    from .trainer import build_val_loader, close_loaders, validate

    info = DistInfo(device=pick_device(device))
    model = load_model(checkpoint, config=config, device=info.device,
                       overrides=section_overrides(overrides, "model")[0])
    cfg = evaluation_config(model.config, lists, overrides, workers, batch_size)
    loader = build_val_loader(cfg, info)
    loss_fn = build_flow_loss(cfg.model, fused=cfg.train.loss_impl == "fused")
    try:
        return validate(model, model, loader, cfg, info, loss_fn, None, 0, progress=progress)
    finally:
        close_loaders(loader)
