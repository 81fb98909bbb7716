"""The original release's weight initialization, applied after a network is built."""

from __future__ import annotations

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
