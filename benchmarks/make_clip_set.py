"""Frames of video files (or frame folders) in the DAVIS layout, for bench_real_motion.py on other clips.

    python benchmarks/make_clip_set.py ../shared/data/videos/*.mp4 ../shared/data/bedroom --out clipset

writes ``clipset/JPEGImages/<clip>/00000.jpg ...``: ``--frames`` consecutive frames (48) from a third
of the way into each video (its start is often a still title or a slow start), resized so the short
side is ``--short-side`` px (360, area interpolation); a frame folder contributes its first frames,
copied unchanged. An existing clip folder is refused, never overwritten; each clip is written
to a temporary folder and renamed when complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2

from motionprop.fileio import atomic_dir


def video_frames(path: Path, count: int, short_side: int) -> list:
    """``count`` frames from a third of the way into the video, short side ``short_side``.

    The third is taken from the frame count in the video's header; where the header overstates it (Debian
    ``opencv-doc``'s tree.avi says 444 frames and holds 68), the frames are counted by reading them and the
    third is taken from that count.
    """
    capture = _open(path)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.set(cv2.CAP_PROP_POS_FRAMES, total // 3)
    frames = _read(capture, count, short_side)
    if len(frames) < count:
        capture = _open(path)
        total = 0
        while capture.grab():
            total += 1
        capture = _open(path)
        for _ in range(total // 3):
            capture.grab()
        frames = _read(capture, count, short_side)
    if len(frames) < count:
        sys.exit(f"make_clip_set: {path} has only {len(frames)} frames from its third on, {count} needed")
    return frames


def _open(path: Path) -> "cv2.VideoCapture":
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        sys.exit(f"make_clip_set: cannot read video {path}")
    return capture


def _read(capture: "cv2.VideoCapture", count: int, short_side: int) -> list:
    """Up to ``count`` next frames of ``capture``, resized so the short side is ``short_side``."""
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        scale = short_side / min(h, w)
        frames.append(cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA))
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="video files or folders of .jpg frames")
    parser.add_argument("--out", type=Path, required=True, help="output root (DAVIS layout)")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip (default: 48)")
    parser.add_argument("--short-side", type=int, default=360, help="short side of video frames (default: 360)")
    args = parser.parse_args(argv)
    for source in args.inputs:
        target = args.out / "JPEGImages" / source.stem
        if target.exists():
            sys.exit(f"make_clip_set: {target} exists; remove it or choose another --out")
        if source.is_dir():
            frames = sorted(source.glob("*.jpg"))[:args.frames]
            if len(frames) < args.frames:
                sys.exit(f"make_clip_set: {source} has {len(frames)} .jpg frames, {args.frames} needed")
            with atomic_dir(target) as tmp:  # a clip folder is complete or absent, even after a crash
                for i, frame in enumerate(frames):
                    shutil.copyfile(frame, tmp / f"{i:05d}.jpg")
        elif source.is_file():
            frames = video_frames(source, args.frames, args.short_side)
            with atomic_dir(target) as tmp:
                for i, frame in enumerate(frames):
                    cv2.imwrite(str(tmp / f"{i:05d}.jpg"), frame)
        else:
            sys.exit(f"make_clip_set: input not found: {source}")
        print(f"{target}: {args.frames} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
