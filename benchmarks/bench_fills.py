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

``--affine RIDGE[,RIDGE...]`` adds locally-affine fills (EpicFlow's interpolation): at every pixel, the affine motion
fitted to the guidance by least squares weighted as the first ``--geodesic`` fill weights it, its linear part shrunk
by RIDGE (large RIDGE = that geodesic fill). Camera zooms and rotations are affine; does the fill gain by it?

``--loo`` adds two fills chosen per image from the guidance alone: every fill above (IDW-4, watershed, blend R,
geodesic W) predicts each guidance point from the others; ``LOO choice`` takes the fill with the lowest mean error
there, ``LOO blend`` weights the fills by ``softmax(-error / (0.25 x lowest error))``.

``--oracle W[,W...]`` adds a headroom measurement, not a method: ``oracle W`` is the geodesic IDW-4
fill whose cost is ``1 + W x`` the gradient of the Gaussian-smoothed TRUE flow (its motion
boundaries, in px of flow per px), i.e. what a fill could reach if the image's edges were exactly the
motion's; ``oracle W/8`` the same boundaries averaged over 8x8 cells and upsampled (what a stride-8
network could predict at best).

``--prior D[,D...]`` adds the geodesic fill (first ``--geodesic`` weight) with the dominant-motion prior of
``model.geodesic_prior_distance`` at these distances: the guidance vectors' mean weighted by how much of the image's
border each point's cell holds (``--prior-shares area``: by its area; ``connectivity``: by its border pixels / sqrt(area)),
as a virtual point D px from every pixel.
``--prior-oracle`` adds the same fills told the true flow's median instead, and told the guidance vector nearest to that
median (which a rule choosing one guided point as the scenery could reach at best), and prints how many guided points
lie within 1 px of the median (headroom, not methods).
"""

from __future__ import annotations

import argparse
import itertools
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


def local_affine_fill(sparse: torch.Tensor, distances: torch.Tensor, ridge: float, power: float = 4.0,
                      scale: float = 100.0) -> torch.Tensor:
    """(2, H, W): at every pixel, the affine motion fitted to the guidance by weighted least squares (EpicFlow's
    locally-weighted affine interpolation with IDW weights ``distance ** -power``).

    ``distances`` (K, H, W) are the points' distances (``geodesic_point_distances``), in the order of
    ``nonzero(sparse[2])``. The fit is centred on the pixel (offsets in units of ``scale`` px) and its linear part is
    shrunk by ``ridge`` (the weights sum to 1 per pixel), so ``ridge`` -> infinity gives the IDW fill back; with ``ridge``
    0 it is exact for an affine flow field (at least 3 points not on a line), and always at the guided pixels.
    """
    gy, gx = torch.nonzero(sparse[2] > 0, as_tuple=True)
    vectors = sparse[:2, gy, gx].float()                                              # (2, K)
    _, height, width = distances.shape
    weights = distances.double().clamp_min(1e-3).pow(-power)                          # (K, H, W)
    weights /= weights.sum(dim=0, keepdim=True)  # float64 and unit sums: one point often outweighs the rest 1e6x
    rows = torch.arange(height, dtype=torch.float64)
    cols = torch.arange(width, dtype=torch.float64)
    dx = (gx.double()[:, None, None] - cols[None, None, :]).expand_as(weights) / scale
    dy = (gy.double()[:, None, None] - rows[None, :, None]).expand_as(weights) / scale
    basis = torch.stack([torch.ones_like(dx), dx, dy])                                # (3, K, H, W)
    normal = torch.einsum("akhw,bkhw,khw->hwab", basis, basis, weights)
    normal = normal + ridge * torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    right = torch.einsum("akhw,khw,ck->hwac", basis, weights, vectors.double())
    solution = torch.linalg.solve(normal, right).float()                              # (H, W, 3, 2)
    out = solution[:, :, 0, :].permute(2, 0, 1).contiguous()
    out[:, gy, gx] = vectors
    return out


def leave_one_out(image: np.ndarray, sparse: torch.Tensor, radii: Sequence[float],
                  point_distances: dict[float, torch.Tensor], power: float = 4.0) -> dict[str, torch.Tensor]:
    """(2, K) per fill of ``image_fills`` (IDW-4, watershed, blend R, geodesic W): each guidance point's vector as that
    fill predicts it from the other points, in the order of ``nonzero(sparse[2])``. ``point_distances``: per geodesic
    weight W, the points' distance maps (K, H, W) of ``geodesic_point_distances``."""
    gy, gx = torch.nonzero(sparse[2] > 0, as_tuple=True)
    vectors = sparse[:2, gy, gx].float()
    count = gy.numel()

    def idw(between: torch.Tensor) -> torch.Tensor:  # between[j, i]: distance from point j to point i
        w = between.clamp_min(1e-3).pow(-power)
        w.fill_diagonal_(0)
        return vectors @ w / w.sum(dim=0, keepdim=True)

    euclid = ((gy[:, None] - gy[None]).float().square() + (gx[:, None] - gx[None]).float().square()).sqrt()
    out = {"IDW-4": idw(euclid)}
    gradient = lab_gradient(image)
    shed = torch.zeros(2, count)
    for i in range(count):
        without = sparse.clone()
        without[:, gy[i], gx[i]] = 0
        shed[:, i] = watershed_fill(gradient, without)[:, gy[i], gx[i]]
    out["watershed"] = shed
    nearest_other = (euclid + torch.eye(count) * 1e9).min(dim=0).values
    for radius in radii:
        w = (nearest_other / radius).clamp(max=1.0)
        out[f"blend {radius:g}"] = w * shed + (1 - w) * out["IDW-4"]
    for weight, distances in point_distances.items():
        out[f"geodesic {weight:g}"] = idw(distances[:, gy, gx])
    return out


def loo_fills(fills: dict[str, torch.Tensor], predictions: dict[str, torch.Tensor], sparse: torch.Tensor,
              temperature: float = 0.25) -> dict[str, torch.Tensor]:
    """``LOO choice``: the fill whose leave-one-out error at the guidance points is lowest; ``LOO blend``: the fills
    averaged with weights ``softmax(-error / (temperature x lowest error))``. Uses the guidance only."""
    gy, gx = torch.nonzero(sparse[2] > 0, as_tuple=True)
    vectors = sparse[:2, gy, gx].float()
    names = list(predictions)
    errors = torch.tensor([(predictions[n] - vectors).norm(dim=0).mean().item() for n in names])
    weights = torch.softmax(-errors / (temperature * errors.min().clamp_min(0.1)), dim=0)
    return {"LOO choice": fills[names[int(errors.argmin())]],
            "LOO blend": sum(w * fills[n] for w, n in zip(weights.tolist(), names))}


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


def guided_vector_nearest(sparse: torch.Tensor, motion: torch.Tensor, within: float = 1.0) -> tuple[torch.Tensor, int]:
    """sparse (4, H, W) with guidance, motion (2,) -> the guided vector (2,) nearest to ``motion``, and how many guided
    vectors lie within ``within`` px of it."""
    gy, gx = torch.nonzero(sparse[2] > 0, as_tuple=True)
    vectors = sparse[:2, gy, gx]
    off = (vectors - motion[:, None]).norm(dim=0)
    return vectors[:, off.argmin()], int((off < within).sum())


def contrast_dominant_motions(image: np.ndarray, sparse: torch.Tensor, distances: torch.Tensor,
                              sigmas: Sequence[float]) -> dict[float, torch.Tensor]:
    """The dominant motion (2,) per sigma, with each point's boundary-connectivity share also weighted by its colour
    contrast to the scenery, ``exp(-c^2 / (2 sigma^2))`` (the foreground half of Zhu et al.'s saliency).

    ``image`` (H, W, 3) uint8 RGB; ``distances`` (K, H, W) the points' geodesic distances
    (:func:`geodesic_point_distances`), whose nearest point makes each pixel's cell. ``c`` is the Lab distance
    between a cell's mean colour and the scenery's, the cells' mean colours weighted by connectivity x area.
    """
    from motionprop.models.geodesic import _border_ring

    gy, gx = torch.nonzero(sparse[2] > 0, as_tuple=True)
    height, width = sparse.shape[-2:]
    owner = distances.flatten(1).argmin(dim=0)
    count = gy.numel()
    area = torch.bincount(owner, minlength=count).float()
    border = torch.bincount(owner[_border_ring(height, width, sparse.device)], minlength=count).float()
    connectivity = border / area.clamp_min(1.0).sqrt()
    smooth = cv2.GaussianBlur(image.astype(np.float32) / 255, (0, 0), 2)
    lab = torch.from_numpy(cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).reshape(-1, 3))
    cell_colour = torch.zeros(count, 3).index_add_(0, owner, lab) / area.clamp_min(1.0)[:, None]
    scenery_weight = connectivity * area
    scenery = (cell_colour * scenery_weight[:, None]).sum(dim=0) / scenery_weight.sum().clamp_min(1e-9)
    contrast = (cell_colour - scenery).norm(dim=1)
    vectors = sparse[:2, gy, gx].float()
    motions = {}
    for sigma in sigmas:
        share = connectivity * torch.exp(-contrast.square() / (2 * sigma ** 2))
        share = share if share.sum() > 0 else connectivity
        motions[sigma] = vectors @ (share / share.sum())
    return motions


def _numbers(text: str, flag: str) -> list[float]:
    """'1,2.5' -> [1.0, 2.5] ('' -> []), or exit naming the flag."""
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        sys.exit(f"bench_fills: {flag} must be comma-separated numbers, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    from motionprop.models.geodesic import PRIOR_WEIGHTS, edge_cost, geodesic_idw, geodesic_point_distances

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
    parser.add_argument("--affine", default="", metavar="RIDGE[,RIDGE...]",
                        help="also locally-affine fills (EpicFlow-style; the first --geodesic weight's distances), "
                             "these ridges on the linear part (large = the geodesic fill)")
    parser.add_argument("--loo", action="store_true",
                        help="also fills chosen per image by their leave-one-out error at the guidance points")
    parser.add_argument("--prior", default="", metavar="D[,D...]",
                        help="also geodesic fills (first --geodesic weight) with the dominant-motion prior at these "
                             "distances in px (model.geodesic_prior_distance)")
    parser.add_argument("--prior-shares", default="border", metavar="S[,S...]",
                        help="what weights each point's vector in the dominant motion (model.geodesic_prior_weights): "
                             "border (its cell's pixels on the image border), area (the whole cell), connectivity "
                             "(border pixels / sqrt(area)); default: border")
    parser.add_argument("--prior-powers", default="4", metavar="P[,P...]",
                        help="IDW powers of the --prior fills (default: 4, the model's); other powers are named "
                             "'power P'")
    parser.add_argument("--prior-contrast", default="", metavar="S[,S...]",
                        help="with --prior, also fills whose dominant motion weights each point's boundary "
                             "connectivity by its cell's Lab colour contrast to the scenery, exp(-c^2 / 2 S^2)")
    parser.add_argument("--prior-oracle", action="store_true",
                        help="with --prior, also the same fills given the true flow's median as the dominant motion "
                             "(headroom)")
    parser.add_argument("--oracle", default="", metavar="W[,W...]",
                        help="also the geodesic fills on the true flow's motion boundaries (headroom), these weights")
    parser.add_argument("--cache", type=Path, default=None, help="flow cache (default: ROOT/.bench_cache)")
    args = parser.parse_args(argv)
    densities = args.densities.split(",")
    if any(d not in real.DENSITIES for d in densities):
        sys.exit(f"bench_fills: --densities must be of {', '.join(real.DENSITIES)}")
    radii = _numbers(args.radii, "--radii")
    weights = _numbers(args.geodesic, "--geodesic")
    oracles = _numbers(args.oracle, "--oracle")
    sigmas = _numbers(args.colour, "--colour")
    feature_sigmas = _numbers(args.feature_sigma, "--feature-sigma")
    ridges = _numbers(args.affine, "--affine")
    priors = _numbers(args.prior, "--prior")
    powers = _numbers(args.prior_powers, "--prior-powers")
    contrasts = _numbers(args.prior_contrast, "--prior-contrast")
    if any(not sigma > 0 for sigma in contrasts):
        sys.exit(f"bench_fills: --prior-contrast sigmas must be positive, got {args.prior_contrast!r}")
    if contrasts and not priors:
        sys.exit("bench_fills: --prior-contrast needs --prior")
    if not powers or any(not power > 0 for power in powers):
        sys.exit(f"bench_fills: --prior-powers must be positive numbers, got {args.prior_powers!r}")
    if any(not ridge > 0 for ridge in ridges):  # ridge 0 leaves the fit singular with fewer than 3 points
        sys.exit(f"bench_fills: --affine ridges must be positive, got {args.affine!r}")
    shares = [t.strip() for t in args.prior_shares.split(",") if t.strip()]
    if not shares or any(t not in PRIOR_WEIGHTS for t in shares):
        sys.exit(f"bench_fills: --prior-shares must be of {', '.join(PRIOR_WEIGHTS)}, got {args.prior_shares!r}")
    if any(not prior > 0 for prior in priors):
        sys.exit(f"bench_fills: --prior distances must be positive, got {args.prior!r}")
    if (sigmas or args.features or ridges or priors) and not weights:
        sys.exit("bench_fills: --colour, --features, --affine and --prior need a --geodesic weight")
    encoders = load_feature_encoders([t for t in args.features.split(",") if t.strip()], args.feature_layer)
    cache = args.cache or args.davis / ".bench_cache"
    pairs = real.make_pairs(real.clip_folders(args.davis, None), 192, 2, 4, cache)
    print(f"{len(pairs)} pairs from {args.davis}")
    for density in densities:
        errors: dict[str, list[float]] = {}
        near: list[tuple[int, int]] = []  # per pair with guidance: (guided points within 1 px of the median, points)
        for pair, flow, sparse in real.pair_tensors(pairs, density, 0):
            feature_maps = {text: feature_map(encoder, pair["image"]) for text, encoder in encoders.items()}
            fills, _ = image_fills(pair["image"], sparse, radii, weights, sigmas, feature_maps, feature_sigmas)
            points = int((sparse[2] > 0).sum())
            needed = []  # geodesic weights whose distance maps the affine, LOO and contrast fills use, computed once
            if args.loo and points >= 2:
                needed = weights
            elif (ridges or contrasts) and points:
                needed = weights[:1]
            rgb = torch.from_numpy(pair["image"]).permute(2, 0, 1)[None].float() / 255
            costs = {w: edge_cost(rgb, w) for w in set(needed) | set(weights[:1] if priors else [])}
            point_distances = {w: geodesic_point_distances(sparse[None], costs[w])[0][2] for w in needed}
            contrast_motions = (contrast_dominant_motions(pair["image"], sparse, point_distances[weights[0]],
                                                          contrasts) if contrasts and points else {})
            if ridges and points:
                for ridge in ridges:
                    fills[f"affine {weights[0]:g} ridge {ridge:g}"] = local_affine_fill(
                        sparse, point_distances[weights[0]], ridge)
            median = flow.flatten(1).median(dim=1).values[None] if args.prior_oracle else None  # (1, 2)
            best = None  # the guided vector nearest to the median
            if median is not None and points:
                best, within = guided_vector_nearest(sparse, median[0])
                best = best[None]
                near.append((within, points))
            for prior in priors:
                for share, power in itertools.product(shares, powers):
                    name = (f"geodesic {weights[0]:g} prior {prior:g}" + ("" if share == "border" else f" {share}")
                            + ("" if power == 4 else f" power {power:g}"))
                    fills[name] = geodesic_idw(sparse[None], costs[weights[0]], power=power, prior_distance=prior,
                                               prior_weights=share)[0]
                for sigma in contrasts:
                    fills[f"geodesic {weights[0]:g} prior {prior:g} connectivity x contrast {sigma:g}"] = (
                        geodesic_idw(sparse[None], costs[weights[0]], power=4.0, prior_distance=prior,
                                     dominant=contrast_motions[sigma][None])[0] if points else fills["IDW-4"])
                if median is not None:
                    fills[f"geodesic {weights[0]:g} prior {prior:g}, true median"] = geodesic_idw(
                        sparse[None], costs[weights[0]], power=4.0, prior_distance=prior, dominant=median)[0]
                    fills[f"geodesic {weights[0]:g} prior {prior:g}, guided vector nearest the median"] = (
                        geodesic_idw(sparse[None], costs[weights[0]], power=4.0, prior_distance=prior,
                                     dominant=best)[0] if best is not None else fills["IDW-4"])
            if args.loo and points >= 2:
                predictions = leave_one_out(pair["image"], sparse, radii, point_distances)
                fills.update(loo_fills({name: fills[name] for name in predictions}, predictions, sparse))
            elif args.loo:  # fewer than two points: nothing to leave out
                fills.update({"LOO choice": fills["IDW-4"], "LOO blend": fills["IDW-4"]})
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
        if near:
            print(f"{density}: guided points within 1 px of the true median flow: {np.mean([n for n, _ in near]):.1f} "
                  f"of {np.mean([k for _, k in near]):.1f} per pair", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
