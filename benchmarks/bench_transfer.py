"""CPU cost per frame of ``motionprop transfer``'s two stages: frozen features and label propagation.

Process CPU seconds (all threads) and wall-clock seconds per frame for an encoder at a working
size, on random frames (features) and random stride-8 features (propagation with the default
context of 1 + 7 frames). CPU seconds stay meaningful on a busy machine, where wall-clock time
does not; on an idle machine the wall-clock time of the whole command is about the CPU time
divided by the threads that torch uses.

    python benchmarks/bench_transfer.py                          # ResNet-18, short side 240
    python benchmarks/bench_transfer.py --encoder random:resnet50:0 --sizes 240 480
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from motionprop.evaluation.benchmark import working_size
from motionprop.evaluation.encoders import load_encoders, parse_encoder
from motionprop.evaluation.propagation import PropagationConfig, propagate_clip


def measure(fn, frames: int) -> tuple[float, float]:
    """(CPU s, wall s) per frame of ``fn()``, which handles ``frames`` frames."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return (time.process_time() - cpu) / frames, (time.perf_counter() - wall) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="random:resnet18:0", help="ENCODER as motionprop transfer takes it")
    parser.add_argument("--sizes", type=int, nargs="+", default=[240], help="short sides (frames are 480x854)")
    parser.add_argument("--frames", type=int, default=8, help="frames timed per stage")
    args = parser.parse_args()
    encoder = load_encoders(parse_encoder(args.encoder))[0]
    print(f"{args.encoder} ({encoder.layer}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| short side | grid | features CPU s/frame | propagation CPU s/frame | features wall | propagation wall |")
    print("|---:|---|---:|---:|---:|---:|")
    for size in args.sizes:
        h, w = working_size(480, 854, size)
        images = torch.randn(args.frames, 3, h, w)
        with torch.inference_mode():
            feats = encoder.features(images[:1])                      # warm-up
            f_cpu, f_wall = measure(lambda: encoder.features(images), args.frames)
        steps = 2 * args.frames                                       # context fills up after 7 steps
        feats = torch.randn(steps + 1, feats.shape[1], h // 8, w // 8)
        first = np.zeros((h // 8, w // 8), np.uint8)
        first[: h // 16, : w // 16] = 1
        p_cpu, p_wall = measure(lambda: propagate_clip(feats, first, 2, PropagationConfig()), steps)
        print(f"| {size} | {h // 8}x{w // 8} | {f_cpu:.3f} | {p_cpu:.3f} | {f_wall:.3f} | {p_wall:.3f} |")


if __name__ == "__main__":
    main()
