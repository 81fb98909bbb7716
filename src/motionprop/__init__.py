"""motionprop: Conditional Motion Propagation (Zhan et al., CVPR 2019) as a library and a command line.

Conventions used everywhere in the package:

* Flow is ``(B, 2, H, W)`` (or ``(H, W, 2)`` for numpy arrays of one frame) in
  pixels of the image it belongs to; channel 0 is x (right), channel 1 is y (down).
* Images fed to a network are ``(B, 3, H, W)`` float tensors of RGB pixels in
  0..255, normalized with the ImageNet mean and std of the config.
* Sparse guidance fed to a network is ``(B, 4, H, W)``: flow x, flow y, mask, mask
  (the mask is 1 where a guidance vector is given, 0 elsewhere).
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import Any

from .config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from .errors import CheckpointError, ConfigError, FlowFileError, InputError, MotionpropError
from .presets import available_presets, get_preset

# Imported on first use, so 'import motionprop' (and every command's start-up) does not load torch.
_LAZY = {
    "CMP": "motionprop.models",
    "FlowBins": "motionprop.models",
    "create_model": "motionprop.models",
    "load_model": "motionprop.checkpoint",
    "save_model": "motionprop.checkpoint",
    "convert_original": "motionprop.checkpoint",
    "export_encoder": "motionprop.checkpoint",
    "Propagator": "motionprop.apps.propagate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'motionprop' has no attribute {name!r}")


__all__ = [
    "__version__",
    "Config",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "load_config",
    "available_presets",
    "get_preset",
    "CMP",
    "FlowBins",
    "create_model",
    "load_model",
    "save_model",
    "convert_original",
    "export_encoder",
    "Propagator",
    "MotionpropError",
    "ConfigError",
    "CheckpointError",
    "FlowFileError",
    "InputError",
]
