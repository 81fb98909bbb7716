"""Data commands: ``prepare`` (your own videos -> training set) and ``synth`` (built-in data)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data sub-commands."""
    _register_synth(subparsers)


SYNTH_EPILOG = """\
Output layout (the same as 'motionprop prepare'):
  DIR/frames/<clip>/000000.jpg ...   RGB frames
  DIR/flow/<clip>/000000.flo ...     exact flow frame 000000 -> 000001, (H, W, 2) x then y, pixels
                                     (000000_x.jpg + 000000_y.jpg with --flow-format jpg)
  DIR/masks/<clip>/000000.png ...    object index map, 0 = background, higher = in front
  DIR/lists/train.txt, val.txt       'img1 img2 flow' per line ('img1 img2 flow_x flow_y' for jpg)
  DIR/synth.json                     generation parameters and seed
List paths are written as PREFIX/frames/... with PREFIX = --out as given: like the original
CMP code, training opens them relative to the directory it runs in, so train from the
directory you ran 'synth' in (or give an absolute --out). Clips are split whole into train
and val. Same seed -> identical files; re-running keeps the clips already written.
The defaults take about 10 s on 2 CPU cores and 280 MB as .flo (66 MB png, 34 MB jpg)."""


def _register_synth(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth``: built-in training clips with exact flow from photos bundled in scikit-image."""
    parser = subparsers.add_parser(
        "synth", help="generate built-in training data (synthetic clips with exact flow)",
        description="Generate FlyingChairs-style training clips with exact optical flow and object masks:\n"
        "photos bundled with scikit-image (no download) as background and as textures of random\n"
        "smooth objects, each layer moving by its own random translation, rotation and scale.",
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
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--list-prefix", default=None, metavar="PREFIX",
                        help="prefix of the paths in the lists (default: --out as given)")
    parser.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    """Generate (or complete) the synthetic data set and print where the lists are."""
    import time

    from ..data.synth import SynthConfig, generate, parse_range, parse_size

    height, width = parse_size(args.size)
    min_objects, max_objects = parse_range(args.objects)
    config = SynthConfig(height=height, width=width, num_pairs=args.num_pairs, val_fraction=args.val_fraction,
                         frames_per_clip=args.frames_per_clip, min_objects=min_objects, max_objects=max_objects,
                         flow_format=args.flow_format, max_flow=args.max_flow, seed=args.seed)
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
