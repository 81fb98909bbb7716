"""The learning rate as a pure function of the iteration (so resuming needs no scheduler state)."""

from __future__ import annotations

from bisect import bisect_right

from ..config import TrainConfig


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Learning rate at iteration ``step`` (0-based), following the original's StepLRScheduler.

    Warm-up, if any, goes linearly from ``lr`` through ``warmup_lr[i]`` at
    ``warmup_steps[i]``; afterwards the last warm-up rate (or ``lr``) is
    multiplied by every ``lr_mults[j]`` whose ``lr_steps[j]`` has been reached.
    """
    warm_lr, warm_steps = cfg.warmup_lr, cfg.warmup_steps
    pos = bisect_right(warm_steps, step)
    if pos < len(warm_steps):
        start_lr = cfg.lr if pos == 0 else warm_lr[pos - 1]
        start_step = 0 if pos == 0 else warm_steps[pos - 1]
        frac = (step - start_step) / (warm_steps[pos] - start_step)
        return start_lr + frac * (warm_lr[pos] - start_lr)
    lr = warm_lr[-1] if warm_lr else cfg.lr
    for milestone, mult in zip(cfg.lr_steps, cfg.lr_mults):
        if step >= milestone:
            lr *= mult
    return lr
