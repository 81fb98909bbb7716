"""Time motionprop's guidance sampler against a faithful port of the original, and compare their statistics.

The REFERENCE below is the original release's ``flow_sampler`` (``utils/data_utils.py``
of github.com/XiaohangZhan/conditional-motion-propagation): same algorithm, same
scipy calls (``signal.convolve2d`` Sobel, ``ndimage.distance_transform_edt``,
``maximum_filter``, a Python loop over near-duplicate pairs), rewritten readably
and given a ``numpy.random.Generator`` instead of the global RNG. Random numbers
are drawn at the same places and in the same order as in the original.

Flows: Sintel ground truth (``../shared/data/sintel``; resized to a short side of
416 and cropped to 384x384, like training) when present, plus synthetic
piecewise-affine flows so the benchmark runs anywhere.

    python benchmarks/bench_guidance.py            # both sources, one core
    python benchmarks/bench_guidance.py --breakdown  # + time per step, and the chamfer shortcut
    python benchmarks/bench_guidance.py --help
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage, signal

# ---------------------------------------------------------------- REFERENCE (port of the original)

REFERENCE_STRATEGIES = ("grid", "uniform", "gradnms", "watershed", "single", "full", "specified")


def reference_edge(flow: np.ndarray) -> np.ndarray:
    """REFERENCE ``get_edge``: sum over channels of the Sobel gradient magnitude (float32 in, float32 out)."""
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
    magnitudes = []
    for channel in range(flow.shape[2]):
        gx = signal.convolve2d(flow[:, :, channel], sobel, boundary="symm", mode="same")
        gy = signal.convolve2d(flow[:, :, channel], sobel.T, boundary="symm", mode="same")
        magnitudes.append(np.sqrt(gx**2 + gy**2))
    return sum(magnitudes)


def reference_nms(score: np.ndarray, ks: int) -> np.ndarray:
    """REFERENCE ``nms``: zero every value below the maximum of its ks x ks window."""
    assert ks % 2 == 1
    kept = score.copy()
    window_max = ndimage.maximum_filter(score, footprint=np.ones((ks, ks)))
    kept[score < window_max] = 0.0
    return kept


def reference_remove_border(array: np.ndarray) -> None:
    """REFERENCE ``remove_border``: zero the outermost rows and columns in place."""
    array[0, :] = 0
    array[:, 0] = 0
    array[-1, :] = 0
    array[:, -1] = 0


def reference_neighbor_elim(ph: np.ndarray, pw: np.ndarray, d: float,
                            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE ``neighbor_elim``: of every two points with |dy| < d and |dx| < d, drop one at random."""
    valid = np.ones(len(ph), dtype=int)
    h_dist = np.fabs(ph[:, None] - ph[None, :])
    w_dist = np.fabs(pw[:, None] - pw[None, :])
    idx1, idx2 = np.where((h_dist < d) & (w_dist < d))
    for i, j in zip(idx1, idx2):
        if valid[i] and valid[j] and i != j:
            if rng.random() > 0.5:
                valid[i] = 0
            else:
                valid[j] = 0
    keep = np.where(valid == 1)
    return ph[keep], pw[keep]


def reference_watershed_points(flow: np.ndarray, nms_ks: int,
                               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE watershed branch of ``flow_sampler``: (rows, cols) in full-resolution pixels."""
    ds = max(1, max(flow.shape[0], flow.shape[1]) // 400)
    edge = reference_edge(flow[::ds, ::ds, :])
    edge /= max(edge.max(), 0.01)
    edge = (edge > 0.1).astype(np.float32)
    watershed = ndimage.distance_transform_edt(1 - edge)
    nms_res = reference_nms(watershed, nms_ks)
    reference_remove_border(nms_res)
    pth, ptw = np.where(nms_res > 0)
    pth, ptw = reference_neighbor_elim(pth, ptw, (nms_ks - 1) / 2, rng)
    return pth * ds, ptw * ds


def reference_gradnms_points(flow: np.ndarray, nms_ks: int) -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE gradnms branch of ``flow_sampler``: (rows, cols) in full-resolution pixels."""
    ds = max(1, max(flow.shape[0], flow.shape[1]) // 400)
    ks = flow.shape[1] // ds // 20
    edge = reference_edge(flow[::ds, ::ds, :])
    kernel = np.ones((ks, ks), dtype=np.float32) / (ks * ks)
    subkernel = np.ones((ks // 2, ks // 2), dtype=np.float32) / (ks // 2 * ks // 2)
    score = signal.convolve2d(edge, kernel, boundary="symm", mode="same")
    subscore = signal.convolve2d(edge, subkernel, boundary="symm", mode="same")
    score = score / score.max() - subscore / subscore.max()
    pth, ptw = np.where(reference_nms(score, nms_ks) > 0.1)
    return pth * ds, ptw * ds


def reference_flow_sampler(flow: np.ndarray, strategy: Sequence[str] = ("grid",), bg_ratio: float = 1.0 / 6400,
                           nms_ks: int = 15, max_num_guide: int = -1, guidepoint: np.ndarray | None = None,
                           rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE ``flow_sampler`` -> (sparse (H,W,2), mask (H,W,2) int), like the original."""
    rng = np.random.default_rng() if rng is None else rng
    assert 0 <= bg_ratio <= 1
    for s in strategy:
        assert s in REFERENCE_STRATEGIES, f"No such strategy: {s}"
    h, w = flow.shape[:2]
    if "full" in strategy:
        return flow.copy(), np.ones(flow.shape, dtype=int)

    pts_h, pts_w = [], []
    if "grid" in strategy:
        stride = int(np.sqrt(1.0 / bg_ratio))
        start_h = int((h - h // stride * stride) / 2)
        start_w = int((w - w // stride * stride) / 2)
        mesh = np.meshgrid(np.arange(start_h, h, stride), np.arange(start_w, w, stride))
        pts_h.append(np.asarray(mesh[0].flat))
        pts_w.append(np.asarray(mesh[1].flat))
    if "uniform" in strategy:
        count = int(bg_ratio * h * w)
        pts_h.append(rng.integers(0, h, count))
        pts_w.append(rng.integers(0, w, count))
    if "gradnms" in strategy:
        pth, ptw = reference_gradnms_points(flow, nms_ks)
        pts_h.append(pth)
        pts_w.append(ptw)
    if "watershed" in strategy:
        pth, ptw = reference_watershed_points(flow, nms_ks, rng)
        pts_h.append(pth)
        pts_w.append(ptw)
    if "single" in strategy:
        pth, ptw = np.where((flow[:, :, 0] != 0) | (flow[:, :, 1] != 0))
        k = rng.integers(len(pth))
        pts_h.append(pth[k:k + 1])
        pts_w.append(ptw[k:k + 1])
    if "specified" in strategy:
        assert guidepoint is not None
        pts_h.append(guidepoint[:, 1])
        pts_w.append(guidepoint[:, 0])

    pts_h = np.concatenate(pts_h)
    pts_w = np.concatenate(pts_w)
    limit = np.inf if max_num_guide == -1 else max_num_guide
    order = rng.permutation(len(pts_h))
    chosen = order[np.arange(min(limit, len(order)))]
    pts_h, pts_w = pts_h[chosen], pts_w[chosen]

    sparse = np.zeros(flow.shape, dtype=flow.dtype)
    mask = np.zeros(flow.shape, dtype=int)
    sparse[pts_h, pts_w] = flow[pts_h, pts_w]
    mask[pts_h, pts_w] = 1
    return sparse, mask


# ---------------------------------------------------------------- flows to measure on


def piecewise_affine_flow(height: int, width: int, rng: np.random.Generator, num_objects: int = 4) -> np.ndarray:
    """A synthetic flow: an affine background and a few ellipses/rectangles, each with its own affine motion."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    flow = _affine_field(x, y, rng, scale=3.0)
    for _ in range(num_objects):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.08, 0.3) * height, rng.uniform(0.08, 0.3) * width
        if rng.random() < 0.5:
            inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        else:
            inside = (np.abs(y - cy) < ry) & (np.abs(x - cx) < rx)
        flow[inside] = _affine_field(x, y, rng, scale=15.0)[inside]
    return flow


def _affine_field(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Flow of a random affine motion: translation of about ``scale`` px plus a small linear part."""
    t = rng.normal(0, scale, 2)
    a = rng.normal(0, 0.02, (2, 2))
    u = t[0] + a[0, 0] * (x - x.mean()) + a[0, 1] * (y - y.mean())
    v = t[1] + a[1, 0] * (x - x.mean()) + a[1, 1] * (y - y.mean())
    return np.stack([u, v], axis=-1).astype(np.float32)


def sintel_crops(data_dir: Path, size: int = 384, short_side: int = 416) -> list[np.ndarray]:
    """Sintel ground-truth flows resized to ``short_side`` (flow scaled too) and cropped left/centre/right."""
    import cv2

    from motionprop.data.flow_io import read_flow

    crops = []
    for path in sorted(data_dir.glob("sintel/clean/*/gt/*.flo")):
        flow = read_flow(path)
        ratio = short_side / flow.shape[0]
        new_w = int(round(flow.shape[1] * ratio))
        flow = cv2.resize(flow, (new_w, short_side), interpolation=cv2.INTER_LINEAR) * ratio
        top = (short_side - size) // 2
        for left in (0, (new_w - size) // 2, new_w - size):
            crops.append(np.ascontiguousarray(flow[top:top + size, left:left + size]))
    return crops


# ---------------------------------------------------------------- measuring


def edge_distance(flow: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Distance of each point from the nearest motion edge, measured with the REFERENCE edge map."""
    ds = max(1, max(flow.shape[0], flow.shape[1]) // 400)
    edge = reference_edge(flow[::ds, ::ds, :])
    edge /= max(edge.max(), 0.01)
    distance = ndimage.distance_transform_edt(edge <= 0.1) * ds
    return distance[rows // ds, cols // ds]


def statistics(points_fn: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]],
               flows: Sequence[np.ndarray], draws: int = 5, seed: int = 0) -> tuple[float, float]:
    """Mean number of points and mean distance of the points from motion edges, over flows and seeds."""
    counts, distances = [], []
    for k, flow in enumerate(flows):
        for draw in range(draws):  # the near-duplicate removal is random: average a few draws
            rows, cols = points_fn(flow, np.random.default_rng([seed, k, draw]))
            counts.append(len(rows))
            distances.extend(edge_distance(flow, rows, cols))
    return float(np.mean(counts)), float(np.mean(distances)) if distances else 0.0


def time_interleaved(functions: Sequence[Callable[[np.ndarray, np.random.Generator], object]],
                     flows: Sequence[np.ndarray], repeats: int) -> list[float]:
    """Milliseconds per sample of each function: per flow the best of ``repeats``, the functions alternating.

    Alternating and keeping each flow's best time makes the ratio robust to other
    processes competing for the core.
    """
    best = np.full((len(functions), len(flows)), np.inf)
    for _ in range(repeats):
        for k, flow in enumerate(flows):
            for i, function in enumerate(functions):
                rng = np.random.default_rng(k)
                start = time.perf_counter()
                function(flow, rng)
                best[i, k] = min(best[i, k], time.perf_counter() - start)
    return [1000 * float(row.mean()) for row in best]


def use_one_core() -> None:
    """Pin this process (and OpenCV) to one core, so the figures compare algorithms, not core counts."""
    import cv2

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)


def report(name: str, flows: Sequence[np.ndarray], nms_ks: int, bg_ratio: float, max_num_guide: int,
           repeats: int) -> None:
    """Print timings and statistics of the reference and motionprop on ``flows``."""
    from motionprop.data.guidance import sample_guidance, watershed_points

    def ref_points(flow, rng):
        return reference_watershed_points(flow, nms_ks, rng)

    def our_points(flow, rng):
        return watershed_points(flow, nms_ks, rng=rng)

    def ref_sampler(flow, rng):
        return reference_flow_sampler(flow, ("grid", "watershed"), bg_ratio, nms_ks, max_num_guide, rng=rng)

    def our_sampler(flow, rng):
        return sample_guidance(flow, ("grid", "watershed"), bg_ratio, nms_ks, max_num_guide, rng=rng)

    ref_ws, our_ws, ref_full, our_full = time_interleaved([ref_points, our_points, ref_sampler, our_sampler],
                                                          flows, repeats)
    ref_count, ref_distance = statistics(ref_points, flows)
    our_count, our_distance = statistics(our_points, flows)
    shape = "x".join(str(s) for s in flows[0].shape[:2])
    print(f"\n{name}: {len(flows)} flows of {shape}, nms_ks={nms_ks}")
    print(f"  {'':34s}{'reference':>12s}{'motionprop':>12s}{'ratio':>9s}")
    print(f"  {'watershed, ms/sample':34s}{ref_ws:12.2f}{our_ws:12.2f}{ref_ws / our_ws:8.1f}x")
    print(f"  {'grid+watershed sampler, ms/sample':34s}{ref_full:12.2f}{our_full:12.2f}{ref_full / our_full:8.1f}x")
    print(f"  {'mean watershed points':34s}{ref_count:12.2f}{our_count:12.2f}")
    print(f"  {'mean distance from edges, px':34s}{ref_distance:12.2f}{our_distance:12.2f}")


def chamfer_watershed_points(flow: np.ndarray, nms_ks: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """motionprop's watershed with OpenCV's 5x5 chamfer distance instead of the exact one (the rejected shortcut)."""
    import cv2

    from motionprop.data import guidance

    edge = guidance.motion_edges(flow)
    edge /= max(edge.max(), 0.01)
    away = (edge <= 0.1).view(np.uint8)
    if away.all():
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    distance = cv2.distanceTransform(away, cv2.DIST_L2, cv2.DIST_MASK_5)
    rows, cols = guidance._local_maxima(distance, nms_ks)
    height, width = distance.shape
    inside = (distance[rows, cols] > 0) & (rows > 0) & (cols > 0) & (rows < height - 1) & (cols < width - 1)
    rows, cols = rows[inside], cols[inside]
    keep = guidance._drop_near_duplicates(rows, cols, (nms_ks - 1) / 2, rng)
    return rows[keep], cols[keep]


def report_breakdown(name: str, flows: Sequence[np.ndarray], nms_ks: int, repeats: int) -> None:
    """Print where motionprop's watershed spends its time, and how the chamfer shortcut would change it."""
    import cv2

    from motionprop.data import guidance

    def edges(flow, rng):
        return guidance.motion_edges(flow)

    away = [(guidance.motion_edges(f) <= 0.1 * guidance.motion_edges(f).max()).view(np.uint8) for f in flows]
    distances = [cv2.distanceTransform(a, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) for a in away]
    exact_dt, chamfer_dt, maxima = (
        time_interleaved([lambda a, rng: cv2.distanceTransform(a, cv2.DIST_L2, cv2.DIST_MASK_PRECISE),
                          lambda a, rng: cv2.distanceTransform(a, cv2.DIST_L2, cv2.DIST_MASK_5)], away, repeats)
        + time_interleaved([lambda d, rng: guidance._local_maxima(d, nms_ks)], distances, repeats))
    exact, chamfer = time_interleaved(
        [lambda f, rng: guidance.watershed_points(f, nms_ks, rng), lambda f, rng: chamfer_watershed_points(f, nms_ks, rng)],
        flows, repeats)
    (edge_ms,) = time_interleaved([edges], flows, repeats)
    exact_count, exact_distance = statistics(lambda f, rng: guidance.watershed_points(f, nms_ks, rng), flows)
    chamfer_count, chamfer_distance = statistics(lambda f, rng: chamfer_watershed_points(f, nms_ks, rng), flows)
    print(f"  motionprop watershed {exact:.2f} ms = motion edges {edge_ms:.2f} + exact distance transform "
          f"{exact_dt:.2f} + local maxima {maxima:.2f} + the rest")
    print(f"  with the 5x5 chamfer distance ({chamfer_dt:.2f} ms): {chamfer:.2f} ms, points {chamfer_count:.2f} "
          f"(exact {exact_count:.2f}), distance from edges {chamfer_distance:.2f} px "
          f"(exact {exact_distance:.2f}, {100 * (chamfer_distance / exact_distance - 1):+.1f} %)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="folder holding sintel/ (skipped if absent)")
    parser.add_argument("--size", type=int, default=384, help="side of the square synthetic flows")
    parser.add_argument("--num-synthetic", type=int, default=20, help="number of synthetic flows")
    parser.add_argument("--nms-ks", type=int, nargs="+", default=[41, 15],
                        help="window sizes of the watershed's local maxima (41: AlexNet/VOC presets, 15: LIP)")
    parser.add_argument("--bg-ratio", type=float, default=1.0 / 6400, help="grid density of the full sampler")
    parser.add_argument("--max-num-guide", type=int, default=150, help="cap of the full sampler (-1: none)")
    parser.add_argument("--repeats", type=int, default=3, help="timing passes; each flow's best is kept")
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the watershed's steps and the 5x5 chamfer shortcut (with its statistics)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    if not args.all_cores:
        use_one_core()
    sets = {}
    if (args.data / "sintel").is_dir():
        sets["Sintel GT (416 short side, 384 crops)"] = sintel_crops(args.data, args.size)
    else:
        print(f"note: no Sintel data at {args.data}; synthetic flows only")
    rng = np.random.default_rng(1234)
    sets["synthetic piecewise-affine"] = [piecewise_affine_flow(args.size, args.size, rng)
                                          for _ in range(args.num_synthetic)]
    for nms_ks in args.nms_ks:
        for name, flows in sets.items():
            report(name, flows, nms_ks, args.bg_ratio, args.max_num_guide, args.repeats)
            if args.breakdown:
                report_breakdown(name, flows, nms_ks, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
