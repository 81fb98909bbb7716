"""Non-learned fills of sparse guidance on real video: does looking at the image's edges help?

    python benchmarks/bench_fills.py --davis ../shared/data/davis2016 [--densities 20,dense]

Same pairs, targets and seeded guidance as ``bench_real_motion.py`` (whose cache it shares). Fills:
IDW with power 4 (the quickstart network's base until 2026-12-02), the watershed fill (each pixel
takes the vector of the guidance point whose watershed basin holds it, on the Lab gradient magnitude
after a Gaussian of sigma 2), ``blend R`` = ``min(d / R, 1) * watershed + (1 - min(d / R, 1)) * IDW-4``
with d the distance to the nearest guidance point, and ``geodesic W``: IDW-4 of geodesic distances whose cost per pixel is
``1 + W x`` the colour gradient (``motionprop.models.geodesic``, the fill of ``model.residual_base:
geodesic``; ``--geodesic`` lists the weights, default 40 as in the quickstart). Prints mean end-point
errors per density.

``--colour S[,S...]`` adds geodesic fills (the first ``--geodesic`` weight) whose point weights are multiplied by a
Gaussian of the Lab colour difference between the pixel and the point (sigma S).

``--features ENCODER[,ENCODER...] --feature-sigma S[,S...]`` adds geodesic fills (the first ``--geodesic``
weight) whose point weights are multiplied by a Gaussian of the distance between the pixel's and the point's
frozen encoder features (``motionprop transfer``'s ENCODER syntax, e.g. a CMP checkpoint or
``random:resnet18:0``; ``--feature-layer previous`` reads ResNet layer3): the features are L2-normalized at
stride 8, reduced to their first 32 principal components per image and upsampled bilinearly, so
``|f(pixel) - f(point)|^2`` is about ``2 - 2 cos``. Do CMP's features know which pixels move together
better than colour does? A random-init encoder is the control.

``--oracle W[,W...]`` adds a headroom measurement, not a method: ``oracle W`` is the geodesic IDW-4
fill whose cost is ``1 + W x`` the gradient of the Gaussian-smoothed TRUE flow (its motion
boundaries, in px of flow per px), i.e. what a fill could reach if the image's edges were exactly the
motion's; ``oracle W/8`` the same boundaries averaged over 8x8 cells and upsampled (what a stride-8
network could predict at best).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_motion as real  # noqa: E402


def lab_gradient(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> the gradient magnitude (H, W) of its Gaussian-smoothed Lab channels."""
    from skimage.filters import sobel

    lab = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32), (0, 0), sigma)
    return np.sqrt(sum(sobel(lab[..., c]) ** 2 for c in range(3)))


def smoothed_lab(image: np.ndarray, sigma: float = 2.0) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, H, W): its Lab colours (L in 0-100) after a Gaussian of ``sigma``."""
    lab = cv2.cvtColor(cv2.GaussianBlur(image.astype(np.float32) / 255, (0, 0), sigma), cv2.COLOR_RGB2LAB)
    return torch.from_numpy(lab).permute(2, 0, 1)[None].contiguous()


def motion_boundaries(flow: torch.Tensor) -> torch.Tensor:
    """flow (B,2,H,W) -> (B,1,H,W): the gradient magnitude of the Gaussian-smoothed flow (px of flow per px)."""
    from motionprop.models.geodesic import edge_cost

    return edge_cost(flow, 1.0) - 1


def watershed_fill(gradient: np.ndarray, sparse: torch.Tensor) -> torch.Tensor:
    """(2, H, W): each pixel takes the vector of the guidance point whose watershed basin it is in."""
    from skimage.segmentation import watershed

    ys, xs = np.nonzero(sparse[2].numpy() > 0)
    markers = np.zeros(gradient.shape, np.int32)
    markers[ys, xs] = np.arange(1, len(ys) + 1)
    basins = watershed(gradient, markers)
    return torch.from_numpy(sparse[:2].numpy()[:, ys, xs][:, basins - 1])


def image_fills(image: np.ndarray, sparse: torch.Tensor, radii: Sequence[float], weights: Sequence[float],
                sigmas: Sequence[float] = (), feature_maps: dict[str, torch.Tensor] | None = None,
                feature_sigmas: Sequence[float] = ()) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The non-learned fills (2, H, W) of ``sparse`` on RGB uint8 ``image``, by name, and the distance map (1, H, W).

    Names: ``IDW-4``, ``watershed``, ``blend R`` per radius, ``geodesic W`` per weight and, for the first
    weight, ``geodesic W colour S`` per sigma of ``sigmas`` and ``geodesic W features NAME S`` per feature map
    (``feature_map``) and sigma of ``feature_sigmas`` (each edge cost computed once).
    """
    from motionprop.baselines import idw_fill
    from motionprop.models.geodesic import edge_cost, geodesic_idw
    from motionprop.models.guidance_encoding import nearest_guidance

    idw = idw_fill(sparse[None], power=4.0)[0]
    shed = watershed_fill(lab_gradient(image), sparse)
    distance = nearest_guidance(sparse[None])[1][0]
    fills = {"IDW-4": idw, "watershed": shed}
    for radius in radii:
        w = (distance / radius).clamp(max=1.0)
        fills[f"blend {radius:g}"] = w * shed + (1 - w) * idw
    rgb = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    costs = {weight: edge_cost(rgb, weight) for weight in weights}
    for weight, cost in costs.items():
        fills[f"geodesic {weight:g}"] = geodesic_idw(sparse[None], cost, power=4.0)[0]
    if sigmas:
        lab = smoothed_lab(image)
        for sigma in sigmas:
            fills[f"geodesic {weights[0]:g} colour {sigma:g}"] = geodesic_idw(
                sparse[None], costs[weights[0]], power=4.0, colour=lab, colour_sigma=sigma)[0]
    for name, feats in (feature_maps or {}).items():
        for sigma in feature_sigmas:
            fills[f"geodesic {weights[0]:g} features {name} {sigma:g}"] = geodesic_idw(
                sparse[None], costs[weights[0]], power=4.0, colour=feats, colour_sigma=sigma)[0]
    return fills, distance


def feature_map(encoder, image: np.ndarray, components: int = 32) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, components, H, W): the encoder's L2-normalized stride-8 features, projected on
    their first principal components (centred per image) and upsampled bilinearly."""
    from motionprop.evaluation.benchmark import extract_features
    from motionprop.evaluation.propagation import normalize_features

    feats = normalize_features(extract_features(encoder, image[None], 1))[0]     # (C, h, w)
    c, h, w = feats.shape
    flat = feats.reshape(c, h * w).T                                              # (n, C)
    centred = flat - flat.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    projected = (centred @ v[:min(components, c)].T).T.reshape(1, -1, h, w)
    return torch.nn.functional.interpolate(projected, size=image.shape[:2], mode="bilinear", align_corners=False)


def load_feature_encoders(texts: Sequence[str], layer: str) -> dict[str, object]:
    """{ENCODER text: FrozenEncoder} (the first seed of a random: spec); exits with one line if one cannot be read."""
    from motionprop.errors import MotionpropError
    from motionprop.evaluation.benchmark import TransferSettings, _load
    from motionprop.evaluation.encoders import parse_encoder

    settings = TransferSettings(features=layer).validate()
    try:
        return {text: _load(parse_encoder(text), settings)[0] for text in texts}
    except MotionpropError as exc:
        sys.exit(f"bench_fills: --features: {exc}")


def main(argv: list[str] | None = None) -> int:
    from motionprop.models.geodesic import geodesic_idw

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS-layout root")
    parser.add_argument("--densities", default="20,dense", help="of 1, 20, dense (default: 20,dense)")
    parser.add_argument("--radii", default="20,40,160", help="blend radii R in px (default: 20,40,160)")
    parser.add_argument("--geodesic", default="40", metavar="W[,W...]",
                        help="edge weights of the geodesic IDW-4 fills, '' for none (default: 40)")
    parser.add_argument("--colour", default="", metavar="S[,S...]",
                        help="also geodesic fills (first --geodesic weight) whose weights are multiplied by a Gaussian "
                             "of the Lab colour difference to the point, these sigmas (Lab units)")
    parser.add_argument("--features", default="", metavar="ENCODER[,ENCODER...]",
                        help="also geodesic fills (first --geodesic weight) whose weights are multiplied by a Gaussian "
                             "of the feature distance to the point, for each of these frozen encoders")
    parser.add_argument("--feature-sigma", default="0.2,0.4,0.8", metavar="S[,S...]",
                        help="sigmas of the feature term (distances of unit vectors, 0-2; default: 0.2,0.4,0.8)")
    parser.add_argument("--feature-layer", choices=("last", "previous"), default="previous",
                        help="as motionprop transfer's --features (default: previous = ResNet layer3)")
    parser.add_argument("--oracle", default="", metavar="W[,W...]",
                        help="also the geodesic fills on the true flow's motion boundaries (headroom), these weights")
    parser.add_argument("--cache", type=Path, default=None, help="flow cache (default: ROOT/.bench_cache)")
    args = parser.parse_args(argv)
    densities = args.densities.split(",")
    if any(d not in real.DENSITIES for d in densities):
        sys.exit(f"bench_fills: --densities must be of {', '.join(real.DENSITIES)}")
    radii = [float(r) for r in args.radii.split(",")]
    try:
        weights = [float(w) for w in args.geodesic.split(",") if w.strip()]
    except ValueError:
        sys.exit(f"bench_fills: --geodesic must be comma-separated numbers, got {args.geodesic!r}")
    try:
        oracles = [float(w) for w in args.oracle.split(",") if w.strip()]
    except ValueError:
        sys.exit(f"bench_fills: --oracle must be comma-separated numbers, got {args.oracle!r}")
    try:
        sigmas = [float(w) for w in args.colour.split(",") if w.strip()]
    except ValueError:
        sys.exit(f"bench_fills: --colour must be comma-separated numbers, got {args.colour!r}")
    try:
        feature_sigmas = [float(w) for w in args.feature_sigma.split(",") if w.strip()]
    except ValueError:
        sys.exit(f"bench_fills: --feature-sigma must be comma-separated numbers, got {args.feature_sigma!r}")
    if (sigmas or args.features) and not weights:
        sys.exit("bench_fills: --colour and --features need a --geodesic weight")
    encoders = load_feature_encoders([t for t in args.features.split(",") if t.strip()], args.feature_layer)
    cache = args.cache or args.davis / ".bench_cache"
    pairs = real.make_pairs(real.clip_folders(args.davis, None), 192, 2, 4, cache)
    print(f"{len(pairs)} pairs from {args.davis}")
    for density in densities:
        errors: dict[str, list[float]] = {}
        for pair, flow, sparse in real.pair_tensors(pairs, density, 0):
            feature_maps = {text: feature_map(encoder, pair["image"]) for text, encoder in encoders.items()}
            fills, _ = image_fills(pair["image"], sparse, radii, weights, sigmas, feature_maps, feature_sigmas)
            if oracles:
                boundaries = motion_boundaries(flow[None])
                coarse = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(boundaries, 8),
                                                         size=boundaries.shape[-2:], mode="bilinear",
                                                         align_corners=False)
                for weight in oracles:
                    fills[f"oracle {weight:g}"] = geodesic_idw(sparse[None], 1 + weight * boundaries, power=4.0)[0]
                    fills[f"oracle {weight:g}/8"] = geodesic_idw(sparse[None], 1 + weight * coarse, power=4.0)[0]
            for name, fill in fills.items():
                errors.setdefault(name, []).append(real.epe(fill, flow))
        print(f"{density}: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in errors.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
