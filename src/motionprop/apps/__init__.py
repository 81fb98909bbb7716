"""Applications of a trained CMP network: propagation, guided animation, click-to-mask annotation.

Importing this package loads numpy and torch only; OpenCV, Pillow and PyAV are
imported by the functions that need them.
"""

from .animate import animate, render_frames, write_animation
from .annotate import Annotation, annotate, annotate_batch
from .coco import decode_rle, encode_rle
from .guidance_file import Guidance, read_guidance, write_guidance
from .propagate import Propagator

__all__ = [
    "Propagator",
    "Guidance",
    "read_guidance",
    "write_guidance",
    "animate",
    "render_frames",
    "write_animation",
    "Annotation",
    "annotate",
    "annotate_batch",
    "encode_rle",
    "decode_rle",
]
