"""The CMP network: image encoder + sparse-motion encoder + propagation decoder."""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config, ModelConfig
from ..errors import InputError
from .alexnet import AlexNetFCN
from .bins import FlowBins
from .decoder import PlainDecoder, SkipDecoder
from .geodesic import edge_cost, geodesic_idw
from .guidance_encoding import affinity_correction, blend_guidance, dense_guidance_input, guidance_fill
from .resnet import RESNET_NAMES, dilated_resnet
from .sparse_encoder import ShallowNet

NormLayer = Callable[[int], nn.Module]

IMAGE_ENCODERS: dict[str, Callable[[int, NormLayer], nn.Module]] = {
    "alexnet_fcn_32x": lambda dim, norm: AlexNetFCN(dim, (4, 2, 2, 2), norm),
    "alexnet_fcn_8x": lambda dim, norm: AlexNetFCN(dim, (2, 2, 2, 1), norm),
    **{name: partial(dilated_resnet, name) for name in RESNET_NAMES},
}
SPARSE_ENCODER_STRIDES: dict[str, tuple[int, int, int]] = {
    "shallownet8x": (2, 2, 2),
    "shallownet32x": (2, 2, 8),
}


# The affinity scale is stored divided by this: SGD then moves it as fast as a logit, not 100x slower.
AFFINITY_SCALE_GAIN = 10.0


class ImageFeatures(NamedTuple):
    """What :meth:`CMP.encode_image` returns: reusable for many guidance sets of the same image."""

    features: torch.Tensor
    """(B, img_enc_dim, H/s, W/s) image encoding."""
    skips: tuple[torch.Tensor, ...]
    """(conv1 (B,64,H/2,W/2), layer1 (B,C,H/4,W/4)) for the skip decoder, else empty."""
    image_size: tuple[int, int]
    """(H, W) of the encoded image."""
    guidance_cost: torch.Tensor | None = None
    """(B,1,H,W) the image's edge cost for a geodesic residual base (``model.residual_base: geodesic``), else None."""


class CMP(nn.Module):
    """Conditional Motion Propagation: predicts the dense flow of one image from sparse flow vectors.

    ``config`` is read once here; the submodules get plain integers. Parameter
    names (``image_encoder.*``, ``flow_encoder.*``, ``flow_decoder.*``) are those
    of the original release, so its checkpoints load with the ``module.`` prefix
    removed. ``norm_layer`` is e.g. ``nn.SyncBatchNorm`` for multi-GPU training.
    """

    def __init__(self, config: Config | ModelConfig, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        if isinstance(config, ModelConfig):
            config = Config(model=config)
        config.model.validate()
        self.config = config
        m = config.model
        self.image_encoder = IMAGE_ENCODERS[m.image_encoder](m.img_enc_dim, norm_layer)
        self.flow_encoder = ShallowNet(4, m.sparse_enc_dim, SPARSE_ENCODER_STRIDES[m.sparse_encoder], norm_layer)
        fused_dim = m.img_enc_dim + m.sparse_enc_dim
        if m.decoder == "skip":
            self.flow_decoder: nn.Module = SkipDecoder(fused_dim, m.output_dim, m.decoder_combo,
                                                       self.image_encoder.skip_dims, norm_layer)
        else:
            self.flow_decoder = PlainDecoder(fused_dim, m.output_dim, m.decoder_combo, norm_layer)
        self.bins = FlowBins(m.nbins, m.fmax) if m.is_discrete else None
        self.uses_skips = m.decoder == "skip"
        self.input_multiple = max(self.image_encoder.output_stride, self.flow_encoder.output_stride)
        # The coarsest decoder branch pools the features by max(combo): it needs at least one cell.
        self.min_input_size = self.image_encoder.output_stride * max(m.decoder_combo)
        self.output_stride = m.output_stride
        self.guidance_input = m.guidance_input
        self.guidance_distance_scale = m.guidance_distance_scale
        self.residual = m.prediction == "residual"
        self.residual_base, self.idw_power = m.residual_base, m.idw_power
        self.geodesic_weight, self.geodesic_cells = m.geodesic_weight, m.geodesic_cells
        self.geodesic_prior_distance, self.geodesic_prior_weights = m.geodesic_prior_distance, m.geodesic_prior_weights
        self._pixel_mean = tuple(float(v) for v in config.data.mean)
        self._pixel_std = tuple(float(v) for v in config.data.std)
        self.guidance_radius = m.guidance_radius
        self.affinity_dim = m.affinity_dim
        if m.affinity_dim:
            self.affinity_embed = nn.Conv2d(m.img_enc_dim, m.affinity_dim, kernel_size=1)
            self.affinity_scale = nn.Parameter(torch.zeros(()))

    @property
    def needs_guidance_for_flow(self) -> bool:
        """Whether turning the raw output into flow needs the sparse guidance (residual or blended models)."""
        return self.residual or self.guidance_radius > 0

    def encode_guidance(self, sparse: torch.Tensor, cost: torch.Tensor | None = None) -> torch.Tensor:
        """sparse (B,4,H,W) -> the sparse encoder's input (B,4,H,W): itself, or a dense form (model.guidance_input).

        ``cost``: the image's :meth:`guidance_cost`, for ``guidance_input: fill`` of a geodesic model.
        """
        if self.guidance_input == "dense":
            return dense_guidance_input(sparse, self.guidance_distance_scale)[0]
        if self.guidance_input == "fill":
            encoded, _ = dense_guidance_input(sparse, self.guidance_distance_scale)
            # Without the dominant-motion prior: the encoder's input stays the same whether a caller
            # (Propagator(dominant_motion=...)) puts the prior in the base fill or not.
            encoded[:, :2] = self.residual_fill(sparse, cost, dominant_motion=False).to(encoded.dtype)
            return encoded
        return sparse

    def training_target(self, flow: torch.Tensor, sparse: torch.Tensor, fill: torch.Tensor | None = None,
                        cost: torch.Tensor | None = None) -> torch.Tensor:
        """What the raw output is trained to match at flow's resolution: the flow, or its residual over the fill.

        ``fill``: :meth:`residual_fill` of ``sparse`` if the caller has it already;
        else ``cost`` is the image's :meth:`guidance_cost` (geodesic base only).
        """
        if not self.residual:
            return flow
        return flow - (self.residual_fill(sparse, cost) if fill is None else fill).to(flow.dtype)

    @property
    def fill_needs_image(self) -> bool:
        """Whether the residual fill depends on the image (``model.residual_base: geodesic``), not only on the guidance."""
        return self.residual and self.residual_base == "geodesic"

    @torch.no_grad()
    def guidance_cost(self, image: torch.Tensor) -> torch.Tensor | None:
        """image (B,3,H,W) normalized -> its edge cost (B,1,H,W) for the geodesic fill, or None if the fill ignores the image."""
        if not self.fill_needs_image:
            return None
        mean = image.new_tensor(self._pixel_mean).view(1, 3, 1, 1)
        std = image.new_tensor(self._pixel_std).view(1, 3, 1, 1)
        with torch.autocast(image.device.type, enabled=False):  # a fixed fill: float32 under any precision
            return edge_cost((image.float() * std + mean) / 255.0, self.geodesic_weight)

    def residual_fill(self, sparse: torch.Tensor, cost: torch.Tensor | None = None,
                      dominant_motion: bool = True) -> torch.Tensor:
        """sparse (B,4,H,W) -> the fill (B,2,H,W) that a residual model's output corrects (model.residual_base).

        A geodesic fill also needs ``cost``, the image's :meth:`guidance_cost`
        (B or 1, 1, H, W), e.g. ``ImageFeatures.guidance_cost``. ``dominant_motion=False``
        leaves out the dominant-motion prior (``model.geodesic_prior_distance``), for
        guidance that is not motion sampled from a video, such as click-to-mask's probes.
        """
        if self.residual_base == "geodesic" and (cost is None or tuple(cost.shape[-2:]) != tuple(sparse.shape[-2:])):
            got = "none" if cost is None else f"{tuple(cost.shape[-2:])}"
            raise InputError(f"this model's fill is geodesic: it needs the image's cost "
                             f"(model.guidance_cost(image)) at the guidance's size {tuple(sparse.shape[-2:])}, "
                             f"got {got}")
        with torch.autocast(sparse.device.type, enabled=False):  # a fixed fill: float32 under any precision
            if self.residual_base == "geodesic":
                return geodesic_idw(sparse.float(), cost, self.idw_power, self.geodesic_cells,
                                    prior_distance=self.geodesic_prior_distance if dominant_motion else 0.0,
                                    prior_weights=self.geodesic_prior_weights)
            return guidance_fill(sparse.float(), self.residual_base, self.idw_power)

    def _check_size(self, tensor: torch.Tensor, name: str, channels: int) -> None:
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor (B, {channels}, H, W), got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            what = "0..255 pixels normalized by the config's mean and std" if name == "image" else "pixels"
            raise InputError(f"{name} must be a float tensor ({what}), got {tensor.dtype}")
        weight = next(self.parameters())
        if tensor.dtype != weight.dtype and not torch.is_autocast_enabled(tensor.device.type):
            raise InputError(f"{name} is {tensor.dtype} but the network's weights are {weight.dtype}: "
                             f"convert it with .to({weight.dtype})")
        if tensor.dim() != 4 or tensor.shape[1] != channels:
            raise InputError(f"{name} must be (B, {channels}, H, W), got {tuple(tensor.shape)}")
        h, w = tensor.shape[-2:]
        k = self.input_multiple
        if h % k or w % k:
            raise InputError(
                f"{name} height and width must be multiples of {k} for this network, got {h}x{w} "
                f"(resize or pad the input, e.g. with motionprop.models.pad_to_multiple)"
            )
        if min(h, w) < self.min_input_size:
            raise InputError(f"{name} is {h}x{w}; this network needs at least {self.min_input_size} pixels per side")

    def encode_image(self, image: torch.Tensor, with_cost: bool = True) -> ImageFeatures:
        """image (B,3,H,W) float, ImageNet-normalized -> :class:`ImageFeatures` (encode once, decode many times).

        ``with_cost=False`` leaves out the edge cost of a geodesic fill (for a caller that has it).
        """
        self._check_size(image, "image", 3)
        if self.uses_skips:
            features, skips = self.image_encoder(image, return_skips=True)
        else:
            features, skips = self.image_encoder(image), ()
        cost = self.guidance_cost(image) if with_cost else None
        return ImageFeatures(features, tuple(skips), (image.shape[-2], image.shape[-1]), cost)

    def decode(self, image_features: ImageFeatures, sparse: torch.Tensor) -> torch.Tensor:
        """Propagate guidance: sparse (B,4,H,W) = flow x, flow y, mask, mask -> raw output (B, out, H/s, W/s).

        The raw output is 2 x nbins bin logits (discrete models) or 2 channels
        of flow in pixels. Image features of batch 1 are shared by all B
        guidance sets, so one encoded image serves a batch of queries.
        """
        self._check_size(sparse, "sparse", 4)
        if tuple(sparse.shape[-2:]) != tuple(image_features.image_size):
            raise InputError(f"sparse is {tuple(sparse.shape[-2:])} but the image was {image_features.image_size}")
        features, skips = image_features.features, image_features.skips
        batch = sparse.shape[0]
        if features.shape[0] != batch:
            if features.shape[0] != 1:
                raise InputError(f"image batch {features.shape[0]} and sparse batch {batch} differ")
            features = features.expand(batch, -1, -1, -1)
            skips = tuple(s.expand(batch, -1, -1, -1) for s in skips)
        guidance = self.encode_guidance(sparse, image_features.guidance_cost)
        fused = torch.cat([features, self.flow_encoder(guidance)], dim=1)
        output = self.flow_decoder(fused, skips) if self.uses_skips else self.flow_decoder(fused)
        if self.affinity_dim:
            output = output + self._affinity(self.affinity_embedding(image_features.features, output),
                                             sparse, batch)
        return output

    def affinity_embedding(self, features: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Image features -> the affinity embedding (B, affinity_dim, h, w) at the raw output's resolution."""
        embedding = self.affinity_embed(features)
        if tuple(embedding.shape[-2:]) != tuple(output.shape[-2:]):
            embedding = F.interpolate(embedding, size=tuple(output.shape[-2:]), mode="bilinear", align_corners=True)
        return embedding

    def _affinity(self, embedding: torch.Tensor, sparse: torch.Tensor, batch: int) -> torch.Tensor:
        """The affinity term of the residual (model.affinity_dim), for ``batch`` guidance sets."""
        if embedding.shape[0] != batch:
            embedding = embedding.expand(batch, -1, -1, -1)
        return affinity_correction(embedding, sparse, self.idw_power, AFFINITY_SCALE_GAIN * self.affinity_scale)

    def cached_decode(self, image_features: ImageFeatures) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`decode` for one encoded image, with everything that depends on the image alone done once.

        Returns ``sparse (B,4,H,W) -> raw output``, equal to ``decode(image_features,
        sparse)`` up to float rounding. Besides the encoder's features, the
        image's share of the decoder's convolutions is precomputed: a query then
        takes 0.16x the time of a full forward pass (skip-layer ResNet-50 at 384,
        ``benchmarks/bench_propagate.py``). Parameters must not change while it is in use.
        """
        if image_features.features.shape[0] != 1:
            raise InputError(f"cached_decode takes the features of one image, got a batch of "
                             f"{image_features.features.shape[0]}")
        decode = self.flow_decoder.with_image(image_features.features, image_features.skips)
        embedding: list[torch.Tensor] = []  # computed at the first query, when the output size is known

        def run(sparse: torch.Tensor) -> torch.Tensor:
            self._check_size(sparse, "sparse", 4)
            if tuple(sparse.shape[-2:]) != tuple(image_features.image_size):
                raise InputError(f"sparse is {tuple(sparse.shape[-2:])} but the image was "
                                 f"{image_features.image_size}")
            output = decode(self.flow_encoder(self.encode_guidance(sparse, image_features.guidance_cost)))
            if not self.affinity_dim:
                return output
            if not embedding:
                embedding.append(self.affinity_embedding(image_features.features, output))
            return output + self._affinity(embedding[0], sparse, sparse.shape[0])

        return run

    def forward(self, image: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """image (B,3,H,W) normalized; sparse (B,4,H,W) -> raw output (B, 2*nbins or 2, H/s, W/s).

        The image's edge cost is computed only when the guidance input needs it
        (``guidance_input: fill``); the flow's fill takes it from the caller.
        """
        return self.decode(self.encode_image(image, with_cost=self.guidance_input == "fill"), sparse)

    def output_to_flow(self, output: torch.Tensor, size: tuple[int, int],
                       sparse: torch.Tensor | None = None, fill: torch.Tensor | None = None,
                       cost: torch.Tensor | None = None) -> torch.Tensor:
        """Raw output -> flow (B,2,H,W) in pixels at ``size``: decoded at low resolution, then upsampled.

        Residual and blended models (:attr:`needs_guidance_for_flow`) also need the
        guidance ``sparse`` (B,4,H,W) at ``size``; ``fill`` is its :meth:`residual_fill`
        if the caller has it already; else a geodesic fill (:attr:`fill_needs_image`)
        needs ``cost``, the image's :meth:`guidance_cost`.
        """
        flow = self.bins.decode(output) if self.bins is not None else output.float()
        if tuple(flow.shape[-2:]) != tuple(size):
            flow = F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=True)
        if not self.needs_guidance_for_flow:
            return flow
        if sparse is None or tuple(sparse.shape[-2:]) != tuple(size):
            raise InputError(f"this model ({'residual' if self.residual else 'guidance_radius'}) needs the "
                             f"guidance at the output size {tuple(size)} to make flow")
        if self.residual:
            fill = self.residual_fill(sparse, cost) if fill is None else fill
            flow = flow + fill
        else:
            fill = None
        if self.guidance_radius > 0:
            flow = blend_guidance(flow, sparse, self.guidance_radius, fill)
        return flow

    def flow_and_fill(self, output: torch.Tensor, size: tuple[int, int], sparse: torch.Tensor,
                      cost: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw output -> (flow, fill) at ``size``: :meth:`output_to_flow`, and for a residual model the
        :meth:`residual_fill` its network corrects (else None), computed once for both.

        For callers that score the fill alone beside the flow (validation, benchmarks): the
        difference is what the network adds. ``cost`` is the image's :meth:`guidance_cost`.
        """
        fill = self.residual_fill(sparse, cost) if self.residual else None
        return self.output_to_flow(output, size, sparse, fill=fill, cost=cost), fill

    def output_to_confidence(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Raw output -> confidence (B,1,H,W) in [0, 1] at ``size`` (discrete models only)."""
        if self.bins is None:
            raise InputError("confidence needs a discrete (bin) model; this one regresses flow directly")
        conf = self.bins.confidence(output)
        if tuple(conf.shape[-2:]) != tuple(size):
            conf = F.interpolate(conf, size=tuple(size), mode="bilinear", align_corners=True)
        return conf

    def predict_flow(self, image: torch.Tensor, sparse: torch.Tensor, return_confidence: bool = False
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """image (B,3,H,W), sparse (B,4,H,W) -> flow (B,2,H,W) in pixels [, confidence (B,1,H,W)]."""
        size = (image.shape[-2], image.shape[-1])
        features = self.encode_image(image)
        output = self.decode(features, sparse)
        flow = self.output_to_flow(output, size, sparse, cost=features.guidance_cost)
        if return_confidence:
            return flow, self.output_to_confidence(output, size)
        return flow


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (B,C,H,W) at the bottom/right to multiples of ``multiple``; returns it and the original (H, W).

    Crop the output back with ``out[..., :H, :W]``: padding only at the bottom
    and right keeps pixel coordinates unchanged.
    """
    h, w = tensor.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        tensor = F.pad(tensor, (0, pw, 0, ph))
    return tensor, (h, w)
