"""Propagation decoders: parallel branches that pool the fused features at several scales.

Each branch ``decoder{s}`` max-pools by ``s`` (none for ``s = 1``), applies
conv3x3-norm-ReLU layers at width 128, and is upsampled back bilinearly
(align_corners=True); the branches are concatenated. Pooling at 1/2 .. 1/8
lets a guidance vector reach far-away pixels of the same object in few layers.
Branches are built in a loop but keep the original's names and indices
(``decoder2.1.weight`` is the first conv of the 1/2 branch), so released
checkpoints load.

Each decoder's ``with_image`` is its forward pass for one image and many
guidance sets: the decoder's input is ``cat(image features, motion features)``,
and the image's share of every convolution that reads it is computed once
(:class:`SplitStage`), so a query costs only the motion's share. Interactive
use (``motionprop.Propagator``) relies on it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

NormLayer = Callable[[int], nn.Module]
BRANCH_WIDTH = 128


def _branch(scale: int, in_dim: int, num_convs: int, norm_layer: NormLayer) -> nn.Sequential:
    """Max-pool by ``scale`` (if > 1), then ``num_convs`` conv3x3-norm-ReLU at width 128."""
    layers: list[nn.Module] = [nn.MaxPool2d(scale, stride=scale)] if scale > 1 else []
    dims = [in_dim] + [BRANCH_WIDTH] * num_convs
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Conv2d(a, b, 3, padding=1), norm_layer(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _conv_norm_relu(in_dim: int, out_dim: int, norm_layer: NormLayer) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, padding=1), norm_layer(out_dim), nn.ReLU(inplace=True))


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class SplitStage:
    """A ``[pool] conv norm relu ...`` stage whose input is ``cat(a, b)``, with ``b``'s share precomputed.

    A convolution with zero padding is linear in its input channels, and max
    pooling acts channel by channel, so ``conv(pool(cat(a, b)))`` equals
    ``conv_a(pool(a)) + conv_b(pool(b))``: when ``b`` depends on the image
    alone, ``conv_b(pool(b))`` is computed once per image. ``fixed_first`` says
    whether ``fixed`` (= ``b``) comes first in the concatenation.
    """

    def __init__(self, stage: nn.Sequential, fixed: torch.Tensor, fixed_first: bool):
        index = next(i for i, m in enumerate(stage) if isinstance(m, nn.Conv2d))
        self.pre, self.conv, self.post = stage[:index], stage[index], stage[index + 1:]
        conv = self.conv
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise TypeError("only plain zero-padded convolutions can be split")
        n = fixed.shape[1]
        weight = conv.weight
        fixed_weight, self.weight = (weight[:, :n], weight[:, n:]) if fixed_first else (weight[:, -n:], weight[:, :-n])
        self.fixed = self._conv(self.pre(fixed), fixed_weight, None)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output on ``cat(fixed, x)`` (or ``cat(x, fixed)``); the batch of ``x`` shares ``fixed``."""
        return self.post(self._conv(self.pre(x), self.weight, self.conv.bias).add_(self.fixed))


def _add_branches(module: nn.Module, scales: Sequence[int], in_dim: int, num_convs: int,
                  norm_layer: NormLayer) -> tuple[int, ...]:
    """Add ``decoder{s}`` submodules to ``module``; return the scales in concatenation order (ascending)."""
    ordered = tuple(sorted(scales))
    for s in ordered:
        module.add_module(f"decoder{s}", _branch(s, in_dim, num_convs, norm_layer))
    return ordered


def _run_branches(branches: Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """Run every branch on ``x`` and concatenate them at ``x``'s resolution."""
    return torch.cat([_upsample_to(branch(x), x) for branch in branches], dim=1)


def _branches(module: nn.Module) -> list[nn.Module]:
    return [getattr(module, f"decoder{s}") for s in module.scales]


def _split_branches(module: nn.Module, image: torch.Tensor) -> list[SplitStage]:
    """The branches with the image features' share of their first convolution precomputed."""
    return [SplitStage(branch, image, fixed_first=True) for branch in _branches(module)]


class PlainDecoder(nn.Module):
    """Branches of two convs each, concatenated, then a 1x1 head; output at the input's resolution."""

    def __init__(self, input_dim: int, output_dim: int, combo: Sequence[int] = (1, 2, 4),
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.scales = _add_branches(self, combo, input_dim, 2, norm_layer)
        self.head = nn.Conv2d(BRANCH_WIDTH * len(self.scales), output_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, input_dim, h, w) fused image + sparse features -> (B, output_dim, h, w)."""
        return self.head(_run_branches(_branches(self), x))

    def with_image(self, image: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> Callable[[torch.Tensor], torch.Tensor]:
        """``motion -> forward(cat(image, motion))`` for one image (batch 1) and any batch of motion features."""
        branches = _split_branches(self, image)
        return lambda motion: self.head(_run_branches(branches, motion))


class SkipDecoder(nn.Module):
    """Branches of three convs, fused to 256, then refined with the encoder's layer1 (1/4) and conv1 (1/2) features.

    Gives sharper flow boundaries; the output is at 1/2 of the image resolution.
    ``skip_dims`` are the channels of (conv1, layer1) of the image encoder.
    """

    def __init__(self, input_dim: int, output_dim: int, combo: Sequence[int] = (1, 2, 4, 8),
                 skip_dims: Sequence[int] = (64, 256), norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        conv1_dim, layer1_dim = skip_dims
        self.scales = _add_branches(self, combo, input_dim, 3, norm_layer)
        self.fusion8 = _conv_norm_relu(BRANCH_WIDTH * len(self.scales), 256, norm_layer)
        self.skipconv4 = _conv_norm_relu(layer1_dim, 128, norm_layer)
        self.fusion4 = _conv_norm_relu(256 + 128, 128, norm_layer)
        self.skipconv2 = _conv_norm_relu(conv1_dim, 32, norm_layer)
        self.fusion2 = _conv_norm_relu(128 + 32, 64, norm_layer)
        self.head = nn.Conv2d(64, output_dim, kernel_size=1)

    def forward(self, x: torch.Tensor, skips: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, input_dim, H/8, W/8); skips = (conv1 (B,64,H/2,W/2), layer1 (B,C,H/4,W/4)) -> (B, output_dim, H/2, W/2)."""
        conv1, layer1 = skips
        f8 = self.fusion8(_run_branches(_branches(self), x))
        f4 = self.fusion4(torch.cat([_upsample_to(f8, layer1), self.skipconv4(layer1)], dim=1))
        f2 = self.fusion2(torch.cat([_upsample_to(f4, conv1), self.skipconv2(conv1)], dim=1))
        return self.head(f2)

    def with_image(self, image: torch.Tensor, skips: Sequence[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``motion -> forward(cat(image, motion), skips)`` for one image (batch 1), any batch of motion features.

        Besides the branches' first convolutions, ``skipconv2/4`` and their
        share of ``fusion2/4`` depend on the image alone and are computed here.
        """
        conv1, layer1 = skips
        branches = _split_branches(self, image)
        fusion4 = SplitStage(self.fusion4, self.skipconv4(layer1), fixed_first=False)
        fusion2 = SplitStage(self.fusion2, self.skipconv2(conv1), fixed_first=False)

        def decode(motion: torch.Tensor) -> torch.Tensor:
            f8 = self.fusion8(_run_branches(branches, motion))
            return self.head(fusion2(_upsample_to(fusion4(_upsample_to(f8, layer1)), conv1)))

        return decode
