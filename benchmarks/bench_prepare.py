"""Throughput of ``motionprop prepare``: frame pairs per second per core, with DIS medium at 416 px.

    python benchmarks/bench_prepare.py                     # the five real 720p videos of ../shared/data/videos
    python benchmarks/bench_prepare.py --inputs my/videos  # anything 'motionprop prepare' takes
    python benchmarks/bench_prepare.py --json prepare.json --paper-pairs 1260000

One core, timed in CPU seconds (see CLOCK): the process and OpenCV are pinned to it and ``prepare`` runs with one
worker, so decoding, resizing, flow and writing all share that core, as they do
in each of N shards on N cores (shards share nothing but the output folder, so
N cores give N times the rate, storage permitting). Two runs of ``prepare``
with the paper's resolution (short side 416) and DIS medium: its defaults
(a pair every 5 frames, so 5 frames decoded per pair) and every frame starting
a pair (stride 1: decoding shared by the most pairs). Then a breakdown of one
pair's steps on the first video, and what the paper's 1.26M pairs would take.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VIDEOS = HERE.parent.parent / "shared" / "data" / "videos"
CORE_COUNTS = (1, 16, 64, 256, 1024)
# CPU time of the whole process (all its threads, on its one core): on a machine shared with other
# jobs, wall-clock time also counts their turns on the core; CPU time is what a core of one's own gives.
CLOCK = time.process_time
BREAKDOWN = ("decode_ms_per_frame", "resize_ms_per_frame", "histogram_ms", "dis_flow_ms", "write_ms")


def use_one_core() -> None:
    """Pin this process (and OpenCV's and FFmpeg's threads) to one core."""
    import cv2

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run_prepare(inputs: list[str], config, label: str) -> dict:
    """One ``prepare`` run into a fresh temporary folder: time, pairs written and looked at, bytes per pair."""
    from motionprop.data.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        start, cpu_start = time.perf_counter(), time.process_time()
        summary = prepare(inputs, Path(tmp) / "set", config, workers=1, progress=False)
        wall, seconds = time.perf_counter() - start, time.process_time() - cpu_start
        size = folder_bytes(Path(tmp) / "set" / "flow") + folder_bytes(Path(tmp) / "set" / "frames")
    written = summary.pairs_written
    looked_at = written + summary.skipped_cut + summary.skipped_static
    return {"label": label, "stride": config.stride, "max_pairs_per_clip": config.max_pairs_per_clip,
            "clips": summary.clips_done, "failed": len(summary.failed),
            "cpu_seconds": round(seconds, 2), "wall_seconds": round(wall, 2),
            "pairs_written": written, "pairs_looked_at": looked_at,
            "written_per_s": round(written / seconds, 3),
            "looked_at_per_s": round(looked_at / seconds, 3),
            "mb_per_written_pair": round(size / max(written, 1) / 1e6, 3)}


def breakdown(video: str, config, pairs: int = 20) -> dict:
    """Milliseconds per step of one pair on ``video`` (medians; decoding and resizing per frame)."""
    from motionprop.data import layout
    from motionprop.data.optical_flow import create_estimator
    from motionprop.data.prepare import find_clips, histogram_distance, iter_frames, resize_frame

    (clip,) = find_clips([video])
    frames, decode = [], []
    tick = CLOCK()
    for _, load in iter_frames(clip):
        frames.append(load())
        decode.append(CLOCK() - tick)
        tick = CLOCK()
        if len(frames) == pairs + config.gap:
            break
    size = config.target_size(*frames[0].shape[:2])
    resize, small = [], []
    for frame in frames:
        tick = CLOCK()
        small.append(resize_frame(frame, size))
        resize.append(CLOCK() - tick)
    estimator = create_estimator("dis", preset=config.dis_preset)
    histogram, flow_time, write = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        for index in range(pairs):
            first, second = small[index], small[index + config.gap]
            tick = CLOCK()
            histogram_distance(first, second)
            histogram.append(CLOCK() - tick)
            tick = CLOCK()
            flow = estimator(first, second)
            flow_time.append(CLOCK() - tick)
            tick = CLOCK()
            layout.write_frame(Path(tmp) / f"{index}a.jpg", first)
            layout.write_frame(Path(tmp) / f"{index}b.jpg", second)
            layout.write_flow_files(tmp, [f"{index}.{config.flow_format}"], flow)
            write.append(CLOCK() - tick)

    def ms(values: list[float]) -> float:
        return round(1000 * statistics.median(values[1:] if len(values) > 2 else values), 2)

    return {"video": Path(video).name, "source_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
            "working_size": f"{size[1]}x{size[0]}", "decode_ms_per_frame": ms(decode),
            "resize_ms_per_frame": ms(resize), "histogram_ms": ms(histogram), "dis_flow_ms": ms(flow_time),
            "write_ms": ms(write)}


def table(results: dict) -> str:
    """Markdown tables of a result file's runs, breakdown and projection."""
    lines = ["| run | pairs written (looked at) | CPU s (wall s) | written pairs / s / core "
             "| looked-at pairs / s / core | MB per pair |", "|---|---|---|---|---|---|"]
    for run in results["runs"]:
        lines.append(f"| {run['label']} | {run['pairs_written']} ({run['pairs_looked_at']}) "
                     f"| {run['cpu_seconds']} ({run['wall_seconds']}) "
                     f"| {run['written_per_s']} | {run['looked_at_per_s']} | {run['mb_per_written_pair']} |")
    steps = results["breakdown"]
    lines += ["", f"One pair's steps on {steps['video']} ({steps['source_size']} -> {steps['working_size']}), "
              "CPU ms (median):", "", "| " + " | ".join(BREAKDOWN) + " |", "|" + "---|" * len(BREAKDOWN),
              "| " + " | ".join(str(steps[key]) for key in BREAKDOWN) + " |"]
    pairs = results["paper_pairs"]
    lines += ["", f"{pairs:,} written pairs (the paper's smallest set), hours on N cores:", "",
              "| run | " + " | ".join(f"N = {n}" for n in CORE_COUNTS) + " |", "|---|" + "---|" * len(CORE_COUNTS)]
    for run in results["runs"]:
        hours = [pairs / (run["written_per_s"] * n) / 3600 for n in CORE_COUNTS]
        lines.append(f"| {run['label']} | " + " | ".join(f"{h:,.1f}" for h in hours) + " |")
    return "\n".join(lines)


def main() -> int:
    from motionprop.data.prepare import PrepareConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", default=None, help=f"default: {DEFAULT_VIDEOS}/*.mp4")
    parser.add_argument("--paper-pairs", type=int, default=1_260_000, help="pairs to project a time for")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    inputs = args.inputs or sorted(str(p) for p in DEFAULT_VIDEOS.glob("*.mp4"))
    if not inputs:
        print(f"no videos in {DEFAULT_VIDEOS}: give --inputs", file=sys.stderr)
        return 2
    use_one_core()
    runs = [("defaults (a pair every 5 frames)", PrepareConfig()),
            ("every frame starts a pair (--stride 1 --max-pairs 1000)",
             PrepareConfig(stride=1, max_pairs_per_clip=1000))]
    import cv2

    results = {"inputs": inputs, "cores": 1, "opencv": cv2.__version__, "short_size": 416, "dis_preset": "medium",
               "paper_pairs": args.paper_pairs, "runs": [run_prepare(inputs, config, label) for label, config in runs]}
    results["breakdown"] = breakdown(inputs[0], PrepareConfig())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
