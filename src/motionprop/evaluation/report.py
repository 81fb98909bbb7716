"""The tables of ``results.md`` (made from the results dict alone) and the pictures of predicted masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..fileio import atomic_path
from .probe import probe_folds

TASK_TITLES = {"propagation": "label propagation", "probe": "linear probe"}


def task_title(task: str, settings: dict) -> str:
    """A task's heading: the probe's says how its clips were held out."""
    if task != "probe":
        return TASK_TITLES[task]
    folds, clips = settings.get("probe", {}).get("folds", 0), list(settings["clips"])
    held_out = "leave-one-clip-out" if len(probe_folds(clips, folds)) == len(clips) else f"{folds} folds of clips"
    return f"{TASK_TITLES[task]} ({held_out})"


# Distinct colours for object ids 1.. (RGB); background is left as the frame.
_COLOURS = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], np.uint8)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _rows(results: dict) -> list[tuple[str, dict]]:
    rows = [(e["name"] + (" (added baseline)" if e.get("added_as_baseline") else ""), e) for e in results["encoders"]]
    rows += [(name, b) for name, b in results.get("baselines", {}).items()]
    return rows


def results_markdown(results: dict) -> str:
    """results.md: the main table, per-clip J&F, paired differences against random init, and times."""
    tasks = results["settings"]["tasks"]
    s = results["settings"]
    p = s["propagation"]
    bf16 = " (bf16 autocast)" if s.get("precision") == "bf16" else ""
    lines = ["# Transfer results", "",
             f"DAVIS folder `{s['davis']}`, {len(s['clips'])} clips, short side {s['short_side']} px, features at "
             f"stride {s['feature_stride']}{bf16}. Propagation: first frame + {p['context_frames']} previous, top-{p['topk']}, "
             f"radius {p['radius']} cells, temperature {p['temperature']}. J, F and J&F in % "
             f"({s['metrics']}). Random init rows: mean over their seeds (± std over seeds of J&F).", ""]
    header = "| encoder | features |"
    rule = "|---|---|"
    for task in tasks:
        header += f" {task} J | {task} F | {task} J&F |"
        rule += "---:|---:|---:|"
    lines += [header, rule]
    for label, entry in _rows(results):
        row = f"| {label} | {entry.get('features', '—')} |"
        for task in tasks:
            res = entry["tasks"].get(task)
            if res is None:
                row += " — | — | — |"
                continue
            jf = _pct(res["mean"]["JF"])
            if "std_over_seeds" in res:
                jf += f" ± {100 * res['std_over_seeds']['JF']:.1f}"
            row += f" {_pct(res['mean']['J'])} | {_pct(res['mean']['F'])} | {jf} |"
        lines.append(row)
    for task in tasks:
        lines += ["", f"## {task_title(task, s)}: J&F per clip", ""]
        rows = [(label, e) for label, e in _rows(results) if task in e["tasks"]]
        lines.append("| clip | " + " | ".join(label for label, _ in rows) + " |")
        lines.append("|---|" + "---:|" * len(rows))
        for clip in s["clips"]:
            lines.append(f"| {clip} | " + " | ".join(_pct(e["tasks"][task]["clips"][clip]["JF"]) for _, e in rows)
                         + " |")
        lines += _paired_differences(results, task)
    lines += ["", "## Time per encoder run (wall-clock s / process CPU s; random init: per seed)", "",
              "| encoder | features | propagation | probe | total |", "|---|---:|---:|---:|---:|"]
    for entry in results["encoders"]:
        t, c = entry["seconds_per_run"], entry["cpu_seconds_per_run"]
        cells = [f"{t[k]:.0f} / {c[k]:.0f}" for k in ("features", "propagation", "probe")]
        cells.append(f"{sum(t.values()):.0f} / {sum(c.values()):.0f}")
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"Whole run: {results['seconds_total']:.0f} s wall-clock, {results['cpu_seconds_total']:.0f} s CPU, "
              f"{results['environment']['threads']} threads. Features are computed once per run and serve both "
              "tasks.", ""]
    return "\n".join(lines)


def random_pairs(results: dict, task: str) -> list[tuple[dict, dict | None]]:
    """Each pre-trained encoder scored on ``task`` with each random init of its architecture scored on it in
    the same results (one pair with None when there is none): the pairs whose per-clip differences are
    compared. Random inits listed separately (``random:resnet18:0 random:resnet18:1``) give a pair each."""
    randoms = [e for e in results["encoders"] if e["kind"] == "random init" and task in e["tasks"]]
    pairs: list[tuple[dict, dict | None]] = []
    for entry in results["encoders"]:
        if entry["kind"] != "random init" and task in entry["tasks"]:
            refs = [r for r in randoms if r["arch"] == entry["arch"]]
            pairs += [(entry, ref) for ref in refs] or [(entry, None)]
    return pairs


def clip_differences(entry: dict, ref: dict, task: str, clips) -> list[float]:
    """Per-clip J&F of ``entry`` minus that of ``ref`` on ``task``, in the order of ``clips``."""
    return [entry["tasks"][task]["clips"][c]["JF"] - ref["tasks"][task]["clips"][c]["JF"] for c in clips]


def _paired_differences(results: dict, task: str) -> list[str]:
    """Per-clip J&F of each pre-trained encoder minus the random init of its architecture (paired per clip)."""
    lines = []
    for entry, ref in random_pairs(results, task):
        if ref is None:
            continue
        clips = results["settings"]["clips"]
        diffs = clip_differences(entry, ref, task, clips)
        wins = sum(d > 0 for d in diffs)
        lines += ["", f"{entry['name']} minus {ref['name']} (J&F points per clip): "
                  + ", ".join(f"{c} {100 * d:+.1f}" for c, d in zip(clips, diffs))
                  + f"; mean {100 * float(np.mean(diffs)):+.1f}, better on {wins} of {len(diffs)} clips"
                  + _against_every_seed(entry["tasks"][task], ref["tasks"][task], clips)
                  + f"; paired sign-flip test over clips, one-sided p = {sign_flip_p(diffs):.3f}."]
    return lines


def sign_flip_p(diffs: list[float], samples: int = 100_000) -> float:
    """One-sided p-value of a mean paired difference above 0: the share of the 2^n sign patterns of the
    differences whose mean is at least the observed one (exact up to 16 clips, else ``samples`` seeded draws).

    With n clips the smallest value is 2^-n (1/64 for 6 clips: all six better); a win made of one or two
    large clips gets a large p.
    """
    d = np.asarray(diffs, np.float64)
    if d.size == 0:
        return 1.0
    if d.size <= 16:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(np.mean((signs * d).mean(axis=1) >= d.mean() - 1e-12))
    signs = np.random.default_rng(0).choice([-1, 1], size=(samples, d.size))
    hits = int(np.sum((signs * d).mean(axis=1) >= d.mean() - 1e-12))
    return (hits + 1) / (samples + 1)           # the observed pattern counts: never 0


def _against_every_seed(result: dict, random_result: dict, clips) -> str:
    """', above every seed on A and below every seed on B clips': the per-clip comparison that a seed's luck
    cannot make (empty for results of one seed, or written before the per-seed scores were kept)."""
    per_seed = random_result.get("seed_clips")
    if not per_seed or len(per_seed) < 2:
        return ""
    above = sum(all(result["clips"][c]["JF"] > s[c]["JF"] for s in per_seed) for c in clips)
    below = sum(all(result["clips"][c]["JF"] < s[c]["JF"] for s in per_seed) for c in clips)
    return f", above every random seed on {above} and below every one on {below}"


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB frame with object labels (1.., 255 void shown grey) blended in and their outlines drawn."""
    out = frame.astype(np.float32)
    for obj in np.unique(labels):
        if obj == 0:
            continue
        colour = (128, 128, 128) if obj == 255 else _COLOURS[(int(obj) - 1) % len(_COLOURS)]
        region = labels == obj
        out[region] = (1 - alpha) * out[region] + alpha * np.asarray(colour, np.float32)
        contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(float(c) for c in colour), 1)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_pictures(folder: Path, data: list, pictures: dict[str, dict[str, dict[int, np.ndarray]]]) -> None:
    """One PNG per task and clip: for a few frames, ground truth (left) and prediction (right) side by side."""
    from ..visualize import hstack_images

    for task, per_clip in pictures.items():
        for item in data:
            frames = per_clip.get(item.clip.name, {})
            if not frames:
                continue
            h, w = item.frames.shape[1:3]
            rows = []
            for t, pred in sorted(frames.items()):
                gt = item.labels[t] if task == "propagation" else _fg(item.labels[t])
                small = [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in (gt, pred)]
                rows.append(hstack_images([overlay(item.frames[t], m) for m in small]))
                rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
            picture = np.concatenate(rows[:-1])
            path = folder / f"{task}_{item.clip.name}.png"
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            if ok:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(encoded.tobytes())


def _fg(labels: np.ndarray) -> np.ndarray:
    fg = ((labels != 0) & (labels != 255)).astype(np.uint8)
    fg[labels == 255] = 255
    return fg
