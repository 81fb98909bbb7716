"""The original release's weight initialization, applied after a network is built."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def init_weights_original(model: nn.Module, gain: float = 0.02) -> nn.Module:
    """Initialize as the original training code did before its first step.

    Every conv (and transposed conv / linear) weight: Xavier-normal with gain
    0.02, bias 0; every batch-norm: weight ~ N(1, 0.02), bias 0. The modules'
    own constructor initializations are overwritten, as in the original.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _BatchNorm) and module.affine:
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
    return model


def init_weights_trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics at the scale of a trained network (for checks, not training).

    The original init (Xavier, gain 0.02) makes eval-mode outputs ~1e-9, where
    any two networks agree; comparisons and benchmarks need outputs far from
    zero. Convs: He-normal weights, biases N(0, 0.1); batch-norm: weight
    U(0.5, 1.5), bias N(0, 0.1), running mean N(0, 0.1), running var U(0.5, 2).
    """
    gen = torch.Generator().manual_seed(seed)

    def draw(shape: torch.Size, kind: str = "normal") -> torch.Tensor:
        fn = torch.randn if kind == "normal" else torch.rand
        return fn(shape, generator=gen)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(draw(module.weight.shape) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(draw(module.bias.shape) * 0.1)
            elif isinstance(module, _BatchNorm):
                n = (module.num_features,)
                module.weight.copy_(draw(n, "uniform") + 0.5)
                module.bias.copy_(draw(n) * 0.1)
                module.running_mean.copy_(draw(n) * 0.1)
                module.running_var.copy_(draw(n, "uniform") * 1.5 + 0.5)
    return model
