"""Build a CMP network from a preset name, a config object or a YAML file."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import Config, ModelConfig, load_config
from ..errors import ConfigError
from ..presets import PRESETS, get_preset
from .cmp import CMP
from .init import init_weights_original


def resolve_config(spec: str | Path | Config | ModelConfig) -> Config:
    """A :class:`Config` from a preset name, a YAML path (motionprop's or the original's) or a config object."""
    if isinstance(spec, Config):
        return spec.validate()
    if isinstance(spec, ModelConfig):
        spec.validate()
        return Config(model=spec)
    if isinstance(spec, (str, Path)):
        text = str(spec)
        if text in PRESETS:
            return get_preset(text)
        if text.endswith((".yaml", ".yml")) or Path(text).is_file():
            return load_config(text)
        raise ConfigError(f"{text!r} is neither a preset nor a YAML file; presets: {', '.join(PRESETS)}")
    raise ConfigError(f"cannot build a config from {type(spec).__name__}")


def create_model(spec: str | Path | Config | ModelConfig, norm_layer: type[nn.Module] = nn.BatchNorm2d) -> CMP:
    """A freshly initialized CMP network (the original's init scheme) in training mode."""
    return init_weights_original(CMP(resolve_config(spec), norm_layer=norm_layer))
