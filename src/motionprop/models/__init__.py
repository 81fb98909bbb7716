"""Networks only: encoders, decoders, the CMP network, and the bin decoding of its output."""

from .bins import FlowBins
from .cmp import CMP, IMAGE_ENCODERS, ImageFeatures, pad_to_multiple
from .factory import create_model, resolve_config
from .init import init_weights_original, init_weights_trained_like

__all__ = ["CMP", "FlowBins", "ImageFeatures", "IMAGE_ENCODERS", "create_model", "resolve_config",
           "init_weights_original", "init_weights_trained_like", "pad_to_multiple"]
