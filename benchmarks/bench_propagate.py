"""Latency of propagation: a full forward (new image) against a query on a cached image.

For each preset, on a 384x384 image, median seconds over ``--repeats`` runs
(after one warm-up), the variants interleaved so that a noisy machine slows
them alike:

* ``network full``: ``output_to_flow(model(image, sparse))``: encoder + sparse
  encoder + decoder + bin decoding;
* ``network cached``: ``output_to_flow(model.decode(features, sparse))``;
* ``Propagator new image``: ``set_image`` + ``propagate`` (what a new image costs);
* ``Propagator query``: ``propagate`` on the cached image, with the cached
  decoder (image-only parts of the decoder done once per image);
* ``Propagator query, plain decode``: the same through ``model.decode``;
* ``Propagator 4 probes``: one annotation click (four guidance sets in one batch);
* ``... channels_last``: the same through ``Propagator(channels_last=True)``
  (a copy of the model with channels-last weights; what ``motionprop app`` and
  the app commands use);
* ``... channels_last bf16``: the same with ``precision="bf16"`` (bfloat16
  autocast: fast on CPUs with AVX512-BF16/AMX, what ``--precision auto`` picks
  there); ``bf16 |dflow|`` rows give its flow's mean and largest difference
  from the fp32 query's in pixels (random weights: an upper bound on what a
  trained network shows);
* ``bins: ...``: decoding one query's bin logits to flow, ``FlowBins.decode``
  (blocks of pixels, bins on the last axis) against the softmax along the
  channel axis of the whole map (the original's way), for logits in the
  default and the channels-last layout.

Weights are random at a trained-like scale (speed does not depend on them).

    python benchmarks/bench_propagate.py
    python benchmarks/bench_propagate.py --presets resnet50_vip+mpii_liteflow --threads 1 --json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DEFAULT_PRESETS = ("resnet50_vip+mpii_liteflow", "resnet50_yfcc_voc_16gpu_42k")
EXAMPLE = HERE.parent.parent / "shared" / "data" / "cmp_examples" / "1.jpg"


def test_image(size: int) -> np.ndarray:
    """The original demo's example 1 resized to size x size, or noise when it is not beside the checkout."""
    import cv2

    if EXAMPLE.is_file():
        image = cv2.cvtColor(cv2.imread(str(EXAMPLE)), cv2.COLOR_BGR2RGB)
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def channel_axis_decode(bins, logits: torch.Tensor) -> torch.Tensor:
    """The bins' softmax expectation along the channel axis of the whole map, as the original computes it."""
    centers = bins.centers(logits.device).view(1, -1, 1, 1)
    with torch.inference_mode():
        parts = logits[:, :bins.nbins], logits[:, bins.nbins:]
        return torch.cat([(torch.softmax(p.float(), 1) * centers).sum(1, keepdim=True) for p in parts], 1)


def measure(preset: str, size: int, repeats: int) -> dict[str, float]:
    from motionprop.apps.annotate import probe_guidance
    from motionprop.apps.propagate import Propagator
    from motionprop.models import create_model, init_weights_trained_like

    model = init_weights_trained_like(create_model(preset)).eval()
    image = test_image(size)
    arrows = [(size * 0.4, size * 0.5, 12.0, -4.0), (size * 0.7, size * 0.3, -6.0, 3.0)]
    still = [(size * 0.1, size * 0.9)]

    fast = Propagator(model, working_size=size)
    plain = Propagator(model, working_size=size, cached_decoder=False)
    last = Propagator(copy.deepcopy(model), working_size=size, channels_last=True)
    half = Propagator(copy.deepcopy(model), working_size=size, channels_last=True, precision="bf16")
    for propagator in (fast, plain, last, half):
        propagator.set_image(image)
    sparse = fast.sparse_input([(arrows, still)])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = (x - fast.mean) / fast.std
    with torch.inference_mode():
        features = model.encode_image(x)
    probes = probe_guidance(np.array([[size * 0.4, size * 0.5]]), np.zeros((0, 2)), (30.0, 30.0))
    with torch.inference_mode():
        logits = model.decode(features, sparse)  # the bins of one query, at the decoder's output size
    logits_last = logits.contiguous(memory_format=torch.channels_last)

    def network_full() -> None:
        with torch.inference_mode():
            model.output_to_flow(model(x, sparse), (size, size))

    def network_cached() -> None:
        with torch.inference_mode():
            model.output_to_flow(model.decode(features, sparse), (size, size))

    def new_image(propagator: Propagator = fast) -> None:
        propagator.set_image(image)
        propagator.propagate(arrows, still)

    cases = {
        "network full": network_full,
        "network cached": network_cached,
        "Propagator new image": new_image,
        "Propagator query": lambda: fast.propagate(arrows, still),
        "Propagator query, plain decode": lambda: plain.propagate(arrows, still),
        "Propagator 4 probes": lambda: fast.propagate_batch(probes),
        "Propagator new image, channels_last": lambda: new_image(last),
        "Propagator query, channels_last": lambda: last.propagate(arrows, still),
        "Propagator 4 probes, channels_last": lambda: last.propagate_batch(probes),
        "Propagator new image, channels_last bf16": lambda: new_image(half),
        "Propagator query, channels_last bf16": lambda: half.propagate(arrows, still),
        "Propagator 4 probes, channels_last bf16": lambda: half.propagate_batch(probes),
        "bins: channel-axis softmax": lambda: channel_axis_decode(model.bins, logits),
        "bins: decode": lambda: model.bins.decode(logits),
        "bins: channel-axis, channels_last": lambda: channel_axis_decode(model.bins, logits_last),
        "bins: decode, channels_last": lambda: model.bins.decode(logits_last),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(values) for name, values in times.items()}
    difference = np.abs(half.propagate(arrows, still) - fast.propagate(arrows, still))
    result["bf16 |dflow| mean px"] = float(difference.mean())
    result["bf16 |dflow| max px"] = float(difference.max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for preset in args.presets:
        results[preset] = measure(preset, args.size, args.repeats)
    if args.json:
        print(json.dumps({"size": args.size, "threads": torch.get_num_threads(), "results": results}, indent=1))
        return
    print(f"{args.size}x{args.size}, {torch.get_num_threads()} threads, median of {args.repeats} (seconds)")
    for preset, row in results.items():
        print(f"\n{preset}")
        for name, seconds in row.items():
            print(f"  {name:40s} {seconds:7.3f}")
        print(f"  {'query / new image':32s} {row['Propagator query'] / row['Propagator new image']:7.2f}")
        print(f"  {'network cached / full':32s} {row['network cached'] / row['network full']:7.2f}")
        print(f"  {'query channels_last / default':32s} "
              f"{row['Propagator query, channels_last'] / row['Propagator query']:7.2f}")
        print(f"  {'query channels_last bf16 / fp32':32s} "
              f"{row['Propagator query, channels_last bf16'] / row['Propagator query, channels_last']:7.2f}")
        print(f"  {'bins decode / channel-axis':32s} {row['bins: decode'] / row['bins: channel-axis softmax']:7.2f}")
        print(f"  {'  the same, channels_last':32s} "
              f"{row['bins: decode, channels_last'] / row['bins: channel-axis, channels_last']:7.2f}")


if __name__ == "__main__":
    main()
