"""Check that motionprop reproduces the original network: same weights in, same outputs out.

For every preset: build the original network from a checkout of the original
code, save it in the original's checkpoint format, load that file with
``motionprop.load_model(path, config=<the original config.yaml>)``, and compare
the raw outputs (bin logits) and decoded flow on random inputs, eval mode.
Weights and BatchNorm statistics are randomized at a trained-like scale first.

    python benchmarks/compare_original.py --original-repo /path/to/conditional-motion-propagation
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import motionprop
from motionprop.models import init_weights_trained_like
from original_ref import (ORIGINAL_EXPERIMENTS, build_original, import_original, original_checkpoint,
                          original_config)


def original_flow(repo: str, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The original's eval-time decoding (utils.Fuser + bilinear upsampling), without its .cuda()."""
    import torch.nn.functional as F

    nbins, fmax = 99, 50.0
    step = 2 * fmax / nbins
    mesh = torch.arange(nbins).view(1, -1, 1, 1).float() * step - fmax + step / 2
    px = F.softmax(logits[:, :nbins], dim=1) * mesh
    py = F.softmax(logits[:, nbins:], dim=1) * mesh
    flow = torch.cat([px.sum(1, keepdim=True), py.sum(1, keepdim=True)], dim=1)
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


def compare(repo: str, preset: str, size: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    ref = init_weights_trained_like(build_original(repo, preset)).eval()
    cfg_path, _ = original_config(repo, preset)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = original_checkpoint(ref, Path(tmp) / "ckpt_iter_42000.pth.tar")
        ours = motionprop.load_model(ckpt, config=cfg_path)
    image = torch.randn(batch, 3, size, size)
    sparse = torch.zeros(batch, 4, size, size)
    idx = torch.randint(0, size * size, (batch, 30))
    for b in range(batch):
        ys, xs = idx[b] // size, idx[b] % size
        sparse[b, 0, ys, xs] = torch.randn(30) * 10
        sparse[b, 1, ys, xs] = torch.randn(30) * 10
        sparse[b, 2:, ys, xs] = 1
    with torch.no_grad():
        out_ref = ref(image, sparse)
        out = ours(image, sparse)
        flow_ref = original_flow(repo, out_ref, (size, size))
        flow = ours.predict_flow(image, sparse)
    return {
        "max_abs_logit_diff": (out - out_ref).abs().max().item(),
        "max_abs_flow_diff_px": (flow - flow_ref).abs().max().item(),
        "logit_scale": out_ref.abs().max().item(),
        "shape_equal": float(out.shape == out_ref.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original-repo", required=True, help="checkout of the original CMP code")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels (default 128)")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    import_original(args.original_repo)
    print(f"{'preset':46s} {'shape':>5s} {'max|dlogit|':>12s} {'|logit|max':>11s} {'max|dflow| px':>14s}")
    worst = 0.0
    for preset in ORIGINAL_EXPERIMENTS:
        r = compare(args.original_repo, preset, args.size, args.batch)
        worst = max(worst, r["max_abs_flow_diff_px"])
        print(f"{preset:46s} {'ok' if r['shape_equal'] else 'DIFF':>5s} {r['max_abs_logit_diff']:12.2e} "
              f"{r['logit_scale']:11.2e} {r['max_abs_flow_diff_px']:14.2e}")
    print(f"worst flow difference: {worst:.2e} px")


if __name__ == "__main__":
    main()
