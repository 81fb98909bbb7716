"""Motion propagation on held-out real video: a checkpoint's end-point error against non-learned baselines.

Frames of DAVIS-layout clips (``ROOT/JPEGImages/[480p/]<clip>/*.jpg``) are
resized to a short side of ``--size`` px (bicubic) and centre-cropped to a
multiple of 8. The target of a pair is OpenCV's DIS ``medium`` flow from frame
t to t + ``--gap`` (cached in ``--cache``). Guidance comes from motionprop's
sampler at three densities, seeded per pair:

* ``1``: one watershed point (``nms_ks`` 15);
* ``20``: 20 watershed points (``nms_ks`` 15);
* ``dense``: a grid every 40 px plus every watershed point.

For every density it reports the mean end-point error (px) of each checkpoint,
of nearest-guidance fill, of inverse-distance weighting and of zero flow, and
the checkpoint's error at the guided pixels themselves (a dragged point should
move as dragged). For a residual model (``model.prediction: residual``) it also
reports its fill alone, the non-learned flow its network corrects: the
difference is what the network adds. ``--json`` writes every figure with the settings.

    python benchmarks/bench_real_motion.py quickstart/run/checkpoints/iter_0001300 \\
        --davis ../shared/data/davis2016 --json davis.json

The DAVIS clips are a test set: never train on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

DENSITIES = {
    "1": dict(strategy=("watershed",), bg_ratio=1 / 1600, nms_ks=15, max_num_guide=1),
    "20": dict(strategy=("watershed",), bg_ratio=1 / 1600, nms_ks=15, max_num_guide=20),
    "dense": dict(strategy=("grid", "watershed"), bg_ratio=1 / 1600, nms_ks=15, max_num_guide=-1),
}


def clip_folders(root: Path, clips: Sequence[str] | None) -> list[Path]:
    """The frame folders of a DAVIS-layout root, with or without the resolution folder."""
    base = root / "JPEGImages"
    if (base / "480p").is_dir():
        base = base / "480p"
    if not base.is_dir():
        sys.exit(f"bench_real_motion: {root} has no JPEGImages/ folder (DAVIS layout)")
    found = sorted(p for p in base.iterdir() if p.is_dir())
    if clips:
        names = {p.name: p for p in found}
        missing = [c for c in clips if c not in names]
        if missing:
            sys.exit(f"bench_real_motion: clip(s) not in {base}: {', '.join(missing)}")
        found = [names[c] for c in clips]
    return found


def load_frame(path: Path, size: int) -> np.ndarray:
    """RGB uint8, short side ``size`` (bicubic), centre-cropped to multiples of 8."""
    from motionprop.data.dataset import read_image_rgb, resized_size

    image = read_image_rgb(str(path))
    h, w = resized_size(*image.shape[:2], size, None)
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    ch, cw = h // 8 * 8, w // 8 * 8
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(image[top:top + ch, left:left + cw])


def make_pairs(folders: list[Path], size: int, gap: int, step: int, cache: Path) -> list[dict]:
    """(clip, frame, image, flow) for every ``step``-th frame t with t + gap in the clip; flow cached."""
    from motionprop.data.optical_flow import dis_estimator

    estimator = dis_estimator("medium")
    pairs = []
    for folder in folders:
        frames = sorted(folder.glob("*.jpg"))
        for t in range(0, len(frames) - gap, step):
            image = load_frame(frames[t], size)
            key = cache / f"{folder.name}_{t:05d}_g{gap}_s{size}.npy"
            if key.is_file():
                flow = np.load(key)
            else:
                flow = estimator(image, load_frame(frames[t + gap], size)).astype(np.float32)
                cache.mkdir(parents=True, exist_ok=True)
                np.save(key, flow)
            pairs.append({"clip": folder.name, "frame": t, "image": image, "flow": flow})
    return pairs


def guidance(flow: np.ndarray, density: str, seed: int) -> np.ndarray:
    """The (4, H, W) sparse input of one pair at one density."""
    from motionprop.data.guidance import make_sparse_input, sample_guidance

    sparse_flow, mask = sample_guidance(flow, rng=np.random.default_rng(seed), **DENSITIES[density])
    return make_sparse_input(sparse_flow, mask)


def epe(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    error = (a - b).norm(dim=0)
    if where is None:
        return float(error.mean())
    return float(error[where].mean()) if where.any() else float("nan")


def baselines(pairs: list[dict], density: str, seed: int, cache: Path | None) -> tuple[dict, dict]:
    """Mean EPE of nearest fill, IDW and zero flow, and motion statistics, at one density (cached)."""
    from motionprop.baselines import idw_fill, nearest_fill

    key = None
    if cache is not None:
        names = ",".join(f"{p['clip']}:{p['frame']}:{p['flow'].shape}" for p in pairs)
        digest = hashlib.sha1(f"{names}|{density}|{seed}|{DENSITIES[density]}".encode()).hexdigest()[:16]
        key = cache / f"baselines_{digest}.json"
        if key.is_file():
            saved = json.loads(key.read_text())
            return saved["baselines"], saved["motion"]
    sums: dict[str, list[float]] = {"nearest": [], "idw": [], "zero": []}
    magnitudes, guided_magnitudes, counts = [], [], []
    for _, flow, sparse in pair_tensors(pairs, density, seed):
        mask = sparse[2] > 0
        sums["nearest"].append(epe(nearest_fill(sparse[None])[0], flow))
        sums["idw"].append(epe(idw_fill(sparse[None])[0], flow))
        sums["zero"].append(float(flow.norm(dim=0).mean()))
        magnitudes.append(float(flow.norm(dim=0).mean()))
        guided_magnitudes.extend(flow.norm(dim=0)[mask].tolist())
        counts.append(int(mask.sum()))
    result = {k: float(np.mean(v)) for k, v in sums.items()}
    motion = {"mean_flow": float(np.mean(magnitudes)), "mean_guided_vector": float(np.mean(guided_magnitudes)),
              "mean_points": float(np.mean(counts))}
    if key is not None:
        key.write_text(json.dumps({"baselines": result, "motion": motion}))
    return result, motion


def pair_guidance(pair: dict, density: str, seed: int, index: int) -> torch.Tensor:
    """The seeded guidance of pair number ``index`` at ``density``, (4, H, W)."""
    d_index = list(DENSITIES).index(density)
    return torch.from_numpy(guidance(pair["flow"], density, seed * 1_000_003 + index * 7 + d_index))


def pair_tensors(pairs: list[dict], density: str, seed: int) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor]]:
    """Each pair with its target flow (2, H, W) and its seeded guidance at ``density`` (4, H, W).

    The one place the benchmarks (this one, ``bench_fills.py``, ``bench_boundaries.py``, ``bench_gate.py``) turn a
    pair into tensors, so they all score the same guidance.
    """
    for index, pair in enumerate(pairs):
        flow = torch.from_numpy(pair["flow"].transpose(2, 0, 1).copy())
        yield pair, flow, pair_guidance(pair, density, seed, index)


def load_checkpoints(checkpoints: list[str], overrides: list[str] | None = None) -> dict:
    """{checkpoint: model in eval mode}, ``overrides`` (``model.key=value``) applied to each config;
    exits with one line naming the checkpoint that cannot be read."""
    from motionprop import load_model
    from motionprop.errors import MotionpropError

    models = {}
    for checkpoint in checkpoints:
        try:
            models[checkpoint] = load_model(checkpoint, overrides=overrides or ()).eval()
        except MotionpropError as exc:
            sys.exit(f"bench_real_motion: {checkpoint}: {exc}")
    return models


def flow_and_fill(model, image: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """image (1,3,H,W) normalized, sparse (1,4,H,W) -> the model's flow (2,H,W), the same as ``predict_flow``, and for
    a residual model the fill its network corrects (2,H,W), computed once for both (else None)."""
    features = model.encode_image(image)
    output = model.decode(features, sparse)
    flow, fill = model.flow_and_fill(output, tuple(image.shape[-2:]), sparse, features.guidance_cost)
    return flow[0].float(), None if fill is None else fill[0].float()


def run(checkpoints: list[str], pairs: list[dict], densities: list[str], seed: int, amp: str,
        cache: Path | None = None, models: dict | None = None) -> dict:
    """Every figure of the benchmark; ``models`` (from :func:`load_checkpoints`) are loaded here if not given."""
    from motionprop import precision

    results: dict = {"baselines": {}, "models": {c: {} for c in checkpoints}, "motion": {}}
    models = models if models is not None else load_checkpoints(checkpoints)
    for density in densities:
        results["baselines"][density], results["motion"][density] = baselines(pairs, density, seed, cache)
        per_model = {c: {"epe": [], "guided": [], "fill": [], "time": 0.0, "dflow": [], "dflow_max": 0.0}
                     for c in checkpoints}
        for pair, flow, sparse in pair_tensors(pairs, density, seed):
            mask = sparse[2] > 0
            for name, model in models.items():
                cfg = model.config.data
                mean = torch.tensor(cfg.mean).view(3, 1, 1)
                std = torch.tensor(cfg.std).view(3, 1, 1)
                image = (torch.from_numpy(pair["image"].transpose(2, 0, 1).astype(np.float32)) - mean) / std
                tick = time.perf_counter()
                with torch.no_grad(), precision.autocast(amp, "cpu"):
                    pred, fill = flow_and_fill(model, image[None], sparse[None])
                per_model[name]["time"] += time.perf_counter() - tick
                if fill is not None:
                    per_model[name]["fill"].append(epe(fill, flow))
                if amp == "bf16":  # how far bf16 moves the flow from float32's, same weights and input
                    with torch.no_grad():
                        exact = model.predict_flow(image[None], sparse[None])[0].float()
                    moved = (pred - exact).norm(dim=0)
                    per_model[name]["dflow"].append(float(moved.mean()))
                    per_model[name]["dflow_max"] = max(per_model[name]["dflow_max"], float(moved.max()))
                per_model[name]["epe"].append(epe(pred, flow))
                per_model[name]["guided"].append(epe(pred, flow, mask))
        for name in checkpoints:
            r = per_model[name]
            results["models"][name][density] = {"epe": float(np.mean(r["epe"])),
                                                "epe_guided": float(np.nanmean(r["guided"])),
                                                "seconds_per_pair": r["time"] / len(pairs)}
            if r["fill"]:  # a residual model: its own fill, without the network's correction
                results["models"][name][density]["fill_epe"] = float(np.mean(r["fill"]))
            if r["dflow"]:
                results["models"][name][density].update(bf16_dflow_mean=float(np.mean(r["dflow"])),
                                                        bf16_dflow_max=r["dflow_max"])
    return results


def table(results: dict, densities: list[str]) -> str:
    """The markdown table: per density, each model's EPE (at the guided pixels; a residual model's fill alone,
    which says what its network adds) and the baselines'."""
    def header(c: str) -> str:
        has_fill = "fill_epe" in results["models"][c][densities[0]]
        return f"`{Path(c).name}` EPE (at guided px{'; its fill alone' if has_fill else ''})"

    def cell(row: dict) -> str:
        fill = f"; {row['fill_epe']:.2f}" if "fill_epe" in row else ""
        return f"{row['epe']:.2f} ({row['epe_guided']:.2f}{fill})"

    lines = ["| guidance | points | " + " | ".join(header(c) for c in results["models"]) + " | nearest | IDW | zero |",
             "|---|---|" + "---|" * (len(results["models"]) + 3)]
    for d in densities:
        b = results["baselines"][d]
        cells = [cell(results["models"][c][d]) for c in results["models"]]
        lines.append(f"| {d} | {results['motion'][d]['mean_points']:.1f} | " + " | ".join(cells)
                     + f" | {b['nearest']:.2f} | {b['idw']:.2f} | {b['zero']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="motionprop checkpoint folders")
    parser.add_argument("--davis", type=Path, default=Path("../shared/data/davis2016"), help="DAVIS-layout root")
    parser.add_argument("--clips", default=None, help="comma-separated clip names (default: all)")
    parser.add_argument("--size", type=int, default=192, help="short side of the frames (default: 192)")
    parser.add_argument("--gap", type=int, default=2, help="target flow from frame t to t+GAP (default: 2)")
    parser.add_argument("--step", type=int, default=4, help="a pair every STEP frames (default: 4)")
    parser.add_argument("--densities", default="1,20,dense", help="of 1, 20, dense (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="guidance seed (default: 0)")
    parser.add_argument("--amp", choices=("none", "bf16"), default="none",
                        help="autocast for the network; bf16 also reports how far it moves the flow from float32's")
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench_real_motion"),
                        help="folder for the DIS target flows (default: .cache/bench_real_motion)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure and the settings here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.key=value",
                        help="change every checkpoint's model config, e.g. --set model.guidance_radius=32 "
                        "(options that change the weights are refused; repeatable)")
    args = parser.parse_args(argv)
    from motionprop.config import section_overrides

    bad = section_overrides(args.overrides, "model")[1]
    if bad:
        parser.error(f"--set {bad[0]}: only model options can be changed here (model.key=value)")
    densities = args.densities.split(",")
    unknown = [d for d in densities if d not in DENSITIES]
    if unknown:
        parser.error(f"--densities: unknown {', '.join(unknown)}; choose from {', '.join(DENSITIES)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models = load_checkpoints(args.checkpoints, args.overrides)  # before the targets' flow: a bad path fails at once
    pairs = make_pairs(clip_folders(args.davis, args.clips.split(",") if args.clips else None),
                       args.size, args.gap, args.step, args.cache)
    results = run(args.checkpoints, pairs, densities, args.seed, args.amp, args.cache, models)
    results["settings"] = {"davis": str(args.davis), "clips": sorted({p["clip"] for p in pairs}),
                           "pairs": len(pairs), "size": args.size, "gap": args.gap, "step": args.step,
                           "seed": args.seed, "amp": args.amp, "densities": DENSITIES,
                           "overrides": args.overrides}
    print(f"{len(pairs)} pairs from {len(results['settings']['clips'])} clips at {args.size} px, "
          f"DIS medium t -> t+{args.gap}; mean |flow| per density:",
          ", ".join(f"{d}: {results['motion'][d]['mean_flow']:.2f} px (guided vectors "
                    f"{results['motion'][d]['mean_guided_vector']:.2f})" for d in densities))
    print(table(results, densities))
    if args.amp == "bf16":
        for c, row in results["models"].items():
            print(f"bf16 against float32, `{Path(c).name}`: |flow difference| mean / largest px: "
                  + ", ".join(f"{d}: {row[d]['bf16_dflow_mean']:.4f} / {row[d]['bf16_dflow_max']:.3f}"
                              for d in densities))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
