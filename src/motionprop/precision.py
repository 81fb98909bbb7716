"""Numeric precision of the network's convolutions: float32, or bfloat16 autocast where the hardware has it.

bf16 autocast runs the convolutions and matrix products in bfloat16 and keeps
the rest (normalizations, softmax, the loss) in float32. On CPUs with native
bf16 (AVX512-BF16, AMX) and on CUDA GPUs with bf16 it is the fast choice; on
other CPUs it is emulated and 1-2x *slower* than float32
(docs/benchmarks.md). ``auto`` picks it only where it is native.

Names, as ``train.amp`` and the apps' ``--precision`` take them:

- ``none`` / ``fp32``: float32 throughout;
- ``bf16``: bfloat16 autocast, wherever asked;
- ``fp16``: float16 autocast (CUDA; training uses a gradient scaler);
- ``auto``: ``bf16`` where :func:`native_bf16` says so, else float32.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "none", "fp32", "bf16", "fp16")


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 convolutions run natively: a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:  # torch >= 2.3 counts emulated bf16 (pre-Ampere GPUs, slow) unless told not to
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # private helpers of torch.cpu (present since torch 2.1); absent means "don't know": no
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve(precision: str, device: torch.device | str) -> str:
    """``precision`` with ``auto`` and ``fp32`` made concrete: one of ``none``, ``bf16``, ``fp16``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "none"
    return "none" if precision == "fp32" else precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (resolved here) on ``device``; a no-op for float32."""
    device = torch.device(device)
    precision = resolve(precision, device)
    if precision == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def describe(precision: str, device: torch.device | str) -> str:
    """A short phrase for logs: what ``precision`` resolves to on ``device`` and why."""
    device = torch.device(device)
    resolved = resolve(precision, device)
    name = {"none": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[resolved]
    if precision != "auto":
        return name
    why = "native bf16 on this device" if resolved == "bf16" else "no native bf16 on this device"
    return f"{name} (auto: {why})"
