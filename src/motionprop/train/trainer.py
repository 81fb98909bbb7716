"""The training loop of CMP: one readable loop for one CPU process up to many GPUs on many nodes.

Run it with ``motionprop train`` (or :func:`train`); under ``torchrun`` each
process trains on its share of every batch with DistributedDataParallel. Only
rank 0 writes files. The run folder holds::

    config.yaml        the resolved config of the run
    metrics.jsonl      one JSON object per logged train step or validation
    checkpoints/       iter_NNNNNNN/ folders (see train/checkpoints.py)
    images/            validation pictures: image + guidance, predicted flow, target flow
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from .. import precision
from ..baselines import end_point_error, idw_fill, nearest_fill
from ..checkpoint import load_state_strict, read_checkpoint
from ..config import Config
from ..data.dataset import ImageFlowDataset
from ..errors import FlowFileError, InputError, MotionpropError, os_error_message
from ..losses import build_flow_loss, motion_weights
from ..models import CMP, create_model
from .checkpoints import (list_checkpoints, load_train_state, rng_state, save_training_checkpoint,
                          set_rng_state)
from .distributed import DistInfo, all_reduce_sum, any_process, barrier, broadcast_object, init_distributed
from .sampler import IterationSampler
from .schedule import learning_rate


class TrainingStopped(MotionpropError):
    """Training stopped (a NaN loss, a full disk); the last good checkpoint is kept."""


@dataclass
class TrainOptions:
    """How to run (not what to train: that is the :class:`Config`)."""

    run_dir: Path
    resume: bool = False
    force: bool = False
    device: str = "auto"
    time_limit: float | None = None
    progress: bool = True
    tensorboard: bool = False
    log: Any = print


@dataclass
class TrainResult:
    """Where a run ended: its iteration, last checkpoint, last validation, and the trained network."""

    iteration: int
    stopped_early: bool
    checkpoint: Path | None
    val: dict[str, float] = field(default_factory=dict)
    model: CMP | None = None
    is_main: bool = True


# --------------------------------------------------------------------------- set-up


def prepare_run_dir(cfg: Config, opts: TrainOptions, info: DistInfo) -> Config:
    """Check the run folder on rank 0; returns the config to train with. Nothing is written yet.

    A run folder is never overwritten without ``force``. On resume, the saved
    config is used and must build the same model as the one given. The folder
    is made (or replaced, or its config updated) by :func:`start_run_dir` once
    the first iteration has trained, so a refused or failed start changes nothing.
    """
    run_dir = Path(opts.run_dir)
    error = None
    if info.is_main:
        try:
            cfg = _claim_run_dir(cfg, opts, run_dir)
            # the run records the precision it trains in, so a resume elsewhere keeps it
            cfg = cfg.replace(train=dataclasses.replace(cfg.train, amp=precision.resolve(cfg.train.amp, info.device)))
        except MotionpropError as exc:
            error = str(exc)
    error, cfg = broadcast_object((error, cfg), info)
    if error:
        raise InputError(error)
    return cfg


def _claim_run_dir(cfg: Config, opts: TrainOptions, run_dir: Path) -> Config:
    from ..config import load_config

    saved = run_dir / "config.yaml"
    if opts.resume:
        if not saved.is_file():
            raise InputError(f"--resume: {run_dir} is not a run folder (no config.yaml)")
        previous = load_config(saved)
        if previous.model != cfg.model:
            raise InputError(f"--resume: the model in {saved} differs from the config given; "
                             "resume without --config to use the saved one")
        if cfg.train.amp == "auto":  # keep the precision the run was started in (on this or another machine)
            cfg = cfg.replace(train=dataclasses.replace(cfg.train, amp=previous.train.amp))
        return cfg
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} is a file")
    if run_dir.exists() and any(run_dir.iterdir()) and not opts.force:
        raise InputError(f"run folder {run_dir} already exists and is not empty; use --resume to continue "
                         "it or --force to start over (deletes it)")
    return cfg


def start_run_dir(cfg: Config, opts: TrainOptions, run_dir: Path) -> None:
    """Make the run folder (``force``: replace the old one) and save its config, atomically (rank 0).

    On ``--resume`` the temporaries that a killed run left (a checkpoint folder
    being written: about 100 MB) are deleted first; see :mod:`motionprop.fileio`.
    """
    import shutil

    from ..fileio import atomic_path, remove_stale_temporaries

    if not opts.resume and opts.force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir, recursive=True)  # half-written checkpoints of a run killed with -9
    with atomic_path(run_dir / "config.yaml") as tmp:  # on resume e.g. a longer train.total_iter
        tmp.write_text(cfg.to_yaml())


def _check_sources(cfg: Config, log: Any = print) -> None:
    """Every list file, and every file they list, exists (a stat each: fast) before anything is trained.

    A missing file is an error naming it, unless ``data.skip_bad``: then missing
    training files are counted here and their pairs skipped in training.
    """
    from ..data.dataset import read_pair_list

    if not cfg.data.train_source:
        raise InputError("data.train_source is empty: give the list files of the training pairs")
    for path in [*cfg.data.train_source, *cfg.data.val_source]:
        if not Path(path).is_file():
            raise InputError(f"list file not found: {path}")
    for source, skippable in ((cfg.data.train_source, cfg.data.skip_bad), (cfg.data.val_source, False)):
        missing = 0
        for list_path in source:
            for number, record in enumerate(read_pair_list(list_path), 1):
                for path in (record.image1, record.image2, *record.flow):
                    if not Path(path).is_file():
                        if not skippable:
                            raise InputError(f"{list_path}: pair {number}: file not found: {path}")
                        missing += 1
        if missing:
            log(f"motionprop train: warning: {missing} listed training file(s) are missing; their pairs will be "
                "skipped (data.skip_bad)")


def build_model(cfg: Config, info: DistInfo) -> tuple[CMP, nn.Module]:
    """The bare network and the one to call (DDP-wrapped when distributed)."""
    model = create_model(cfg) if cfg.train.init == "original" else CMP(cfg)  # "kaiming": PyTorch's defaults
    if cfg.train.sync_bn and info.distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(info.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        return model, nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, model


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD or Adam over the model; with ``train.image_encoder_lr_mult`` != 1 the image encoder is a parameter group
    of its own whose ``lr_mult`` scales the schedule's rate (:func:`set_learning_rate`)."""
    t = cfg.train
    params: Any = model.parameters()
    if t.image_encoder_lr_mult != 1:
        encoder = {id(p) for p in model.image_encoder.parameters()}
        params = [{"params": list(model.image_encoder.parameters()), "lr_mult": t.image_encoder_lr_mult},
                  {"params": [p for p in model.parameters() if id(p) not in encoder], "lr_mult": 1.0}]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, 0.999), weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate ``lr`` on every parameter group, times the group's ``lr_mult`` if it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def _loader_options(cfg: Config, info: DistInfo) -> dict[str, Any]:
    workers = cfg.data.workers
    if workers > 0:
        _kill_workers_at_exit()
    return dict(num_workers=workers, pin_memory=info.device.type == "cuda", persistent_workers=workers > 0,
                worker_init_fn=ignore_stop_signals if workers > 0 else None)


def build_loaders(cfg: Config, info: DistInfo, start_iter: int) -> tuple[DataLoader, DataLoader | None]:
    """Training loader (this rank's share of an iteration-based stream) and validation loader."""
    d, t = cfg.data, cfg.train
    train_set = ImageFlowDataset(d.train_source, d, train=True, seed=t.seed, skip_bad=d.skip_bad, load_image2=False)
    sampler = IterationSampler(len(train_set), t.total_iter, d.batch_size, info.world_size, info.rank,
                               t.grad_accum, t.seed, start_iter)
    train_loader = DataLoader(train_set, batch_size=d.batch_size, sampler=sampler, **_loader_options(cfg, info))
    return train_loader, build_val_loader(cfg, info) if d.val_source else None


def build_val_loader(cfg: Config, info: DistInfo) -> DataLoader:
    """This rank's share of the validation pairs (all of them, or the first ``train.val_iter`` batches)."""
    d, t = cfg.data, cfg.train
    val_set = ImageFlowDataset(d.val_source, d, train=False, seed=t.seed, load_image2=False)
    count = len(val_set) if t.val_iter < 0 else min(len(val_set), t.val_iter * d.batch_size_val)
    keys = [(i, 0) for i in range(info.rank, count, info.world_size)]
    return DataLoader(val_set, batch_size=d.batch_size_val, sampler=keys, **_loader_options(cfg, info))


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which saves a checkpoint first.

    Ctrl-C reaches the whole process group and SLURM signals every process of a
    job; a worker dying of it would make the main process fail before saving.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_EXIT_HOOK: list[bool] = []


def _kill_workers_at_exit() -> None:
    """At interpreter exit, SIGKILL the DataLoader workers still alive (registered once, in the main process).

    Workers ignore SIGTERM (see :func:`ignore_stop_signals`), and
    multiprocessing's own exit handler terminates daemonic children with
    SIGTERM and then waits for them without a timeout: after an error that left
    a loader's workers running, the process would never exit. atexit runs
    this hook before multiprocessing's (it is registered later).
    """
    if _EXIT_HOOK:
        return
    import atexit

    _EXIT_HOOK.append(True)
    atexit.register(_kill_daemon_children)


def _kill_daemon_children() -> None:
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)


def close_loaders(*loaders: DataLoader | None) -> None:
    """Stop the (persistent) worker processes of ``loaders`` now, not at garbage collection or exit."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None


# --------------------------------------------------------------------------- steps


def autocast_context(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast as ``train.amp`` says (``auto`` resolved for ``device``): :mod:`motionprop.precision`."""
    return precision.autocast(cfg.train.amp, device)


def compute_loss(loss_fn: nn.Module, output: torch.Tensor, target: torch.Tensor, resolution: str,
                 flow: torch.Tensor | None = None, motion_weight: float = 0.0) -> torch.Tensor:
    """The flow loss at the target's resolution (the original's) or, cheaper, at the output's.

    ``motion_weight`` > 0 weights each pixel by its motion in ``flow`` (the pair's flow, which for a residual
    model is not the target): :func:`~motionprop.losses.motion_weights`, at the loss's resolution.
    Always float32, outside autocast (the fused loss also switches autocast off itself).
    """
    output = output.float()
    pooled = resolution == "output" and output.shape[-2:] != target.shape[-2:]
    if pooled:
        target = F.adaptive_avg_pool2d(target, output.shape[-2:])
    if not motion_weight:
        return loss_fn(output, target)
    if flow is None:
        raise ValueError("compute_loss: motion_weight needs the pair's flow")
    flow = F.adaptive_avg_pool2d(flow.float(), output.shape[-2:]) if pooled else flow.float()
    return loss_fn(output, target, motion_weights(flow, motion_weight))


def to_device(batch: dict[str, torch.Tensor], info: DistInfo, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        value = value.to(info.device, non_blocking=True)
        if channels_last and value.dim() == 4 and key in ("image", "sparse"):
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


@torch.no_grad()
def validate(model: CMP, net: nn.Module, loader: DataLoader, cfg: Config, info: DistInfo, loss_fn: nn.Module,
             image_dir: Path | None, iteration: int, progress: bool = False) -> dict[str, float]:
    """Loss and EPE of the model, and EPE of the nearest-fill and IDW baselines on the same guidance; for a residual
    model also ``epe_fill``, its fill alone (the non-learned flow its network corrects: the difference is what the
    network adds).

    ``progress`` shows a bar (main process, on a terminal only).
    """
    from tqdm import tqdm

    was_training = net.training
    net.eval()
    sums = torch.zeros(6, dtype=torch.float64)  # loss*n, epe, epe_nearest, epe_idw, n, epe_fill
    pictures: list[np.ndarray] = []
    bar = tqdm(loader, desc="evaluate", unit="batch", dynamic_ncols=True, file=sys.stderr, leave=False,
               disable=not (progress and info.is_main and sys.stderr.isatty()))
    for batch in bar:
        batch = to_device(batch, info, cfg.train.channels_last)
        with autocast_context(cfg, info.device):
            output = net(batch["image"], batch["sparse"])
        target, valid, sparse = batch["flow"], batch["valid"], batch["sparse"]
        flow, fill = model.flow_and_fill(output.float(), target.shape[-2:], sparse, model.guidance_cost(batch["image"]))
        n = target.shape[0]
        sums[0] += compute_loss(loss_fn, output, model.training_target(target, sparse, fill), "full").item() * n
        sums[1] += end_point_error(flow, target, valid).sum().item()
        sums[2] += end_point_error(nearest_fill(sparse.float()), target, valid).sum().item()
        sums[3] += end_point_error(idw_fill(sparse.float()), target, valid).sum().item()
        sums[4] += n
        if fill is not None:
            sums[5] += end_point_error(fill, target, valid).sum().item()
        if image_dir is not None and info.is_main and len(pictures) < cfg.train.num_val_images:
            pictures += _pictures(batch, flow, cfg, cfg.train.num_val_images - len(pictures))
    sums = all_reduce_sum(sums.to(info.device), info).cpu()
    net.train(was_training)
    count = max(sums[4].item(), 1.0)
    metrics = {"loss": sums[0].item() / count, "epe": sums[1].item() / count,
               "epe_nearest": sums[2].item() / count, "epe_idw": sums[3].item() / count, "samples": int(count)}
    if model.residual:
        metrics["epe_fill"] = sums[5].item() / count
    if pictures and image_dir is not None:
        _save_picture(image_dir / f"val_{iteration:07d}.png", pictures)
    return metrics


def _pictures(batch: dict[str, torch.Tensor], flow: torch.Tensor, cfg: Config, limit: int) -> list[np.ndarray]:
    from ..visualize import denormalize, draw_guidance, flow_to_color, hstack_images

    rows = []
    for b in range(min(limit, flow.shape[0])):
        image = denormalize(batch["image"][b].float().cpu().numpy(), cfg.data.mean, cfg.data.std)
        sparse = batch["sparse"][b].float().cpu().numpy()
        target = batch["flow"][b].float().cpu().numpy().transpose(1, 2, 0)
        scale = float(np.hypot(target[..., 0], target[..., 1]).max()) or 1.0
        rows.append(hstack_images([
            draw_guidance(image, sparse[2] > 0, sparse[:2].transpose(1, 2, 0)),
            flow_to_color(flow[b].float().cpu().numpy().transpose(1, 2, 0), scale),
            flow_to_color(target, scale),
        ]))
    return rows


def _save_picture(path: Path, rows: list[np.ndarray]) -> None:
    import cv2

    from ..fileio import atomic_path

    grid = np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255) for r in rows])
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


# --------------------------------------------------------------------------- logging


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (rank 0 only); on resume, drops lines past the restart point."""

    def __init__(self, run_dir: Path, info: DistInfo, start_iter: int, tensorboard: bool):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = info.is_main
        self.writer = None
        self.start_iter = start_iter
        self.tensorboard = tensorboard and self.enabled
        if self.tensorboard:
            try:
                import torch.utils.tensorboard  # noqa: F401  (checked before the run starts)
            except ImportError:
                raise InputError("--tensorboard needs the tensorboard package: pip install 'motionprop[tensorboard]'")

    def open(self) -> None:
        """Start writing (once the run folder exists): drop lines past the restart point, open TensorBoard."""
        if not self.enabled:
            return
        start_iter, tensorboard, run_dir = self.start_iter, self.tensorboard, self.path.parent
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("iter", 0) <= start_iter]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("iter",):
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["iter"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between iterations, so a checkpoint is saved before exiting."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- the loop


def _resume_state(run_dir: Path, model: CMP, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler | None, info: DistInfo) -> tuple[int, Path | None]:
    found = list_checkpoints(run_dir)
    if not found:
        return 0, None
    iteration, folder = found[-1]
    _, state, _ = read_checkpoint(folder)
    load_state_strict(model, state, folder)
    train_state = load_train_state(folder)
    optimizer.load_state_dict(train_state["optimizer"])
    if scaler is not None and train_state.get("scaler"):
        scaler.load_state_dict(train_state["scaler"])
    states = train_state.get("rng") or []
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])
    return iteration, folder


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    state = rng_state()
    if not info.distributed:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def train(cfg: Config, opts: TrainOptions) -> TrainResult:
    """Train CMP as ``cfg`` says, in ``opts.run_dir``; resumable, interruptible, distributed under torchrun."""
    info = init_distributed(opts.device)
    _check_sources(cfg, opts.log if info.is_main else lambda *_: None)  # before the run folder is made
    requested_amp = cfg.train.amp  # for the log: 'auto' says why it chose
    cfg = prepare_run_dir(cfg, opts, info)
    run_dir = Path(opts.run_dir)
    t = cfg.train
    torch.manual_seed(t.seed + info.rank)
    np.random.seed((t.seed + info.rank) % 2**32)

    model, net = build_model(cfg, info)
    optimizer = build_optimizer(model, cfg)
    use_scaler = t.amp == "fp16" and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    start_iter, resumed_from = (0, None)
    if opts.resume:
        start_iter, resumed_from = _resume_state(run_dir, model, optimizer, scaler, info)
    if start_iter == 0 and t.image_encoder_init:  # every rank reads the file: the same start everywhere
        from .encoder_init import init_image_encoder

        line = init_image_encoder(model.image_encoder, t.image_encoder_init, cfg.data.mean, cfg.data.std)
        if info.is_main:
            opts.log(f"motionprop train: {line}")
    if start_iter >= t.total_iter:
        raise InputError(f"{run_dir} already finished {start_iter} of {t.total_iter} iterations; "
                         "raise train.total_iter to train longer")
    train_loader, val_loader = build_loaders(cfg, info, start_iter)
    loss_fn = build_flow_loss(cfg.model, fused=t.loss_impl == "fused")
    log = MetricsLog(run_dir, info, start_iter, opts.tensorboard)
    image_dir = run_dir / "images"
    if info.is_main:
        global_batch = cfg.data.batch_size * info.world_size * t.grad_accum
        where = f"resuming from {resumed_from.name}" if resumed_from else "starting"
        opts.log(f"motionprop train: {where} at iteration {start_iter}/{t.total_iter}, {info.world_size} "
                 f"process(es) on {info.device} ({precision.describe(requested_amp, info.device)}), global batch "
                 f"{global_batch}, {len(train_loader.dataset)} training pairs")

    def start_run() -> None:
        if info.is_main:
            start_run_dir(cfg, opts, run_dir)
            log.open()
        barrier(info)

    try:
        return _loop(cfg, opts, info, model, net, optimizer, scaler, loss_fn, train_loader, val_loader, log,
                     image_dir, start_iter, start_run)
    finally:
        log.close()
        close_loaders(train_loader, val_loader)


def _loop(cfg: Config, opts: TrainOptions, info: DistInfo, model: CMP, net: nn.Module,
          optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, loss_fn: nn.Module,
          train_loader: DataLoader, val_loader: DataLoader | None, log: MetricsLog, image_dir: Path,
          start_iter: int, start_run: Any = lambda: None) -> TrainResult:
    """Train from ``start_iter``; ``start_run()`` is called once the first iteration has trained."""
    t = cfg.train
    run_dir = Path(opts.run_dir)
    bar = _progress(opts, info, start_iter, t.total_iter)
    skipped = [0]
    batches = _counting_skipped(iter(train_loader), skipped)
    iteration = start_iter
    last_ckpt: Path | None = None
    val_metrics: dict[str, float] = {}
    started = time.monotonic()
    window = {"loss": 0.0, "data": 0.0, "step": 0.0, "n": 0}
    stopped_early = False

    def save() -> Path | None:
        states = _gather_rng(info)
        path, failed = None, None
        if info.is_main:
            try:
                path = save_training_checkpoint(run_dir, iteration, net, optimizer, scaler, states, t.keep_last,
                                                 t.keep_every)
            except OSError as exc:
                failed = exc
        if any_process(failed is not None, info):     # every process stops: none waits for the others forever
            bar.close()
            raise _save_failed(failed, iteration, run_dir)
        barrier(info)
        return path

    net.train()
    with StopRequest() as stop:
        while iteration < t.total_iter:
            lr = learning_rate(iteration, t)
            set_learning_rate(optimizer, lr)
            tick = time.monotonic()
            try:
                loss_value, data_time = _train_step(cfg, info, net, optimizer, scaler, loss_fn, batches)
            except (InputError, FlowFileError) as exc:
                bar.close()
                raise _data_error(exc, iteration, start_iter, save, info) from None
            iteration += 1
            loss_mean = all_reduce_sum(torch.tensor([loss_value], device=info.device), info).item() / info.world_size
            if not math.isfinite(loss_mean):
                bar.close()
                raise TrainingStopped(
                    f"loss became {loss_mean} at iteration {iteration}; stopped without saving. The last good "
                    f"checkpoint is in {run_dir / 'checkpoints'}; lower train.lr or check the data, then --resume")
            if iteration == start_iter + 1:
                start_run()
            window["loss"] += loss_mean
            window["data"] += data_time
            window["step"] += time.monotonic() - tick
            window["n"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_mean:.3f}", lr=f"{lr:.2g}", data=f"{data_time:.2f}s")
            if iteration % t.print_freq == 0 or iteration == t.total_iter:
                window["skipped"] = skipped[0]
                _log_train(log, iteration, lr, window, cfg, info, opts, bar)
            if val_loader is not None and (iteration % t.val_freq == 0 or iteration == t.total_iter):
                try:
                    val_metrics = validate(model, net, val_loader, cfg, info, loss_fn, image_dir, iteration)
                except (InputError, FlowFileError) as exc:
                    bar.close()
                    raise _data_error(exc, iteration, start_iter, save, info) from None
                log.write({"iter": iteration, "split": "val", "lr": lr, **val_metrics})
                if info.is_main:
                    (opts.log if bar.disable else bar.write)(_val_line(iteration, val_metrics))
            saved = iteration % t.save_freq == 0 or iteration == t.total_iter
            if saved:
                last_ckpt = save()
            out_of_time = opts.time_limit is not None and time.monotonic() - started > opts.time_limit
            if any_process(stop.signal is not None or out_of_time, info):
                stopped_early = iteration < t.total_iter
                if not saved:
                    last_ckpt = save()
                break
    bar.close()
    if stopped_early and info.is_main:
        reason = f"signal {stop.signal}" if stop.signal else "time limit"
        opts.log(f"motionprop train: stopped at iteration {iteration} ({reason}); checkpoint saved, "
                 f"continue with --resume")
    if skipped[0] and info.is_main:
        opts.log(f"motionprop train: skipped {skipped[0]} bad pair(s) (data.skip_bad); see the warnings above")
    if stopped_early and stop.signal is not None:
        interrupted = KeyboardInterrupt()
        interrupted.signum = stop.signal  # the command line exits with 128 + signal (130 Ctrl-C, 143 SIGTERM)
        raise interrupted
    return TrainResult(iteration, stopped_early, last_ckpt, val_metrics, model, info.is_main)


def _counting_skipped(batches: Iterator[dict[str, torch.Tensor]], count: list[int]
                      ) -> Iterator[dict[str, torch.Tensor]]:
    """The batches, adding the number of bad pairs the dataset skipped (``data.skip_bad``) to ``count[0]``."""
    for batch in batches:
        if "skipped" in batch:
            count[0] += int(batch["skipped"].sum())
        yield batch


def _save_failed(exc: OSError | None, iteration: int, run_dir: Path) -> TrainingStopped:
    """The one-line error of a checkpoint that could not be written (``exc``: the main process's error; None on
    the other processes), with where training can resume from."""
    if exc is None:
        return TrainingStopped(f"the main process could not save the checkpoint of iteration {iteration} (its "
                               "message says why)")
    done = list_checkpoints(run_dir)
    where = (f"--resume continues from iteration {done[-1][0]} ({done[-1][1]})" if done
             else "no checkpoint was written yet")
    return TrainingStopped(f"could not save the checkpoint of iteration {iteration}: {os_error_message(exc)}; "
                           f"{where}")


def _data_error(exc: Exception, iteration: int, start_iter: int, save: Any, info: DistInfo) -> InputError:
    """The error to stop on after a pair could not be read mid-run, once the progress made is saved."""
    hint = "fix or remove that pair (or set data.skip_bad=true to skip bad pairs), then --resume"
    if iteration <= start_iter:
        return InputError(f"{exc}; nothing to save yet: {hint}")
    if info.distributed:  # the other processes are not at a point where all can save together
        return InputError(f"{exc}; stopped at iteration {iteration} without saving: {hint}")
    path = save()
    return InputError(f"{exc}; saved a checkpoint at iteration {iteration} ({path}): {hint}")


def _train_step(cfg: Config, info: DistInfo, net: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, loss_fn: nn.Module,
                batches: Iterator[dict[str, torch.Tensor]]) -> tuple[float, float]:
    """One optimizer step over ``grad_accum`` micro-batches; returns (loss, seconds waiting for data)."""
    t = cfg.train
    optimizer.zero_grad(set_to_none=True)
    total, data_time = 0.0, 0.0
    for micro in range(t.grad_accum):
        tick = time.monotonic()
        try:
            batch = next(batches)
        except StopIteration:
            raise RuntimeError("the training sampler ran out before total_iter (a bug)") from None
        batch = to_device(batch, info, t.channels_last)
        data_time += time.monotonic() - tick
        sync = contextlib.nullcontext()
        if info.distributed and micro < t.grad_accum - 1:
            sync = net.no_sync()
        with sync:
            with autocast_context(cfg, info.device):
                output = net(batch["image"], batch["sparse"])
            cmp = getattr(net, "module", net)
            target = cmp.training_target(batch["flow"], batch["sparse"], cost=cmp.guidance_cost(batch["image"]))
            loss = compute_loss(loss_fn, output, target, t.loss_resolution, batch["flow"],
                                t.motion_weight) / t.grad_accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss.item()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total, data_time


def _log_train(log: MetricsLog, iteration: int, lr: float, window: dict[str, float], cfg: Config,
               info: DistInfo, opts: TrainOptions, bar: Any) -> None:
    n = max(window["n"], 1)
    samples = cfg.data.batch_size * info.world_size * cfg.train.grad_accum
    record = {"iter": iteration, "split": "train", "loss": window["loss"] / n, "lr": lr,
              "data_time": window["data"] / n, "iter_time": window["step"] / n,
              "samples_per_s": samples * n / max(window["step"], 1e-9)}
    if window.get("skipped"):
        record["skipped"] = int(window["skipped"])  # bad pairs skipped so far (data.skip_bad)
    log.write(record)
    if info.is_main and bar.disable:
        opts.log(f"iter {iteration}: loss {record['loss']:.4f} lr {lr:.3g} "
                 f"{record['iter_time']:.2f} s/it (data {record['data_time']:.2f} s)")
    for key in ("loss", "data", "step"):
        window[key] = 0.0
    window["n"] = 0


def format_epe(m: dict[str, float]) -> str:
    """The end-point errors of :func:`validate`'s metrics on one line, the same in the log, ``train`` and ``evaluate``."""
    fill = f"its fill alone {m['epe_fill']:.3f}, " if "epe_fill" in m else ""
    return f"EPE {m['epe']:.3f} px ({fill}nearest fill {m['epe_nearest']:.3f}, IDW {m['epe_idw']:.3f})"


def _val_line(iteration: int, m: dict[str, float]) -> str:
    return f"val @ {iteration}: loss {m['loss']:.4f}  {format_epe(m)}"


def _progress(opts: TrainOptions, info: DistInfo, start: int, total: int) -> Any:
    """A progress bar on a terminal; elsewhere (logs, CI, SLURM) a disabled one, and log lines instead."""
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="it", desc="train", dynamic_ncols=True, file=sys.stderr,
                disable=not (opts.progress and info.is_main and sys.stderr.isatty()))
