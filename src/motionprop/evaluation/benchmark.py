"""``motionprop transfer``: the transfer benchmark that walks a DAVIS folder and scores frozen encoders.

For each encoder (each seed of a random init) the features of every frame are
computed once at the working size; label propagation
(:mod:`.propagation`) and the linear probe (:mod:`.probe`) both use them, and
:mod:`.metrics` scores the predictions at the annotations' own resolution.
The results dict (written as ``results.json``) is what :mod:`.report` turns
into ``results.md``; baselines (copy-first-frame, random init over 3 seeds of
each architecture evaluated) are always part of it unless switched off.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from ..data.dataset import read_image_rgb
from ..errors import InputError
from ..fileio import atomic_path
from ..precision import autocast, resolve as resolve_precision
from .cache import CacheEntryError, RunCache
from .davis import Clip, foreground, list_clips, read_masks
from .encoders import (DEFAULT_RANDOM_SEEDS, FEATURE_LAYERS, FEATURE_STRIDE, RANDOM_PREFIX, EncoderSpec, FrozenEncoder,
                       at_layer, load_encoders, parse_encoder)
from .metrics import mean_scores, sequence_objects, sequence_scores, evaluated_frames
from .probe import ProbeConfig, cell_targets, predict_foreground, probe_folds, sample_cells, train_probe
from .propagation import PropagationConfig, labels_at, propagate_clip

TASKS = ("propagation", "probe")
FEATURE_PRECISIONS = ("fp32", "bf16", "auto")
COPY_FIRST_FRAME = "copy-first-frame"


@dataclass
class TransferSettings:
    """Everything that defines a run besides the data and the encoders; stored in results.json."""

    tasks: tuple[str, ...] = TASKS
    short_side: int = 240
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    random_baseline: bool = True
    random_seeds: tuple[int, ...] = DEFAULT_RANDOM_SEEDS
    pictures_per_clip: int = 3
    batch_size: int = 4
    features: str = "last"
    """The layer read from every encoder: ``last`` (ResNet layer4 or layer3 for ``_l3``, AlexNet conv5) or ``previous``."""
    precision: str = "fp32"
    """The encoders' forward pass: ``fp32``, ``bf16`` autocast (labels and the probe stay float32), or ``auto``
    (bf16 where it is native on the device; made concrete when the run starts)."""

    def validate(self) -> "TransferSettings":
        for task in self.tasks:
            if task not in TASKS:
                raise InputError(f"unknown task {task!r}; choose from {', '.join(TASKS)} or all")
        if self.short_side < 4 * FEATURE_STRIDE:
            raise InputError(f"--size {self.short_side}: use at least {4 * FEATURE_STRIDE} pixels")
        p = self.propagation
        if p.context_frames < 0 or p.topk < 1 or p.temperature <= 0:
            raise InputError("propagation needs context frames >= 0, top-k >= 1 and temperature > 0")
        if self.probe.folds < 0 or self.probe.folds == 1:
            raise InputError(f"--probe-folds {self.probe.folds}: use 0 (leave-one-clip-out) or 2 or more")
        if self.features not in FEATURE_LAYERS:
            raise InputError(f"--features {self.features}: choose one of {', '.join(FEATURE_LAYERS)}")
        if self.precision not in FEATURE_PRECISIONS:
            raise InputError(f"--precision {self.precision}: choose one of {', '.join(FEATURE_PRECISIONS)}")
        return self


@dataclass
class ClipData:
    """One clip in memory: frames at the working size (uint8 RGB) and masks at their own size."""

    clip: Clip
    frames: np.ndarray
    labels: np.ndarray

    @property
    def mask_size(self) -> tuple[int, int]:
        return (int(self.labels.shape[1]), int(self.labels.shape[2]))


def working_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) with the short side scaled to ``short_side``, both rounded to a multiple of the stride (8)."""
    scale = short_side / min(height, width)
    return tuple(max(FEATURE_STRIDE, int(round(s * scale / FEATURE_STRIDE)) * FEATURE_STRIDE)
                 for s in (height, width))


def load_clip(clip: Clip, short_side: int) -> ClipData:
    """Read a clip's masks and frames (resized to the working size); a frame of another size than its mask is an error."""
    labels = read_masks(clip)
    if not sequence_objects(labels):
        raise InputError(f"clip {clip.name!r}: its first mask {clip.masks[0]} has no object (nothing to propagate "
                         f"or to score)")
    size = working_size(labels.shape[1], labels.shape[2], short_side)
    frames = np.empty((len(clip.frames), size[0], size[1], 3), np.uint8)
    for i, path in enumerate(clip.frames):
        image = read_image_rgb(str(path))
        if image.shape[:2] != labels.shape[1:]:
            raise InputError(f"clip {clip.name!r}: frame {path} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"is {labels.shape[2]}x{labels.shape[1]}")
        frames[i] = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return ClipData(clip, frames, labels)


def extract_features(encoder: FrozenEncoder, frames: np.ndarray, batch_size: int,
                     on_batch: Callable[[int], None] = lambda n: None,
                     device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """Frames (T, H, W, 3) uint8 -> features (T, C, H/8, W/8) float32 of the frozen encoder, on ``device`` (where
    the encoder is moved to run); ``precision`` ``bf16`` runs its convolutions under bf16 autocast."""
    module = encoder.features.to(device)
    mean = torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, device=device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(frames), batch_size):
            batch = torch.from_numpy(frames[start:start + batch_size]).to(device).permute(0, 3, 1, 2).float()
            out.append(module((batch - mean) / std).float())
            on_batch(len(batch))
    return torch.cat(out)


def clip_result(per_object: dict[int, dict[str, float]]) -> dict:
    """A clip's entry: mean J, F, JF over its objects, and the objects' own scores."""
    result = mean_scores(list(per_object.values()))
    if len(per_object) > 1:
        result["objects"] = {str(k): v for k, v in per_object.items()}
    return result


def task_result(clips: dict[str, dict], objects: list[dict[str, float]]) -> dict:
    """{"mean": over all objects of all clips (DAVIS's global mean), "clips": per clip}."""
    return {"mean": mean_scores(objects), "clips": clips}


def picture_frames(num_frames: int, count: int) -> list[int]:
    """``count`` scored frames spread evenly over a clip (for the pictures)."""
    scored = list(evaluated_frames(num_frames))
    if count <= 0:
        return []
    picks = np.linspace(0, len(scored) - 1, num=min(count, len(scored))).round().astype(int)
    return sorted({scored[i] for i in picks})


@dataclass
class RunOutput:
    """What one encoder run (one seed) gives: task results, times, and a few predicted masks for pictures."""

    tasks: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    pictures: dict[str, dict[str, dict[int, np.ndarray]]] = field(default_factory=dict)


class TaskClock:
    """Wall-clock and process CPU seconds spent per task (CPU time stays meaningful on a busy machine)."""

    def __init__(self, names: tuple[str, ...]):
        self.wall = {n: 0.0 for n in names}
        self.cpu = {n: 0.0 for n in names}

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu


def run_encoder(encoder: FrozenEncoder, data: list[ClipData], settings: TransferSettings,
                progress: Callable[[int], None], device: torch.device | str = "cpu") -> RunOutput:
    """Both tasks for one frozen encoder on every clip: features and label propagation on ``device``, the probe
    (its cells kept in float16 in host memory) on the CPU."""
    clock = TaskClock(("features", "propagation", "probe"))
    out = RunOutput()
    prop_clips, prop_objects = {}, []
    stored, targets = {}, {}
    pics = {task: {} for task in settings.tasks}
    for item in data:
        with clock.measure("features"):
            feats = extract_features(encoder, item.frames, settings.batch_size, progress, device, settings.precision)
        picks = picture_frames(len(item.labels), settings.pictures_per_clip)
        if "propagation" in settings.tasks:
            with clock.measure("propagation"):
                num_labels = max(sequence_objects(item.labels), default=0) + 1
                soft = propagate_clip(feats, item.labels[0], num_labels, settings.propagation)
                pred = labels_at(soft, item.mask_size)
                scores = sequence_scores(pred, item.labels)
            progress(len(item.frames))
            prop_clips[item.clip.name] = clip_result(scores)
            prop_objects += list(scores.values())
            pics["propagation"][item.clip.name] = {t: pred[t] for t in picks}
        if "probe" in settings.tasks:
            stored[item.clip.name] = feats.half().cpu()
            targets[item.clip.name] = cell_targets(item.labels, tuple(feats.shape[-2:]))
        del feats
    if "propagation" in settings.tasks:
        out.tasks["propagation"] = task_result(prop_clips, prop_objects)
    if "probe" in settings.tasks:
        with clock.measure("probe"):
            out.tasks["probe"], pics["probe"] = cross_validated_probe(data, stored, targets, settings.probe,
                                                                      settings.pictures_per_clip)
    out.seconds, out.cpu_seconds, out.pictures = clock.wall, clock.cpu, pics
    return out


def cross_validated_probe(data: list[ClipData], features: dict[str, torch.Tensor], targets: dict[str, np.ndarray],
                          config: ProbeConfig, pictures_per_clip: int) -> tuple[dict, dict]:
    """Probe results with each group of clips held out in turn (:func:`probe_folds`; the probe is trained on the
    other clips' cells), and the held-out predictions to draw."""
    if len(data) < 2:
        raise InputError("the linear probe needs at least 2 clips (it is trained on the others); use --task propagation")
    rng = np.random.default_rng(config.seed)
    samples = {name: sample_cells(features[name], targets[name], config.samples_per_clip, rng) for name in features}
    by_name = {item.clip.name: item for item in data}
    clips, objects, pics = {}, [], {}
    for held_out in probe_folds(list(by_name), config.folds):
        train = [samples[other] for other in samples if other not in held_out]
        probe = train_probe(torch.cat([s[0] for s in train]), torch.cat([s[1] for s in train]), config)
        for name in held_out:
            item = by_name[name]
            pred = predict_foreground(probe, features[name], item.mask_size)
            scores = sequence_scores(pred, foreground(item.labels), [1])
            clips[name] = clip_result(scores)
            objects += list(scores.values())
            pics[name] = {t: pred[t] for t in picture_frames(len(item.labels), pictures_per_clip)}
    clips = {item.clip.name: clips[item.clip.name] for item in data}          # in the clips' order
    return task_result(clips, objects), pics


def copy_first_frame(data: list[ClipData]) -> dict:
    """The floor: every frame predicted as the first frame's mask (void as background)."""
    clips, objects = {}, []
    for item in data:
        first = np.where(item.labels[0] == 255, 0, item.labels[0]).astype(np.uint8)
        scores = sequence_scores(np.broadcast_to(first, item.labels.shape), item.labels)
        clips[item.clip.name] = clip_result(scores)
        objects += list(scores.values())
    return task_result(clips, objects)


def average_seeds(runs: list[dict]) -> dict:
    """Task results of several seeds -> their mean per clip and overall, with each seed's results kept.

    ``seeds`` holds each seed's overall means and ``seed_clips`` its per-clip scores, so a pre-trained
    encoder can be compared with every seed on a clip, not only with their mean.
    """
    clips = {}
    for name in runs[0]["clips"]:
        clips[name] = {k: float(np.mean([r["clips"][name][k] for r in runs])) for k in ("J", "F", "JF")}
    mean = {k: float(np.mean([r["mean"][k] for r in runs])) for k in ("J", "F", "JF")}
    std = {k: float(np.std([r["mean"][k] for r in runs])) for k in ("J", "F", "JF")}
    return {"mean": mean, "std_over_seeds": std, "clips": clips, "seeds": [r["mean"] for r in runs],
            "seed_clips": [r["clips"] for r in runs]}


def slug(text: str) -> str:
    """A file-name-safe version of an encoder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "encoder"


def _load(spec: EncoderSpec, settings: TransferSettings) -> list[FrozenEncoder]:
    """The spec's encoders, reading the layer the settings ask for."""
    return [at_layer(encoder, settings.features) for encoder in load_encoders(spec)]


def run_transfer(davis_root: str | Path, out_dir: str | Path, encoder_args: list[str], clips: list[str] | None = None,
                 settings: TransferSettings | None = None, progress: bool = False,
                 log: Callable[[str], None] = lambda s: None, cache_dir: str | Path | None = None,
                 device: torch.device | str = "cpu") -> dict:
    """Run the benchmark and write ``results.json``, ``results.md`` and ``pictures/`` in ``out_dir``; returns the results.

    With ``cache_dir``, every encoder run is kept there and reused by later calls on the same data and settings
    (:class:`.cache.RunCache`): random init is computed once, and a call stopped half-way resumes. On a CUDA
    ``device`` TF32 is switched off while it runs, so that features and affinities are float32 products as on a
    CPU.
    """
    device = torch.device(device)
    with full_float32(device):
        return _run_transfer(davis_root, out_dir, encoder_args, clips, settings, progress, log, cache_dir, device)


@contextlib.contextmanager
def full_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 convolutions and matrix products without TF32 (cuDNN allows it by default) while inside."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _run_transfer(davis_root: str | Path, out_dir: str | Path, encoder_args: list[str], clips: list[str] | None,
                  settings: TransferSettings | None, progress: bool, log: Callable[[str], None],
                  cache_dir: str | Path | None, device: torch.device) -> dict:
    from tqdm import tqdm

    from .report import results_markdown, write_pictures

    settings = (settings or TransferSettings()).validate()
    if settings.precision == "auto":
        settings = replace(settings, precision="bf16" if resolve_precision("auto", device) == "bf16" else "fp32")
    if not encoder_args:
        raise InputError("give at least one ENCODER (a checkpoint, an encoder file or random:ARCH[:SEEDS])")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; give a folder for results.json, results.md and pictures/")
    specs = [parse_encoder(text) for text in encoder_args]
    clip_list = list_clips(davis_root, clips)
    loaded = [_load(spec, settings) for spec in specs]        # every encoder is read before any long work
    for spec, encs in zip(specs, loaded):
        spec.arch = encs[0].arch
    baseline_flags = [False] * len(specs)
    if settings.random_baseline:
        have = {s.arch for s in specs if s.kind == "random"}
        for arch in dict.fromkeys(s.arch for s in specs if s.kind == "file"):
            if arch not in have:
                spec = parse_encoder(f"{RANDOM_PREFIX}{arch}:{','.join(map(str, settings.random_seeds))}")
                specs.append(spec)
                loaded.append(_load(spec, settings))
                baseline_flags.append(True)
    log(f"reading {len(clip_list)} clips from {davis_root}")
    data = [load_clip(clip, settings.short_side) for clip in clip_list]
    cache = None if cache_dir is None else RunCache(cache_dir, data, settings, device)
    steps_per_frame = 2 if "propagation" in settings.tasks else 1      # features, then propagation
    steps_per_run = sum(len(d.frames) for d in data) * steps_per_frame
    total_frames = steps_per_run * sum(len(encs) for encs in loaded)
    out_dir.mkdir(parents=True, exist_ok=True)

    entries = []
    started, started_cpu = time.perf_counter(), time.process_time()
    bar = tqdm(total=total_frames, unit="frame", desc="transfer", dynamic_ncols=True, file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()))
    try:
        for index, (spec, encs, added) in enumerate(zip(specs, loaded, baseline_flags)):
            runs, kept = [], 0
            for enc in encs:
                bar.set_postfix_str(spec.name if enc.seed is None else f"{spec.name} seed {enc.seed}")
                run = _kept_run(cache, enc, log)
                if run is None:
                    run = run_encoder(enc, data, settings, bar.update, device)
                    _keep_run(cache, enc, run, log)
                    note = ""
                else:
                    kept += 1
                    bar.update(steps_per_run)
                    note = f" (kept from an earlier command in {cache.folder})"
                runs.append(run)
                log(f"{spec.name}" + ("" if enc.seed is None else f" seed {enc.seed}") + ": " +
                    ", ".join(f"{t} J&F {100 * run.tasks[t]['mean']['JF']:.1f}" for t in settings.tasks) + note)
            entry = _entry(spec, encs, runs, settings, added)
            if kept:
                entry["runs_from_cache"] = kept
            entries.append(entry)
            write_pictures(out_dir / "pictures" / f"{index:02d}_{slug(spec.name)}", data, runs[0].pictures)
    finally:
        bar.close()
    baselines = {}
    if "propagation" in settings.tasks:
        baselines[COPY_FIRST_FRAME] = {"tasks": {"propagation": copy_first_frame(data)}}
    results = {
        "encoders": entries,
        "baselines": baselines,
        "settings": _settings_dict(settings, davis_root, data),
        "cache": None if cache is None else str(cache.folder),
        "seconds_total": time.perf_counter() - started,
        "cpu_seconds_total": time.process_time() - started_cpu,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
                        "python": platform.python_version(), "machine": platform.machine()},
    }
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(results_markdown(results))
    return results


def _kept_run(cache: RunCache | None, encoder: FrozenEncoder, log: Callable[[str], None]) -> RunOutput | None:
    """The run of ``encoder`` kept in ``cache`` by an earlier command, if any (a damaged entry is reported and
    skipped)."""
    if cache is None:
        return None
    try:
        return cache.get(encoder)
    except CacheEntryError as exc:
        log(f"warning: {exc}")
        return None


def _keep_run(cache: RunCache | None, encoder: FrozenEncoder, run: RunOutput, log: Callable[[str], None]) -> None:
    """Keep a run for later commands; a cache that cannot be written only costs a warning."""
    if cache is None:
        return
    try:
        cache.put(encoder, run)
    except OSError as exc:
        log(f"warning: cannot keep the run in {cache.folder} ({exc}); it will be computed again next time")


def _entry(spec: EncoderSpec, encs: list[FrozenEncoder], runs: list[RunOutput], settings: TransferSettings,
           added: bool) -> dict:
    entry = {
        "name": spec.name,
        "kind": "random init" if spec.kind == "random" else "pre-trained",
        "arch": encs[0].arch,
        "features": encs[0].layer,
        "added_as_baseline": added,
    }
    if spec.kind == "random":
        entry["seeds"] = list(spec.seeds)
        entry["tasks"] = {t: average_seeds([r.tasks[t] for r in runs]) for t in settings.tasks}
    else:
        entry["source"] = encs[0].source
        entry["tasks"] = runs[0].tasks
    seconds = {k: float(sum(r.seconds[k] for r in runs) / len(runs)) for k in runs[0].seconds}
    entry["seconds_per_run"] = seconds
    entry["cpu_seconds_per_run"] = {k: float(sum(r.cpu_seconds[k] for r in runs) / len(runs))
                                    for k in runs[0].cpu_seconds}
    return entry


def _settings_dict(settings: TransferSettings, root: str | Path, data: list[ClipData]) -> dict:
    return {
        "davis": str(root),
        "tasks": list(settings.tasks),
        "short_side": settings.short_side,
        "feature_stride": FEATURE_STRIDE,
        "features": settings.features,
        "precision": settings.precision,
        "propagation": asdict(settings.propagation),
        "probe": asdict(settings.probe),
        "random_seeds": list(settings.random_seeds),
        "clips": {d.clip.name: {"frames": len(d.frames), "mask_size": list(d.mask_size),
                                "working_size": list(d.frames.shape[1:3]),
                                "objects": len(sequence_objects(d.labels))} for d in data},
        "metrics": "davis2017-evaluation: J = IoU, F = boundary F (disk radius ceil(0.008 x diagonal)), "
                   "first and last frames not scored, 255 = void; means over objects",
    }
