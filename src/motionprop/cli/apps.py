"""Application commands: ``propagate``, ``animate``, ``annotate``.

Every input (image, points, guidance file, output names) is checked before
the checkpoint is loaded and the network runs; a mistake is one line and exit
code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from typing import Any, Iterator

PRECISION_DEFAULT = "auto"
"""The apps' default ``--precision``: bf16 only where it is native (docs/benchmarks.md, "The web app")."""
POINTS_HELP = "pixel coordinates of the image: x right, y down, (0, 0) the top-left pixel"


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="motionprop checkpoint folder/.safetensors, an "
                   "original-release .pth.tar (with --config), or 'annotation' (the paper's annotation "
                   "network, after 'motionprop download annotation')")
    p.add_argument("--config", help="config of an original-format checkpoint (its config.yaml or a preset name)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ..., or auto (CUDA if present)")
    p.add_argument("--working-size", type=int, metavar="PX",
                   help="short side the network sees, rounded to its stride (default: the checkpoint's "
                   "data.short_size, the scale its training images had)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=PRECISION_DEFAULT,
                   help="the network's arithmetic: fp32, bf16 (bfloat16 autocast: about 2x faster where the "
                   "CPU has AVX512-BF16/AMX, slower elsewhere) or auto (bf16 where native, else fp32; "
                   f"default: {PRECISION_DEFAULT})")


def _add_dominant_motion_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dominant-motion", action="store_true",
                   help="networks trained with model.geodesic_prior_distance (the quickstart's): move pixels far "
                   "from every arrow with the image's dominant motion, estimated from the arrows. For guidance "
                   "spread over the whole frame (tracks from a video); off by default, as a few hand-placed "
                   "arrows would drag the whole image along")


def _add_guidance_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arrow", action="extend", nargs="+", default=[], metavar="X,Y,DX,DY",
                   help=f"the pixel at (X, Y) moves by (DX, DY); repeatable ({POINTS_HELP})")
    p.add_argument("--still", action="extend", nargs="+", default=[], metavar="X,Y",
                   help="a pixel that does not move; repeatable")
    p.add_argument("--guidance", metavar="FILE.json",
                   help="arrows and still points from a guidance file (scaled if it was drawn on another "
                   "size of the image); --arrow/--still add to them")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the application sub-commands."""
    from ..apps.refine import REFINE_METHODS

    p = subparsers.add_parser(
        "propagate", help="dense flow of an image from a few arrows",
        description="Predict how every pixel of an image moves, given a few arrows (and still points). "
        "The image is resized so that the network sees its working size (short side = the training "
        "images' data.short_size by default), the arrows are mapped into that frame, and the flow is mapped back to the "
        "image's pixels. A discrete network's range is +-fmax (50) px per axis at its working size.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  motionprop propagate --checkpoint ckpt --image photo.jpg --arrow 900,500,40,-10 "
        "--still 300,800 --out-flow flow.flo --out-vis flow.png")
    _add_model_options(p)
    p.add_argument("--image", required=True, help="input image (any size)")
    _add_guidance_options(p)
    p.add_argument("--out-flow", metavar="F.flo", help="write the flow (.flo, .png KITTI, .npy or .npz)")
    p.add_argument("--out-vis", metavar="V.png",
                   help="write the image with its arrows beside the flow in the Middlebury colours")
    p.add_argument("--out-guidance", metavar="G.json", help="write the arrows and still points as a guidance "
                   "file, to replay the scene (also in the web app)")
    p.add_argument("--out-confidence", metavar="C.png", help="write the confidence (1 - normalized entropy of "
                   "the bin distributions, discrete networks) as a gray PNG; --out-vis then shows it too")
    p.add_argument("--max-flow", type=float, metavar="PX", help="fixed colour scale of the picture: flow of "
                   "this length in pixels is fully saturated (default: the largest flow)")
    _add_dominant_motion_option(p)
    p.set_defaults(func=run_propagate)

    p = subparsers.add_parser(
        "animate", help="a short clip of an image moving as the arrows say",
        description="Propagate the arrows to a dense flow, then render frames of the image forward-warped "
        "by the flow scaled from 0 to 1 (forward) or 0 to 1 and back (loop): larger motions are drawn in "
        "front (softmax splatting), disoccluded pixels are inpainted. Writes GIF, MP4 (PyAV) or PNG frames.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  motionprop animate --checkpoint ckpt --image photo.jpg --arrow 900,500,40,-10 "
        "--mode loop --out clip.gif --out clip.mp4")
    _add_model_options(p)
    p.add_argument("--image", required=True, help="input image")
    _add_guidance_options(p)
    p.add_argument("--frames", type=int, default=24, help="number of frames (default: 24)")
    p.add_argument("--mode", choices=("forward", "loop"), default="forward",
                   help="forward: 0 -> full motion; loop: there and back, repeating seamlessly (default: forward)")
    p.add_argument("--fps", type=float, default=12.0, help="frames per second (default: 12)")
    p.add_argument("--max-side", type=int, metavar="PX", help="render at most this many pixels on the long side")
    p.add_argument("--out", action="append", required=True, metavar="OUT",
                   help="OUT.gif, OUT.mp4 or OUT_DIR/ (PNG frames); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_dominant_motion_option(p)
    p.set_defaults(func=run_animate)

    p = subparsers.add_parser(
        "annotate", help="object masks from clicks",
        description="Turn clicks on an object into its mask (the paper's semi-automatic annotation): every "
        "positive click is probed with a fixed velocity in four directions, negative clicks stay still, and "
        "the mask is where the mean |flow| of the four probes, divided by its maximum, exceeds the threshold. "
        "Batch mode (--batch) reads a JSON of images with clicks for several objects each; see docs/apps.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  motionprop annotate --checkpoint ckpt --image photo.jpg --positive 900,500 950,700 "
        "--negative 300,800 --out mask.png --overlay overlay.png\n"
        "  motionprop annotate --checkpoint ckpt --batch clicks.json --out masks/ --coco masks.json")
    _add_model_options(p)
    p.add_argument("--image", help="input image (single mode)")
    p.add_argument("--positive", action="extend", nargs="+", default=[], metavar="X,Y",
                   help="a click on the object; repeatable")
    p.add_argument("--negative", action="extend", nargs="+", default=[], metavar="X,Y",
                   help="a click outside the object (a still point); repeatable")
    p.add_argument("--batch", metavar="CLICKS.json", help="batch mode: images with clicks of several objects")
    p.add_argument("--out", required=True, help="MASK.png (single mode) or an output folder (batch mode)")
    p.add_argument("--overlay", metavar="O.png", help="single mode: write the mask over the image")
    p.add_argument("--overlays", action="store_true", help="batch mode: write NAME_overlay.png per image")
    p.add_argument("--coco", metavar="OUT.json", help="write a COCO-style JSON with RLE masks")
    p.add_argument("--indexed", action="store_true",
                   help="batch mode: one label PNG per image (pixel value = object number) instead of one PNG "
                   "per object")
    p.add_argument("--out-score", metavar="S.png", help="single mode: write the score map (gray)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask threshold on the normalized score "
                   "(default: 0.5)")
    p.add_argument("--velocity", type=float, default=30.0,
                   help="probe speed in pixels of the working size (default: 30, as the original demo)")
    p.add_argument("--border-still", action=argparse.BooleanOptionalAction, default=None,
                   help="add still points all along the image's border, one every 1/12 of its short side "
                   "(default: only for "
                   "residual networks, whose interpolated guidance moves the whole image with one click)")
    p.add_argument("--border-per-side", type=float, metavar="N",
                   help="border still points per short side of the image (default: 12, chosen on synthetic "
                   "objects of about 5 %% of the frame; fewer, e.g. 3-6, leave larger masks for large objects)")
    p.add_argument("--zoom", type=float, nargs="?", const=4.0, metavar="FACTOR",
                   help="zoom in on small objects: run on a crop FACTOR times the clicks' extent "
                   "(default factor 4; needs at least two clicks)")
    p.add_argument("--refine", choices=REFINE_METHODS, default="none",
                   help="grabcut: snap the motion mask to the image's colours with OpenCV's GrabCut (not the "
                   "paper's method; measured in docs/apps.md). Default: none, the paper's mask")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (batch mode)")
    p.set_defaults(func=run_annotate)


# --------------------------------------------------------------------------- shared helpers


def _load_propagator(args: argparse.Namespace) -> Any:
    """Load the checkpoint (an error if it is not a full CMP network) and wrap it (channels-last: faster queries)."""
    from ..apps.propagate import Propagator
    from ..checkpoint import load_model

    model = load_model(args.checkpoint, args.config, device=args.device)
    return Propagator(model, working_size=args.working_size, channels_last=True, precision=args.precision,
                      dominant_motion=getattr(args, "dominant_motion", False))


def _check_model_inputs(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..errors import InputError
    from ..hub import resolve_checkpoint
    from ..train.distributed import check_device

    args.checkpoint = resolve_checkpoint(args.checkpoint)
    if not Path(args.checkpoint).exists():
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    if args.working_size is not None and args.working_size < 8:
        raise InputError(f"--working-size must be at least 8, got {args.working_size}")
    args.device = str(check_device(args.device))


def _input_paths(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(option, path) of every file a command reads: no output may be one of them."""
    from pathlib import Path

    from ..checkpoint import CONFIG_FILE, WEIGHTS_FILE

    inputs = [("--image", getattr(args, "image", None)), ("--guidance", getattr(args, "guidance", None)),
              ("--batch", getattr(args, "batch", None)), ("--config", args.config),
              ("--checkpoint", args.checkpoint)]
    if Path(args.checkpoint).is_dir():
        inputs += [("--checkpoint", Path(args.checkpoint) / name) for name in (WEIGHTS_FILE, CONFIG_FILE)]
    return inputs


def _read_guidance(args: argparse.Namespace, width: int, height: int) -> Any:
    from ..apps.guidance_file import Guidance, guidance_from_args, read_guidance
    from ..errors import InputError

    guidance = Guidance()
    if args.guidance:
        guidance, _, _ = read_guidance(args.guidance, image_size=(width, height))
    guidance = guidance.merged(guidance_from_args(args.arrow, args.still))
    if len(guidance) == 0:
        raise InputError("no guidance: give --arrow X,Y,DX,DY (and --still X,Y) or --guidance FILE.json")
    guidance.check_inside(width, height, args.image)
    return guidance


def _check_output(path: str, suffixes: tuple[str, ...], option: str) -> None:
    from pathlib import Path

    from ..errors import InputError

    if Path(path).suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: use one of {', '.join(suffixes)}")


@contextlib.contextmanager
def _plain_warnings() -> Iterator[None]:
    """Show warnings (an arrow beyond the network's range) as one plain line each, inside the block."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


# --------------------------------------------------------------------------- propagate


def run_propagate(args: argparse.Namespace) -> int:
    import numpy as np

    from ..apps.guidance_file import write_guidance
    from ..apps.propagate import flow_picture, load_image, write_rgb
    from ..errors import InputError
    from ..fileio import check_outputs

    _check_model_inputs(args)
    outputs = [args.out_flow, args.out_vis, args.out_guidance, args.out_confidence]
    if not any(outputs):
        raise InputError("nothing to write: give --out-flow, --out-vis, --out-guidance or --out-confidence")
    if args.out_flow:
        _check_output(args.out_flow, (".flo", ".png", ".npy", ".npz"), "--out-flow")
    for option, path in (("--out-vis", args.out_vis), ("--out-confidence", args.out_confidence)):
        if path:
            _check_output(path, (".png", ".jpg", ".jpeg"), option)
    if args.out_guidance:
        _check_output(args.out_guidance, (".json",), "--out-guidance")
    if args.max_flow is not None and not 0 < args.max_flow < math.inf:
        raise InputError(f"--max-flow must be a positive number of pixels, got {args.max_flow}")
    check_outputs([("--out-flow", args.out_flow), ("--out-vis", args.out_vis),
                   ("--out-guidance", args.out_guidance), ("--out-confidence", args.out_confidence)],
                  _input_paths(args))
    image = load_image(args.image)
    height, width = image.shape[:2]
    guidance = _read_guidance(args, width, height)

    propagator = _load_propagator(args)
    want_confidence = bool(args.out_confidence)
    if want_confidence and propagator.model.bins is None:
        raise InputError(f"--out-confidence needs a discrete (bin) network; {args.checkpoint} regresses flow")
    propagator.set_image(image)
    with _plain_warnings():
        result = propagator.propagate(guidance.arrows, guidance.still_points, return_confidence=want_confidence)
    flow, confidence = result if want_confidence else (result, None)
    if not np.isfinite(flow).all():
        raise InputError("the network's flow is not finite for this guidance: nothing written")
    # Every picture is made before any file is written: a failure leaves no partial set of outputs.
    vis = flow_picture(image, flow, guidance, args.max_flow, confidence) if args.out_vis else None

    if args.out_flow:
        from ..data.flow_io import write_flow

        write_flow(args.out_flow, flow)
        print(f"wrote {args.out_flow}")
    if args.out_vis:
        write_rgb(args.out_vis, vis)
        print(f"wrote {args.out_vis}")
    if args.out_confidence:
        write_rgb(args.out_confidence, np.round(confidence * 255).astype(np.uint8))
        print(f"wrote {args.out_confidence}")
    if args.out_guidance:
        from pathlib import Path

        write_guidance(args.out_guidance, guidance, (width, height), Path(args.image).name)
        print(f"wrote {args.out_guidance}")
    wh, ww = propagator.working_shape
    speed = (flow ** 2).sum(-1) ** 0.5
    print(f"flow {width}x{height} (network at {ww}x{wh}): max {speed.max():.1f} px, mean {speed.mean():.2f} px")
    return 0


# --------------------------------------------------------------------------- animate


def run_animate(args: argparse.Namespace) -> int:
    from ..apps.animate import animate, check_writer, flow_scales, write_animation
    from ..apps.propagate import load_image
    from ..errors import InputError
    from ..fileio import check_outputs

    _check_model_inputs(args)
    flow_scales(args.frames, args.mode)
    if not 0 < args.fps <= 1000:
        raise InputError(f"--fps must be in (0, 1000], got {args.fps}")
    if args.max_side is not None and args.max_side < 16:
        raise InputError(f"--max-side must be at least 16, got {args.max_side}")
    for out in args.out:
        check_writer(out)
    check_outputs([("--out", out) for out in args.out], _input_paths(args))
    image = load_image(args.image)
    height, width = image.shape[:2]
    guidance = _read_guidance(args, width, height)

    propagator = _load_propagator(args)
    propagator.set_image(image)
    with _plain_warnings():
        frames = animate(propagator, guidance.arrows, guidance.still_points, args.frames, args.mode,
                         max_side=args.max_side, progress=not args.no_progress)
    for out in args.out:
        write_animation(out, frames, args.fps, keep=[p for _, p in _input_paths(args) if p])
        print(f"wrote {out} ({len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]}, {args.fps:g} fps)")
    return 0


# --------------------------------------------------------------------------- annotate


def _click_points(values: list[str], option: str) -> Any:
    import numpy as np

    from ..apps.guidance_file import parse_numbers

    return np.array([parse_numbers(v, 2, option) for v in values], dtype=np.float64).reshape(-1, 2)


def run_annotate(args: argparse.Namespace) -> int:
    from ..errors import InputError

    _check_model_inputs(args)
    if not 0 <= args.threshold < 1:
        raise InputError(f"--threshold must be in [0, 1), got {args.threshold}")
    if not 0 < args.velocity < math.inf:
        raise InputError(f"--velocity must be a positive number of pixels, got {args.velocity}")
    if args.zoom is not None and not 1 < args.zoom < math.inf:
        raise InputError(f"--zoom must be a factor above 1 (the crop is FACTOR times the clicks' extent), "
                         f"got {args.zoom}")
    if args.coco:
        _check_output(args.coco, (".json",), "--coco")
    if args.batch:
        if args.image or args.positive or args.negative or args.out_score or args.overlay:
            raise InputError("--batch takes the images and clicks from its file: drop --image, --positive, "
                             "--negative, --overlay and --out-score")
        return _annotate_batch(args)
    if args.indexed or args.overlays:
        raise InputError("--indexed and --overlays are for batch mode (--batch)")
    if not args.image:
        raise InputError("give --image with --positive clicks, or --batch CLICKS.json")
    return _annotate_single(args)


def _annotate_single(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..apps.annotate import annotate, overlay, write_mask
    from ..apps.coco import CocoWriter
    from ..apps.guidance_file import Guidance
    from ..apps.propagate import load_image, write_rgb
    from ..errors import InputError
    from ..fileio import check_outputs

    _check_output(args.out, (".png",), "--out")
    for option, path in (("--overlay", args.overlay), ("--out-score", args.out_score)):
        if path:
            _check_output(path, (".png", ".jpg", ".jpeg"), option)
    check_outputs([("--out", args.out), ("--overlay", args.overlay), ("--out-score", args.out_score),
                   ("--coco", args.coco)], _input_paths(args))
    positive = _click_points(args.positive, "--positive")
    negative = _click_points(args.negative, "--negative")
    if len(positive) == 0:
        raise InputError("no positive click: give --positive X,Y (a point on the object)")
    image = load_image(args.image)
    height, width = image.shape[:2]
    Guidance(np.zeros((0, 4)), np.concatenate([positive, negative])).check_inside(width, height, args.image)

    propagator = _load_propagator(args)
    propagator.set_image(image)
    result = annotate(propagator, positive, negative, velocity=args.velocity, threshold=args.threshold,
                      border_still=args.border_still, border_per_side=args.border_per_side, zoom=args.zoom,
                      refine=args.refine)
    write_mask(args.out, result.mask)
    print(f"wrote {args.out} ({int(result.mask.sum())} pixels, {100 * result.mask.mean():.1f} % of the image"
          f"{', zoomed on box ' + str(result.zoom_box) if result.zoom_box else ''})")
    if args.overlay:
        write_rgb(args.overlay, overlay(image, result.mask, positive, negative))
        print(f"wrote {args.overlay}")
    if args.out_score:
        write_rgb(args.out_score, np.round(result.score * 255).astype(np.uint8))
        print(f"wrote {args.out_score}")
    if args.coco:
        coco = CocoWriter()
        image_id = coco.add_image(Path(args.image).name, width, height)
        coco.add_mask(image_id, result.mask, "object",
                      {"clicks": {"positive": positive.tolist(), "negative": negative.tolist()}})
        coco.write(args.coco)
        print(f"wrote {args.coco}")
    return 0


def _annotate_batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..apps.annotate import annotate_batch, read_batch
    from ..errors import InputError

    if Path(args.out).suffix.lower() in (".png", ".jpg", ".json"):
        raise InputError(f"--out {args.out}: batch mode writes into a folder, not a file")
    images = read_batch(args.batch)
    propagator = _load_propagator(args)
    summary = annotate_batch(propagator, images, args.out, indexed=args.indexed, coco_path=args.coco,
                             overlays=args.overlays, velocity=args.velocity, threshold=args.threshold,
                             zoom=args.zoom, border_still=args.border_still,
                             border_per_side=args.border_per_side, refine=args.refine,
                             progress=not args.no_progress)
    print(f"annotated {summary.objects} objects in {summary.images} images: {len(summary.masks)} PNGs in "
          f"{args.out}{', ' + str(summary.coco) if summary.coco else ''}")
    return 0
