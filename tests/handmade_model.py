"""A hand-made stand-in for a trained CMP network, whose output is known exactly (for the app tests).

:class:`SegmentModel` treats pixels of the same pure colour as one rigid
object: every guidance vector moves all pixels of its pixel's colour class
(several vectors in one class are averaged), and classes without guidance
stay still. It has CMP's interface (``encode_image`` / ``decode`` /
``output_to_flow``, ``input_multiple``, ``min_input_size``, ``config``), so
an arrow at a known place must move exactly that object once the apps have
mapped coordinates and vectors into the working frame and back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import motionprop
from motionprop.models.cmp import ImageFeatures

NUM_CLASSES = 8


class SegmentModel(nn.Module):
    input_multiple = 8
    min_input_size = 8

    def __init__(self, working_size: int = 64):
        super().__init__()
        self.config = motionprop.Config()
        self.config.data.crop_size = (working_size, working_size)
        self.config.data.short_size = working_size
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.bins = None

    def encode_image(self, image: torch.Tensor) -> ImageFeatures:
        """Normalized image (B,3,H,W) -> colour class (B,1,H,W): one bit per channel above its mean."""
        bits = (image > 0).long()
        labels = bits[:, 0] + 2 * bits[:, 1] + 4 * bits[:, 2]
        return ImageFeatures(labels[:, None].float(), (), (image.shape[-2], image.shape[-1]))

    def decode(self, features: ImageFeatures, sparse: torch.Tensor) -> torch.Tensor:
        """sparse (B,4,H,W) -> flow (B,2,H,W): each class moves by the mean of its guidance vectors."""
        labels = features.features[:, 0].long().expand(sparse.shape[0], -1, -1)
        onehot = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()  # (B, K, H, W)
        mask = sparse[:, 2]
        sums = torch.einsum("bkhw,bchw->bkc", onehot, sparse[:, :2] * mask[:, None])
        counts = torch.einsum("bkhw,bhw->bk", onehot, mask)
        mean = sums / counts.clamp_min(1)[..., None]
        return torch.einsum("bkhw,bkc->bchw", onehot, mean)

    def output_to_flow(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(output.shape[-2:]) == tuple(size):
            return output
        return F.interpolate(output, size=tuple(size), mode="bilinear", align_corners=True)


def scene(width: int = 300, height: int = 200) -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """A black image with a red and a blue square: the image and each square's box (x0, y0, x1, y1)."""
    image = np.zeros((height, width, 3), np.uint8)
    boxes = {"red": (200, 60, 224, 84), "blue": (40, 110, 100, 170)}
    image[60:84, 200:224] = (255, 0, 0)
    image[110:170, 40:100] = (0, 0, 255)
    return image, boxes


def box_mask(box: tuple[int, int, int, int], width: int = 300, height: int = 200) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
