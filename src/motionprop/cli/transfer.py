"""The ``transfer`` command: label propagation and a linear probe on DAVIS with frozen encoders."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Does pre-training help? Score frozen image encoders on DAVIS clips with two transfer tasks:
  propagation  each frame's masks from the first frame's ground truth and the previous frames'
               predictions, by feature affinity (DINO's protocol: first + N previous frames, top-k,
               square window of R cells, temperature);
  probe        a linear foreground/background layer on the features, trained on the other clips
               and scored on the held-out one (leave-one-clip-out, class-balanced, L-BFGS).
J (region IoU), F (boundary F-measure) and J&F as davis2017-evaluation defines them, first and last
frames not scored. Every table also holds copy-first-frame and random init (3 seeds of each
architecture evaluated). Features: ResNet layer4 (layer3 for the _l3 ResNets without layer4), AlexNet-BN
conv5 (--features previous: the layer before, e.g. layer3, conv4), all at stride 8.

ENCODER: a motionprop checkpoint folder (or its model.safetensors, or the output of 'convert'),
an original ckpt_iter_N.pth.tar with its config.yaml, an 'export-encoder' file (.safetensors or
torchvision .pth), or random:ARCH[:SEEDS] (e.g. random:resnet18:0,1,2; the seeds are averaged).

Writes DIR/results.json, DIR/results.md and DIR/pictures/ (ground truth | prediction).
Every encoder run (one per random seed) is kept (--cache) and reused by later commands on the same
clips and settings: random init is computed once, so scoring another checkpoint takes one run, and
a command stopped half-way resumes from the runs it had finished."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``transfer`` sub-command."""
    from ..evaluation.encoders import DEFAULT_RANDOM_SEEDS
    from ..evaluation.probe import ProbeConfig
    from ..evaluation.propagation import PropagationConfig

    prop, probe = PropagationConfig(), ProbeConfig()
    p = subparsers.add_parser("transfer", help="transfer benchmark on DAVIS: label propagation and a linear probe",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoders", nargs="+", metavar="ENCODER", help="encoders to score, in table order")
    p.add_argument("--davis", required=True, metavar="ROOT",
                   help="DAVIS folder: JPEGImages/[480p/]<clip>/*.jpg and Annotations/[480p/]<clip>/*.png")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; its results are replaced)")
    p.add_argument("--clips", help="comma-separated clip names (default: every clip in ROOT)")
    p.add_argument("--task", choices=("propagation", "probe", "all"), default="all", help="what to run (default: all)")
    p.add_argument("--size", type=int, default=240, metavar="SHORT_SIDE",
                   help="frames are resized so their short side is this many pixels (default: 240); "
                        "scoring is at the masks' own size")
    p.add_argument("--context-frames", type=int, default=prop.context_frames,
                   help=f"previous frames used besides the first (default: {prop.context_frames})")
    p.add_argument("--topk", type=int, default=prop.topk, help=f"context cells averaged per cell (default: {prop.topk})")
    p.add_argument("--radius", type=int, default=prop.radius,
                   help=f"window half-size in feature cells; -1 for none (default: {prop.radius})")
    p.add_argument("--temperature", type=float, default=prop.temperature,
                   help=f"softmax temperature of cosine affinities (default: {prop.temperature})")
    p.add_argument("--probe-samples", type=int, default=probe.samples_per_clip,
                   help=f"training cells sampled per clip for the probe (default: {probe.samples_per_clip})")
    p.add_argument("--probe-iterations", type=int, default=probe.iterations,
                   help=f"L-BFGS iterations of the probe's fit (default: {probe.iterations}; more checks that "
                        f"the fit has converged)")
    p.add_argument("--probe-folds", type=int, default=probe.folds, metavar="K",
                   help="hold out K groups of clips in turn (clip i in group i mod K) instead of each clip alone "
                        "(default: 0, leave-one-clip-out). Leave-one-clip-out fits one probe per clip on all the "
                        "others, so its time grows with the square of the number of clips: with many (DAVIS-2017 "
                        "val has 30), K = 5 fits five")
    p.add_argument("--random-seeds", default=",".join(map(str, DEFAULT_RANDOM_SEEDS)),
                   help="seeds of the random-init baseline added for each architecture (default: 0,1,2)")
    p.add_argument("--no-random-baseline", action="store_true",
                   help="do not add random init of each pre-trained encoder's architecture")
    p.add_argument("--pictures", type=int, default=3, help="frames drawn per clip and task (default: 3; 0 for none)")
    p.add_argument("--features", choices=("last", "previous"), default="last",
                   help="layer read from every encoder: last = ResNet layer4 (layer3 for _l3 ResNets) / AlexNet "
                   "conv5 (default); previous = the layer before: ResNet layer3 (layer2) / AlexNet conv4 (CRW's "
                   "protocol reads ResNet layer3)")
    p.add_argument("--cache", metavar="DIR",
                   help="folder where encoder runs are kept for later commands on the same clips and settings "
                        "(default: $MOTIONPROP_CACHE_DIR, else $XDG_CACHE_HOME/motionprop, else ~/.cache/motionprop; "
                        "then transfer/)")
    p.add_argument("--no-cache", action="store_true", help="compute every run again and keep nothing")
    p.add_argument("--device", default="auto",
                   help="where features and label propagation run: auto (default: CUDA if present), cpu, cuda, "
                        "cuda:1, ...; the probe runs on the CPU")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="the encoders' forward pass: fp32 (default, the numbers in docs/transfer.md), bf16 autocast "
                        "(about half the feature time on CPUs with native bf16 and on GPUs; scores move a little, "
                        "docs/transfer.md 'Cost'), or auto (bf16 where native); label propagation and the probe "
                        "stay float32")
    p.add_argument("--batch-size", type=int, default=4, help="frames per encoder forward pass (default: 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_transfer_command)


def run_transfer_command(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..errors import InputError
    from ..evaluation.benchmark import TASKS, TransferSettings, run_transfer
    from ..evaluation.cache import default_cache_dir
    from ..evaluation.probe import ProbeConfig
    from ..evaluation.propagation import PropagationConfig
    from ..train.distributed import pick_device

    try:
        seeds = tuple(int(s) for s in args.random_seeds.split(","))
    except ValueError:
        raise InputError(f"--random-seeds {args.random_seeds!r}: give integers separated by commas") from None
    if args.batch_size < 1 or args.probe_samples < 1 or args.probe_iterations < 1 or args.pictures < 0:
        raise InputError("--batch-size, --probe-samples and --probe-iterations must be positive; --pictures must be >= 0")
    settings = TransferSettings(
        tasks=TASKS if args.task == "all" else (args.task,),
        short_side=args.size,
        propagation=PropagationConfig(context_frames=args.context_frames, topk=args.topk, radius=args.radius,
                                      temperature=args.temperature),
        probe=ProbeConfig(samples_per_clip=args.probe_samples, iterations=args.probe_iterations,
                          folds=args.probe_folds),
        random_baseline=not args.no_random_baseline,
        random_seeds=seeds,
        pictures_per_clip=args.pictures,
        batch_size=args.batch_size,
        features=args.features,
        precision=args.precision,
    )
    clips = [c for c in args.clips.split(",") if c] if args.clips else None
    if args.cache and args.no_cache:
        raise InputError("give --cache DIR or --no-cache, not both")
    device = pick_device(args.device)
    cache = None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir()
    results = run_transfer(args.davis, args.out, args.encoders, clips, settings, progress=not args.no_progress,
                           log=lambda s: print(s, file=sys.stderr), cache_dir=cache, device=device)
    for entry in results["encoders"]:
        scores = ", ".join(f"{t} J&F {100 * r['mean']['JF']:.1f}" for t, r in entry["tasks"].items())
        print(f"{entry['name']}: {scores}")
    for name, entry in results["baselines"].items():
        print(f"{name}: propagation J&F {100 * entry['tasks']['propagation']['mean']['JF']:.1f}")
    print(f"wrote {args.out}/results.json, results.md and pictures/")
    return 0
