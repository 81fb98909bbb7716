"""Can a small network choose, region by region, which non-learned fill of the guidance to trust?

On held-out real video the non-learned fills of ``bench_fills.py`` win in different places (the
watershed on DAVIS's salient objects, IDW on mostly still clips): picking the best of five fills
per image, knowing the truth, would give 3.35 px at 20 points on DAVIS, and per 8x8 cell 2.84,
against the geodesic fill's 4.375 (``oracle``). This measures how much of that a gate learns: a
small convolutional network sees the image, the five fills (IDW-4, geodesic 40, geodesic 160,
watershed, blend 40), the distance to the nearest guidance point and the guidance mask, and
outputs softmax weights over the fills per stride-8 cell (bilinearly upsampled); the prediction is
the weighted sum of the fills, trained on the end-point error. ``--features CKPT`` also gives it a
frozen encoder's layer3 features (e.g. a CMP-pretrained one).

    python benchmarks/bench_gate.py cache --out fills.pt --lists QS/data/lists/train.txt QS/real/gap3/lists/train.txt
    python benchmarks/bench_gate.py train --data fills.pt --out gate.pt [--features CKPT]
    python benchmarks/bench_gate.py score gate.pt --davis ../shared/data/davis2016
    python benchmarks/bench_gate.py oracle --davis ../shared/data/davis2016

``cache`` draws crops of the long recipe's data pipeline (128 px, with its augmentation) and
guidance of our sampler at the benchmark's densities (1 point a quarter of the time, 20 half, dense
a quarter), and stores the fills, so training is only the gate.
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

import bench_fills as fills  # noqa: E402
import bench_real_motion as real  # noqa: E402

FILLS = ("IDW-4", "geodesic 40", "geodesic 160", "watershed", "blend 40")
CONFIGS = ROOT / "src" / "motionprop" / "configs"


def candidate_fills(image: np.ndarray, sparse: torch.Tensor) -> torch.Tensor:
    """RGB uint8 (H,W,3), guidance (4,H,W) -> (2 x 5 + 2, H, W): the five fills, distance / 64 (capped), mask."""
    found, distance = fills.image_fills(image, sparse, radii=(40.0,), weights=(40.0, 160.0))
    return torch.cat([found[name] for name in FILLS] + [(distance / 64).clamp(max=1.0), sparse[2:3]])


class Gate(nn.Module):
    """Image + candidate fills (+ frozen features) -> softmax weights over the fills per stride-8 cell."""

    def __init__(self, fills: int = len(FILLS), width: int = 48, feature_dim: int = 0):
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Module:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.fills, self.feature_dim = fills, feature_dim
        w2 = 2 * width
        self.features_in = (nn.Sequential(nn.BatchNorm2d(feature_dim), nn.Conv2d(feature_dim, w2, 1), nn.ReLU())
                            if feature_dim else None)
        self.body = nn.Sequential(block(3 + 2 * fills + 2, width, 2), block(width, width), block(width, w2, 2),
                                  block(w2, w2), block(w2, w2, 2), block(w2, w2, 1, 2), block(w2, w2, 1, 4))
        self.head = nn.Sequential(block(w2 * (3 if feature_dim else 2), w2), nn.Conv2d(w2, fills, 1))

    def forward(self, image: torch.Tensor, extra: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """image (B,3,H,W) normalized, extra (B,2K+2,H,W) from :func:`candidate_fills` -> flow (B,2,H,W)."""
        candidates = extra[:, :2 * self.fills]
        h = self.body(torch.cat([image, candidates / 10, extra[:, 2 * self.fills:]], 1))
        parts = [h, h.mean(dim=(2, 3), keepdim=True).expand_as(h)]  # the whole image's context in every cell
        if self.features_in is not None:
            parts.append(self.features_in(features.float())[..., :h.shape[-2], :h.shape[-1]])
        logits = F.interpolate(self.head(torch.cat(parts, 1)), size=image.shape[-2:], mode="bilinear",
                               align_corners=False)
        b, _, height, width = candidates.shape
        return (logits.softmax(1)[:, :, None] * candidates.view(b, self.fills, 2, height, width)).sum(1)


def layer3_encoder(checkpoint: str) -> nn.Module:
    """The frozen stride-8 features ``motionprop transfer --features previous`` reads from ``checkpoint``."""
    from motionprop.evaluation.encoders import at_layer, load_encoders, parse_encoder

    return at_layer(load_encoders(parse_encoder(checkpoint))[0], "previous").features.eval()


def data_config():
    """The long recipe's data config: its crops, augmentation and image normalization."""
    from motionprop.config import load_config

    return load_config(CONFIGS / "long.yaml").data


def normalization(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3, 1, 1) mean and std that normalize a 0-255 image for the network, as the data pipeline does."""
    return torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)


def cache(args: argparse.Namespace) -> int:
    from motionprop.data.dataset import ImageFlowDataset

    cfg = data_config()
    data = ImageFlowDataset([str(p) for p in args.lists], cfg, train=True, seed=args.seed, load_image2=False)
    mean, std = normalization(cfg)
    rng = np.random.default_rng(args.seed)
    stored: dict[str, list[torch.Tensor]] = {"image": [], "extra": [], "flow": [], "valid": []}
    start = time.monotonic()
    for n in range(args.samples):
        item = data[(int(rng.integers(len(data))), n)]
        image, flow = item["image"], item["flow"]
        rgb = (image * std + mean).round().clamp(0, 255).byte().permute(1, 2, 0).numpy().copy()
        density = rng.choice(["1", "20", "20", "dense"])
        sparse = torch.from_numpy(real.guidance(flow.permute(1, 2, 0).numpy().copy(), density, n))
        if not (sparse[2] > 0).any():
            continue
        for key, value in (("image", image), ("extra", candidate_fills(rgb, sparse).half()),
                           ("flow", flow.half()), ("valid", item["valid"])):
            stored[key].append(value)
        if n % 500 == 0:
            print(f"{n}/{args.samples} crops ({time.monotonic() - start:.0f} s)", flush=True)
    _save({k: torch.stack(v) for k, v in stored.items()}, args.out)
    return 0


def train(args: argparse.Namespace) -> int:
    data = torch.load(args.data)
    count = data["image"].shape[0]
    features = None
    if args.features:
        encoder = layer3_encoder(args.features)
        with torch.no_grad():
            features = torch.cat([encoder(data["image"][i:i + 32]).half() for i in range(0, count, 32)])
    torch.manual_seed(args.seed)  # after the encoder, whose loading draws random numbers
    net = Gate(feature_dim=0 if features is None else features.shape[1]).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=1e-5)
    rng = np.random.default_rng(args.seed)
    sign = torch.ones(2 * len(FILLS) + 2)
    sign[0:2 * len(FILLS):2] = -1  # a horizontal flip negates every fill's u
    start = time.monotonic()
    for it in range(args.iters):
        if it == int(args.iters * 0.8):
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        index = torch.from_numpy(rng.integers(0, count, args.batch))
        image, extra = data["image"][index], data["extra"][index].float()
        flow, valid = data["flow"][index].float(), data["valid"][index]
        feats = None if features is None else features[index]
        flip = rng.random() < 0.5
        if flip and features is None:  # (frozen features of a flipped image are not flipped features)
            image, extra, flow, valid = image.flip(-1), extra.flip(-1) * sign.view(1, -1, 1, 1), flow.flip(-1), valid.flip(-1)
            flow = flow * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
        loss = ((net(image, extra, feats) - flow).norm(dim=1, keepdim=True) * valid).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 100 == 0 or it == args.iters - 1:
            print(f"iter {it}: loss {loss.item():.3f} ({time.monotonic() - start:.0f} s)", flush=True)
    _save({"state": net.state_dict(), "features": args.features, "feature_dim": net.feature_dim}, args.out)
    return 0


def score(args: argparse.Namespace) -> int:
    mean, std = normalization(data_config())
    gates = {}
    for path in args.gates:
        saved = torch.load(path)
        net = Gate(feature_dim=saved["feature_dim"])
        net.load_state_dict(saved["state"])
        gates[Path(path).stem] = (net.eval(), layer3_encoder(saved["features"]) if saved["features"] else None)
    pairs = real.make_pairs(real.clip_folders(args.davis, None), 192, 2, 4, args.davis / ".bench_cache")
    print(f"{len(pairs)} pairs from {args.davis}")
    for density in args.densities.split(","):
        errors: dict[str, list[float]] = {}
        for pair, flow, sparse in real.pair_tensors(pairs, density, 0):
            extra = candidate_fills(pair["image"], sparse)
            image = (torch.from_numpy(pair["image"]).permute(2, 0, 1).float() - mean) / std
            for i, name in enumerate(FILLS):
                errors.setdefault(name, []).append(real.epe(extra[2 * i:2 * i + 2], flow))
            for name, (net, encoder) in gates.items():
                with torch.no_grad():
                    feats = encoder(image[None]) if encoder is not None else None
                    errors.setdefault(name, []).append(real.epe(net(image[None], extra[None], feats)[0], flow))
        print(f"{density}: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in errors.items()), flush=True)
    return 0


def oracle(args: argparse.Namespace) -> int:
    """The best fill per image and per 8x8 cell, chosen knowing the target: the headroom of a gate."""
    pairs = real.make_pairs(real.clip_folders(args.davis, None), 192, 2, 4, args.davis / ".bench_cache")
    print(f"{len(pairs)} pairs from {args.davis}")
    for density in args.densities.split(","):
        per_image, per_cell = [], []
        for pair, flow, sparse in real.pair_tensors(pairs, density, 0):
            extra = candidate_fills(pair["image"], sparse)
            maps = torch.stack([(extra[2 * i:2 * i + 2] - flow).norm(dim=0) for i in range(len(FILLS))])
            per_image.append(float(maps.mean(dim=(1, 2)).min()))
            best = F.avg_pool2d(maps[None], 8, ceil_mode=True)[0].argmin(0).float()
            choice = F.interpolate(best[None, None], size=maps.shape[-2:], mode="nearest")[0].long()
            per_cell.append(float(maps.gather(0, choice).mean()))
        print(f"{density}: best fill per image {np.mean(per_image):.3f}, per 8x8 cell {np.mean(per_cell):.3f}",
              flush=True)
    return 0


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    print(f"saved {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache", help="training crops with their candidate fills")
    c.add_argument("--out", type=Path, required=True, help="the .pt file to write")
    c.add_argument("--lists", type=Path, nargs="+", required=True, help="pair lists (prepare/synth lists/*.txt)")
    c.add_argument("--samples", type=int, default=3000, help="crops to draw")
    c.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train a gate on a cache")
    t.add_argument("--data", type=Path, required=True, help="a .pt file from cache")
    t.add_argument("--out", type=Path, required=True, help="the .pt file to write")
    t.add_argument("--features", default=None, help="a checkpoint whose frozen layer3 features the gate also sees")
    t.add_argument("--iters", type=int, default=1000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    for name, helptext in (("score", "the fills and trained gates on DAVIS-layout clips"),
                           ("oracle", "the best fill per image and per cell, knowing the target")):
        s = sub.add_parser(name, help=helptext)
        if name == "score":
            s.add_argument("gates", nargs="+", type=Path, help=".pt files from train")
        s.add_argument("--davis", type=Path, required=True, help="DAVIS-layout root (JPEGImages/<clip>/*.jpg)")
        s.add_argument("--densities", default="20", help="of 1, 20, dense")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    for path in getattr(args, "lists", []) + getattr(args, "gates", []) + [getattr(args, "data", None) or Path(".")]:
        if not path.exists():
            parser.error(f"not found: {path}")
    if hasattr(args, "davis") and not args.davis.is_dir():
        parser.error(f"folder not found: {args.davis}")
    torch.set_num_threads(args.threads)
    return {"cache": cache, "train": train, "score": score, "oracle": oracle}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
