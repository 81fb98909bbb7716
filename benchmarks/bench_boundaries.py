"""Can an image encoder learn motion boundaries from one image, for a geodesic fill to use?

The geodesic fill (``model.residual_base: geodesic``) spreads guidance less
across the image's colour edges. With the true flow's motion boundaries as its
edges (``bench_fills.py --oracle``) it would be far better; this measures how
much of that a learned boundary map gives.

``train``: a boundary head (3x3 conv, ReLU, 1x1 conv at stride 8) on an image
encoder (``--backbone random`` for the pretrain config's fresh ResNet-18, or a
checkpoint's encoder), both trained with SGD on crops of the given pair lists,
target = the soft motion boundaries of the training flow (the gradient
magnitude of the Gaussian-smoothed flow / 0.5 px per px, capped at 1),
per-pixel binary cross-entropy at full resolution. ``score``: geodesic IDW-4
fills of ``bench_real_motion.py``'s pairs with cost ``1 + W x boundary``, alone
and added to the colour cost (weight 40), against the colour cost alone.

    python benchmarks/bench_boundaries.py train --out bnd.pt --lists DATA/lists/train.txt REAL/gap3/lists/train.txt
    python benchmarks/bench_boundaries.py score bnd.pt --davis CLIPS --weights 4,16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

BOUNDARY_SCALE = 0.5  # px of flow per px: a gradient this large counts as a full boundary
CONFIGS = ROOT / "src" / "motionprop" / "configs"


def boundary_net(backbone: str) -> nn.Module:
    """Image encoder (256 channels at stride 8) + boundary head -> logits (B,1,H/8,W/8)."""
    from motionprop import load_model
    from motionprop.config import load_config
    from motionprop.models.factory import create_model

    if backbone == "random":
        encoder = create_model(load_config(CONFIGS / "pretrain.yaml")).image_encoder
    else:
        encoder = load_model(backbone).image_encoder
    head = nn.Sequential(nn.Conv2d(256, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1))
    return nn.Sequential(encoder, head)


def soft_boundaries(flow: torch.Tensor) -> torch.Tensor:
    """flow (B,2,H,W) -> (B,1,H,W) in [0, 1]: its smoothed gradient magnitude / BOUNDARY_SCALE, capped at 1."""
    from bench_fills import motion_boundaries

    return (motion_boundaries(flow) / BOUNDARY_SCALE).clamp(max=1.0)


def train(args: argparse.Namespace) -> int:
    from motionprop.config import load_config
    from motionprop.data.dataset import ImageFlowDataset

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIGS / "long.yaml")
    data = ImageFlowDataset([str(p) for p in args.lists], cfg.data, train=True, seed=args.seed, load_image2=False)
    net = boundary_net(args.backbone).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    start = time.monotonic()
    for it in range(args.iters):
        if it == int(args.iters * 0.8):
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        items = [data[(int(i), it)] for i in rng.integers(0, len(data), cfg.data.batch_size)]
        image = torch.stack([x["image"] for x in items])
        flow, valid = torch.stack([x["flow"] for x in items]), torch.stack([x["valid"] for x in items])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = net(image)
        logits = F.interpolate(logits.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        loss = (F.binary_cross_entropy_with_logits(logits, soft_boundaries(flow), reduction="none") * valid).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 100 == 0 or it == args.iters - 1:
            print(f"iter {it}: loss {loss.item():.4f} ({time.monotonic() - start:.0f} s)", flush=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save({"backbone": args.backbone, "state": net.state_dict()}, tmp)
    tmp.replace(args.out)
    print(f"saved {args.out}")
    return 0


def score(args: argparse.Namespace) -> int:
    import bench_real_motion as real

    from motionprop.config import load_config
    from motionprop.models.geodesic import edge_cost, geodesic_idw

    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIGS / "long.yaml")
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    nets = {}
    for path in args.nets:
        saved = torch.load(path, map_location="cpu")
        net = boundary_net("random")
        net.load_state_dict(saved["state"])
        nets[Path(path).stem] = net.eval()
    pairs = real.make_pairs(real.clip_folders(args.davis, None), 192, 2, 4, args.davis / ".bench_cache")
    weights = [float(w) for w in args.weights.split(",")]
    print(f"{len(pairs)} pairs from {args.davis}")
    for density in args.densities.split(","):
        errors: dict[str, list[float]] = {}
        for pair, flow, sparse in real.pair_tensors(pairs, density, 0):
            sparse = sparse[None]
            image = torch.from_numpy(pair["image"]).permute(2, 0, 1)[None].float()
            colour = edge_cost(image / 255, 40.0)
            errors.setdefault("colour 40", []).append(real.epe(geodesic_idw(sparse, colour, power=4.0)[0], flow))
            height, width = image.shape[-2:]
            x = F.pad((image - mean) / std, (0, (-width) % 8, 0, (-height) % 8))
            for name, net in nets.items():
                with torch.no_grad():
                    logits = F.interpolate(net(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
                boundary = torch.sigmoid(logits[..., :height, :width])
                for w in weights:
                    for label, cost in ((f"{name} W{w:g}", 1 + w * boundary),
                                        (f"{name} W{w:g} + colour", colour + w * boundary)):
                        errors.setdefault(label, []).append(real.epe(geodesic_idw(sparse, cost, power=4.0)[0], flow))
        print(f"{density}: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in errors.items()), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a boundary net")
    t.add_argument("--out", type=Path, required=True, help="the .pt file to write")
    t.add_argument("--lists", type=Path, nargs="+", required=True, help="pair lists (prepare/synth lists/*.txt)")
    t.add_argument("--backbone", default="random", help="'random' or a checkpoint whose image encoder to start from")
    t.add_argument("--iters", type=int, default=1500)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast")
    t.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("score", help="geodesic fills with learned boundaries on DAVIS-layout clips")
    s.add_argument("nets", nargs="+", help=".pt files from train")
    s.add_argument("--davis", type=Path, required=True, help="DAVIS-layout root (JPEGImages/<clip>/*.jpg)")
    s.add_argument("--densities", default="20", help="of 1, 20, dense")
    s.add_argument("--weights", default="4,16", help="boundary weights W")
    s.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for path in getattr(args, "lists", []) + [Path(p) for p in getattr(args, "nets", [])]:
        if not path.is_file():
            parser.error(f"not found: {path}")
    if getattr(args, "backbone", "random") != "random":
        from motionprop import load_model
        from motionprop.errors import MotionpropError

        try:
            load_model(args.backbone)
        except MotionpropError as exc:
            parser.error(f"--backbone {args.backbone}: {exc}")
    return train(args) if args.command == "train" else score(args)


if __name__ == "__main__":
    raise SystemExit(main())
