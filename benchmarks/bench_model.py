"""Speed and peak memory of the CMP network: eval forward and one training step, per preset.

Each measurement runs in a fresh subprocess, so its peak resident memory
(``ru_maxrss``) belongs to that measurement alone. Figures are medians over
``--repeats`` runs after one warm-up. Compare variants as ratios taken in the
same run: these machines are noisy.

    python benchmarks/bench_model.py                       # fp32, batch 1 and 4
    python benchmarks/bench_model.py --variants channels_last bf16 compile
    python benchmarks/bench_model.py --original-repo /path/to/conditional-motion-propagation
    python benchmarks/bench_model.py --modes loss --batches 4           # the loss alone: reference vs fused

Variants: ``fp32`` (the reference), ``channels_last`` (NHWC memory format),
``bf16`` (``torch.autocast`` to bfloat16 on the CPU, useful on CPUs with
AVX512-BF16/AMX), ``bf16_channels_last`` (both: what ``train.amp=bf16`` does with the trainer's
default ``train.channels_last``), ``compile`` (``torch.compile``, slow to start), ``keep_memory``
(glibc malloc settings in the environment: see ``KEEP_MEMORY``). The variant
outputs are checked against fp32 on the same weights: largest logit difference
relative to the largest logit, and largest decoded-flow difference in pixels.
The weights are random at a trained-like scale, whose logits are large and
peaked, so the flow difference of bf16 overstates what a trained network shows.
With ``--original-repo``, the original release's network is timed too.

``train`` times forward, loss (forward and backward, up to the logits), network
backward and optimizer step separately; our step uses the fused full-resolution
loss (``--loss reference`` for the original's upsample-then-cross-entropy), the
original's step uses the original's loss formula. A checkpoint of a regression model
(e.g. the quickstart's residual) is trained as the trainer does: its training target
(the residual over its fill) and loss at ``train.loss_resolution``. ``loss`` times the loss alone
on logits of the preset's output size and reports its extra memory (peak
resident memory minus that before the first call).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# glibc malloc told to keep freed memory and to serve blocks up to 32 MiB (its maximum) from the heap,
# so that a step reuses the pages of the previous one instead of faulting in fresh ones
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
               "MALLOC_TOP_PAD_": str(256 << 20)}
PAPER_SETTINGS = {  # preset -> input side used in the paper
    "alexnet_yfcc_voc_16gpu_70k": 384,
    "resnet50_yfcc_voc_16gpu_42k": 320,
    "resnet50_vip+mpii_liteflow": 384,
}


def _inputs(size: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, size, size, generator=gen)
    sparse = torch.zeros(batch, 4, size, size)
    idx = torch.randint(0, size * size, (batch, 60), generator=gen)
    for b in range(batch):
        ys, xs = idx[b] // size, idx[b] % size
        sparse[b, :2, ys, xs] = torch.randn(2, 60, generator=gen) * 10
        sparse[b, 2:, ys, xs] = 1
    target = torch.randn(batch, 2, size, size, generator=gen) * 10
    return image, sparse, target


def _build(impl: str, preset: str, original_repo: str | None) -> torch.nn.Module:
    from motionprop.models import create_model, init_weights_trained_like

    if Path(preset).exists():  # a trained checkpoint: realistic outputs for the tolerance check
        import motionprop

        return motionprop.load_model(preset)
    if impl == "original":
        sys.path.insert(0, str(HERE))
        from original_ref import build_original

        return init_weights_trained_like(build_original(original_repo, preset))
    return init_weights_trained_like(create_model(preset))


def _rss_mb() -> float:
    """Current resident memory of this process in MiB (Linux)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _output_shape(preset: str, size: int) -> tuple[int, int, int]:
    """(channels, height, width) of a preset's logits for a size x size input."""
    from motionprop.models import create_model

    model = create_model(preset).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size), torch.zeros(1, 4, size, size))
    return tuple(out.shape[1:])


def loss_worker(args: argparse.Namespace) -> dict:
    """The loss alone (forward + backward) on logits of the preset's output shape: seconds and extra memory."""
    from motionprop.losses import DiscreteLoss, FusedDiscreteLoss

    channels, h, w = _output_shape(args.preset, args.size)
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.batch, channels, h, w, generator=gen) * 4).requires_grad_()
    target = torch.randn(args.batch, 2, args.size, args.size, generator=gen) * 10
    loss_fn = FusedDiscreteLoss() if args.loss == "fused" else DiscreteLoss()
    if args.variant == "compile":
        loss_fn = torch.compile(loss_fn)
    before = _rss_mb()
    times, cpu = [], []
    for _ in range(args.repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss_fn(logits, target).backward()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        logits.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times[1:]), "cpu_seconds": statistics.median(cpu[1:]),
            "first_call_s": times[0], "peak_rss_mb": peak,
            "extra_mb": peak - before, "logits": [channels, h, w]}


def worker(args: argparse.Namespace) -> dict:
    """One measurement: build, warm up, time ``repeats`` runs, report median seconds and peak RSS."""
    from motionprop.losses import DiscreteLoss, FusedDiscreteLoss
    from motionprop.models import FlowBins

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "loss":
        return loss_worker(args)
    torch.manual_seed(0)
    model = _build(args.impl, args.preset, args.original_repo)
    image, sparse, target = _inputs(args.size, args.batch)
    channels_last = args.variant in ("channels_last", "bf16_channels_last")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
        sparse = sparse.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.variant in ("bf16", "bf16_channels_last"))
    net = torch.compile(model) if args.variant == "compile" else model
    nbins, fmax = (model.config.model.nbins, model.config.model.fmax) if hasattr(model, "config") else (99, 50.0)
    fused = args.loss == "fused" and args.impl == "motionprop"
    loss_fn = (FusedDiscreteLoss if fused else DiscreteLoss)(nbins, fmax)
    bins = FlowBins(nbins, fmax)
    as_trained = hasattr(model, "config") and not model.config.model.is_discrete
    if as_trained:  # e.g. the quickstart's regressed residual: the trainer's own target and loss
        from motionprop.losses import build_flow_loss
        from motionprop.train.trainer import compute_loss

        regression = build_flow_loss(model.config.model)

        def loss_fn(logits: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
            target = model.training_target(flow, sparse, cost=model.guidance_cost(image))
            return compute_loss(regression, logits, target,
                                model.config.train.loss_resolution)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9, weight_decay=1e-4)

    def eval_step() -> dict[str, torch.Tensor]:
        with torch.no_grad(), autocast:
            out = net(image, sparse)
        flow = out.float() if as_trained else bins.decode(out.float())
        flow = torch.nn.functional.interpolate(flow, size=image.shape[-2:], mode="bilinear", align_corners=True)
        return {"logits": out.float(), "flow": flow}

    parts: dict[str, list[float]] = {"forward": [], "loss": [], "backward": [], "optimizer": []}

    def train_step() -> torch.Tensor:
        t0 = time.perf_counter()
        with autocast:
            out = net(image, sparse)
        t1 = time.perf_counter()
        logits = out.detach().float().requires_grad_()
        loss = loss_fn(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out.backward(grad.to(out.dtype))  # the same gradients as loss.backward(), timed apart
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[key].append(seconds)
        return loss

    if args.mode == "eval":
        model.eval()
        step = eval_step
    else:
        model.train()
        step = train_step
    t0 = time.perf_counter()
    result = step()  # warm-up (and compilation)
    first = time.perf_counter() - t0
    for values in parts.values():
        values.clear()
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    report = {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu), "first_call_s": first,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    report.update({key: statistics.median(values) for key, values in parts.items() if values})
    if args.mode == "eval":
        torch.save(result, args.flow_out) if args.flow_out else None
    return report


def _checkpoint_size(path: str) -> int:
    import motionprop

    return int(motionprop.load_model(path).config.data.crop_size[0])


def _run_worker(impl: str, preset: str, size: int, batch: int, mode: str, variant: str, repeats: int,
                original_repo: str | None, flow_out: str | None, loss: str = "fused", threads: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--preset", preset, "--size", str(size),
           "--batch", str(batch), "--mode", mode, "--variant", variant, "--repeats", str(repeats), "--loss", loss,
           "--threads", str(threads)]
    if original_repo:
        cmd += ["--original-repo", original_repo]
    if flow_out:
        cmd += ["--flow-out", flow_out]
    env = dict(os.environ, **KEEP_MEMORY) if variant == "keep_memory" else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _input_sizes(presets: list[str], parser: argparse.ArgumentParser) -> dict[str, int]:
    """Each preset's input side: the paper's for its presets, the config's crop for a checkpoint; anything else
    stops here with one line naming it, before any measurement."""
    from motionprop.errors import MotionpropError

    sizes = {}
    for preset in presets:
        try:
            sizes[preset] = PAPER_SETTINGS.get(preset) or _checkpoint_size(preset)
        except MotionpropError as exc:
            parser.error(f"--presets: {preset!r} is neither a preset ({', '.join(PAPER_SETTINGS)}) nor a "
                         f"checkpoint that can be read ({exc})")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(PAPER_SETTINGS),
                        help="presets to measure, or checkpoint folders (trained weights give a realistic "
                        "output difference for the variants; measured at their config's crop size)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train", "loss"])
    parser.add_argument("--loss", default="fused", choices=["fused", "reference"],
                        help="the full-resolution loss of our train step (default: fused)")
    parser.add_argument("--variants", nargs="+", default=["channels_last", "bf16"],
                        choices=["fp32", "channels_last", "bf16", "bf16_channels_last", "compile", "keep_memory"],
                        help="variants besides fp32, which always runs first as the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per measurement (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--original-repo", help="checkout of the original CMP code, to time it side by side")
    parser.add_argument("--json", help="also write the results to this JSON file")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="motionprop", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--flow-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import tempfile

    sizes = _input_sizes(args.presets, parser)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'preset':30s} {'size':>4s} {'mode':5s} {'B':>2s} {'impl/variant':24s} {'s/iter':>8s} {'vs fp32':>8s} {'peak MB':>8s} {'rel.dlogit':>10s} {'max|dflow|':>10s}"
    print(header)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            size = sizes[preset]
            for mode in args.modes:
                for batch in args.batches:
                    runs = [("motionprop", "fp32")]
                    if mode == "loss":  # the original's loss is the reference formula: no checkout needed
                        runs = [("reference", "fp32"), ("motionprop", "fp32")]
                        runs += [("motionprop", v) for v in args.variants if v in ("compile", "keep_memory")]
                    elif args.original_repo:
                        runs.append(("original", "fp32"))
                    if mode != "loss":
                        runs += [("motionprop", v) for v in args.variants if v != "fp32"]
                    base = None
                    ref_flow = None
                    for impl, variant in runs:
                        flow_out = str(Path(tmp) / f"{impl}_{variant}.pt") if mode == "eval" else None
                        loss = "reference" if impl == "reference" else args.loss
                        r = _run_worker("motionprop" if impl == "reference" else impl, preset, size, batch, mode,
                                        variant, args.repeats, args.original_repo, flow_out, loss, args.threads)
                        r.update(preset=preset, size=size, mode=mode, batch=batch, impl=impl, variant=variant)
                        rows.append(r)
                        if "error" in r:
                            print(f"{preset[:30]:30s} {size:4d} {mode:5s} {batch:2d} {impl + '/' + variant:24s} ERROR {r['error']}")
                            continue
                        if base is None and variant == "fp32":
                            base = r["seconds"]
                        diff = ""
                        if flow_out:
                            outputs = torch.load(flow_out, weights_only=True)
                            if ref_flow is None:
                                ref_flow = outputs
                            else:
                                r["rel_logit_err"] = ((outputs["logits"] - ref_flow["logits"]).abs().max()
                                                      / ref_flow["logits"].abs().max()).item()
                                r["max_abs_flow_diff_px"] = (outputs["flow"] - ref_flow["flow"]).abs().max().item()
                                diff = f"{r['rel_logit_err']:10.2g} {r['max_abs_flow_diff_px']:10.2g}"
                        ratio = f"{r['seconds'] / base:8.2f}" if base else ""
                        if "forward" in r:
                            diff = " ".join(f"{k[:3]} {r[k]:.3f}" for k in ("forward", "loss", "backward", "optimizer"))
                            diff += f" CPU {r['cpu_seconds']:.3f}"
                        if "extra_mb" in r:
                            diff = (f"extra {r['extra_mb']:.0f} MB, CPU {r['cpu_seconds']:.3f} s, "
                                    f"first call {r['first_call_s']:.2f} s")
                        print(f"{preset[:30]:30s} {size:4d} {mode:5s} {batch:2d} {impl + '/' + variant:24s} "
                              f"{r['seconds']:8.3f} {ratio:>8s} {r['peak_rss_mb']:8.0f} {diff:>21s}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
