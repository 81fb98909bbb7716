"""Frozen image encoders for transfer: what ``motionprop transfer ENCODER`` accepts, as stride-8 feature maps.

``ENCODER`` is one of

* a motionprop checkpoint folder or its ``model.safetensors`` (``motionprop.load_model``), including
  the output of ``motionprop convert`` (a converted original release);
* an original release file ``ckpt_iter_N.pth.tar`` with ``config.yaml`` beside it or one folder up;
* an encoder file from ``motionprop export-encoder``: ``.safetensors`` (motionprop names, config in
  its metadata) or ``.pth`` (torchvision names, no config: the architecture is read from the keys;
  an AlexNet-BN file is taken as the paper's ``alexnet_fcn_32x``);
* ``random:ARCH[:SEEDS]``: fresh weights with the original release's init scheme
  (:func:`motionprop.models.init.init_weights_original`), ARCH an image encoder name (``resnet18``,
  ``resnet50``, ``alexnet_fcn_32x``, ...) or a preset name, SEEDS e.g. ``0`` or ``0,1,2``
  (default ``0,1,2``; scores are averaged over the seeds).

Features (the same layer for every format, since torchvision exports drop the CMP projection):

* ResNet: the output of ``layer4`` (512 channels for ResNet-18/34, 2048 for ResNet-50+), already
  at stride 8 (layer3 and layer4 dilated); the 1x1 CMP projection ``conv5`` is not used.
  ``features="previous"`` (:func:`at_layer`): ``layer3`` (256 / 1024 channels, stride 8), the
  layer that CRW's label propagation reads (videowalk removes layer4). The ``_l3`` ResNets
  (``resnet18_l3``, without layer4) read ``layer3``, and ``layer2`` (128 / 512 channels) as previous.
* AlexNet-BN: the output of ``conv5`` (256 channels, after its ReLU, before ``pool5``) at stride 8;
  ``previous``: ``conv4`` (384 channels).
  ``alexnet_fcn_8x`` is at stride 8 there already. ``alexnet_fcn_32x`` (the paper's, stride 16 at
  conv5) is run "a trous": ``pool2`` gets stride 1 and conv3-conv5 dilation 2, which computes the
  same conv5 responses as the trained network on a 2x denser grid (up to zero padding at borders).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import DataConfig
from ..errors import CheckpointError, InputError
from ..models.alexnet import AlexNetFCN
from ..models.resnet import LAYER3_SUFFIX, RESNET_LAYOUTS, DilatedResNet, dilated_resnet

RANDOM_PREFIX = "random:"
DEFAULT_RANDOM_SEEDS = (0, 1, 2)
FEATURE_STRIDE = 8


@dataclass
class EncoderSpec:
    """A parsed ENCODER argument, before any weights are read."""

    name: str
    """The argument as given (the key in results.json)."""
    kind: str
    """'random' or 'file'."""
    arch: str = ""
    """For random: the image encoder name; for files filled in when loaded."""
    img_enc_dim: int = 256
    path: Path | None = None
    seeds: tuple[int, ...] = ()


@dataclass
class FrozenEncoder:
    """A frozen stride-8 feature extractor and how to normalize its input images."""

    features: nn.Module
    """image (B,3,H,W) normalized -> features (B, C, H/8, W/8); eval mode, no gradients."""
    arch: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layer: str
    source: str
    seed: int | None = None
    info: dict = field(default_factory=dict)


def parse_encoder(text: str) -> EncoderSpec:
    """An :class:`EncoderSpec` from an ENCODER argument (checks only the syntax and that a file exists)."""
    from ..models.cmp import IMAGE_ENCODERS
    from ..presets import PRESETS, get_preset

    if text.startswith(RANDOM_PREFIX):
        parts = text[len(RANDOM_PREFIX):].split(":")
        arch, dim = parts[0], 256
        if len(parts) > 2 or not arch:
            raise InputError(f"encoder {text!r}: use random:ARCH or random:ARCH:SEEDS (e.g. random:resnet18:0,1,2)")
        if arch in PRESETS:
            model_cfg = get_preset(arch).model
            arch, dim = model_cfg.image_encoder, model_cfg.img_enc_dim
        elif arch not in IMAGE_ENCODERS:
            raise InputError(f"encoder {text!r}: unknown architecture {arch!r}; use one of "
                             f"{', '.join(IMAGE_ENCODERS)} or a preset name")
        seeds = DEFAULT_RANDOM_SEEDS
        if len(parts) == 2:
            try:
                seeds = tuple(int(s) for s in parts[1].split(","))
            except ValueError:
                raise InputError(f"encoder {text!r}: seeds must be integers separated by commas") from None
            if len(set(seeds)) != len(seeds):
                raise InputError(f"encoder {text!r}: repeated seed")
        return EncoderSpec(text, "random", arch, dim, seeds=seeds)
    path = Path(text)
    if not path.exists():
        raise InputError(f"encoder not found: {text} (a checkpoint folder, an encoder file, or random:ARCH[:SEEDS])")
    return EncoderSpec(text, "file", path=path)


def load_encoders(spec: EncoderSpec) -> list[FrozenEncoder]:
    """The frozen feature extractors of a spec: one per seed for random init, one for a file."""
    if spec.kind == "random":
        return [random_encoder(spec.arch, seed, spec.img_enc_dim) for seed in spec.seeds]
    return [load_encoder_file(spec.path)]


def random_encoder(arch: str, seed: int, img_enc_dim: int = 256) -> FrozenEncoder:
    """A freshly initialized encoder (the original's init) drawn from ``torch.manual_seed(seed)``."""
    from ..models.cmp import IMAGE_ENCODERS
    from ..models.init import init_weights_original

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = init_weights_original(IMAGE_ENCODERS[arch](img_enc_dim, nn.BatchNorm2d))
    data = DataConfig()
    return _frozen(module, arch, data.mean, data.std, f"random init (original scheme), seed {seed}", seed)


def load_encoder_file(path: Path) -> FrozenEncoder:
    """A frozen encoder from a checkpoint folder/file or an exported encoder (see the module docstring)."""
    return _frozen(*read_image_encoder(path))


def read_image_encoder(path: Path) -> tuple[nn.Module, str, tuple, tuple, str]:
    """The trained image encoder module of any ENCODER file or folder (not ``random:``).

    Returns (module, architecture name, input mean, input std, source); the module includes the
    CMP projection (for torchvision exports, which drop it, a freshly made one).
    """
    from ..checkpoint import load_model, read_torch_file

    path = Path(path)
    weights = path / "model.safetensors" if path.is_dir() else path
    if weights.suffix == ".safetensors":
        meta = _safetensors_metadata(weights)
        if meta.get("kind") == "image_encoder":
            return _load_exported_safetensors(weights, meta)
        return _from_cmp(load_model(path), str(path))
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder without model.safetensors: not a motionprop checkpoint")
    state = read_torch_file(path)
    if isinstance(state, dict) and ("state_dict" in state or any(k.startswith(("module.image_encoder.", "image_encoder."))
                                                                  for k in state)):
        return _from_cmp(load_model(path), str(path))
    return _load_torchvision(path, state)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _from_cmp(model: nn.Module, source: str) -> tuple[nn.Module, str, tuple, tuple, str]:
    cfg = model.config
    return model.image_encoder, cfg.model.image_encoder, tuple(cfg.data.mean), tuple(cfg.data.std), source


def _load_exported_safetensors(path: Path, meta: dict[str, str]) -> tuple[nn.Module, str, tuple, tuple, str]:
    """An ``export-encoder --format motionprop`` file: our key names, encoder name and width in the metadata."""
    import json

    from safetensors.torch import load_file

    from ..checkpoint import load_state_strict
    from ..config import config_from_dict
    from ..models.cmp import IMAGE_ENCODERS

    try:
        arch = json.loads(meta["image_encoder"])
        dim = int(json.loads(meta["img_enc_dim"]))
        cfg = config_from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: exported encoder with incomplete metadata ({exc})") from None
    if arch not in IMAGE_ENCODERS:
        raise CheckpointError(f"{path}: unknown image encoder {arch!r} in its metadata")
    module = IMAGE_ENCODERS[arch](dim, nn.BatchNorm2d)
    load_state_strict(module, load_file(str(path)), path)
    return module, arch, tuple(cfg.data.mean), tuple(cfg.data.std), str(path)


def _load_torchvision(path: Path, state: object) -> tuple[nn.Module, str, tuple, tuple, str]:
    """An ``export-encoder --format torchvision`` .pth: architecture from the keys, no projection layer."""
    from ..checkpoint import ALEXNET_NAME_MAP, load_state_strict

    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: a PyTorch file, but not a state dict of an image encoder")
    data = DataConfig()
    if "layer1.0.conv1.weight" in state:
        arch = _resnet_arch(state, path)
        module = dilated_resnet(arch, 256)
        state = dict(state)
        for key, value in module.state_dict().items():  # the projection is not in the export, nor used
            if key.startswith(f"{module.PROJECTION}."):
                state[key] = value
        load_state_strict(module, state, path)
        return module, arch, tuple(data.mean), tuple(data.std), str(path)
    if "features.0.weight" in state:
        inverse = {v: k for k, v in ALEXNET_NAME_MAP.items()}
        renamed = {}
        for key, value in state.items():
            layer, leaf = key.rsplit(".", 1)
            if layer not in inverse:
                raise CheckpointError(f"{path}: unexpected key {key} for an AlexNet-BN export")
            renamed[f"{inverse[layer]}.{leaf}"] = value
        module = AlexNetFCN(256, (4, 2, 2, 2))
        for key, value in module.state_dict().items():
            if key.startswith(f"{module.PROJECTION}."):
                renamed[key] = value
        load_state_strict(module, renamed, path)
        return module, "alexnet_fcn_32x", tuple(data.mean), tuple(data.std), str(path)
    raise CheckpointError(f"{path}: neither a CMP checkpoint nor an exported ResNet/AlexNet encoder "
                          f"(first keys: {', '.join(list(state)[:4])})")


def _resnet_arch(state: dict[str, torch.Tensor], path: Path) -> str:
    """resnet18 ... resnet152 (or ``_l3`` without layer4) from the blocks per layer and block type of a state dict."""
    blocks = []
    for layer in range(1, 5):
        indices = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{layer}.")}
        blocks.append(len(indices))
    bottleneck = "layer1.0.conv3.weight" in state
    for name, (block, layout) in RESNET_LAYOUTS.items():
        if (block.expansion == 4) != bottleneck:
            continue
        if tuple(blocks) == tuple(layout):
            return name
        if tuple(blocks) == (*layout[:3], 0):
            return name + LAYER3_SUFFIX
    raise CheckpointError(f"{path}: ResNet with blocks {blocks} matches none of {', '.join(RESNET_LAYOUTS)}")


def _frozen(module: nn.Module, arch: str, mean, std, source: str, seed: int | None = None) -> FrozenEncoder:
    features, layer = stride8_features(module)
    features.eval().requires_grad_(False)
    return FrozenEncoder(features, arch, tuple(float(m) for m in mean), tuple(float(s) for s in std), layer, source,
                         seed)


FEATURE_LAYERS = ("last", "previous")
"""Which layer :func:`at_layer` reads: the encoder's last (ResNet layer4, AlexNet conv5) or the one before."""


class ResNetFeatures(nn.Module):
    """A dilated ResNet up to ``layer{depth}`` (default: its last layer), stride 8, without the CMP projection."""

    def __init__(self, resnet: DilatedResNet, depth: int | None = None):
        super().__init__()
        self.resnet = resnet
        self.depth = resnet.depth if depth is None else depth
        if not 2 <= self.depth <= resnet.depth:
            raise ValueError(f"depth {self.depth}: this ResNet has layers 2..{resnet.depth} at stride 8")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B,3,H,W) normalized -> the features of ``layer{depth}`` (B, C, H/8, W/8)."""
        r = self.resnet
        x = r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(image)))))
        for layer in (r.layer2, r.layer3, getattr(r, "layer4", None))[:self.depth - 1]:
            x = layer(x)
        return x


class AlexNetFeatures(nn.Module):
    """AlexNet-BN up to conv5 (or conv4 with ``last_conv=4``), after its ReLU, at stride 8."""

    def __init__(self, alexnet: AlexNetFCN, last_conv: int = 5):
        super().__init__()
        self.alexnet = alexnet
        self.last_conv = last_conv

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B,3,H,W) normalized -> conv5 (or conv4) features (B, C, H/8, W/8)."""
        a = self.alexnet
        x = a.conv4(a.conv3(a.pool2(a.conv2(a.pool1(a.conv1(image))))))
        return a.conv5(x) if self.last_conv == 5 else x


def stride8_features(module: nn.Module) -> tuple[nn.Module, str]:
    """The stride-8 feature extractor of an image encoder (its last layer) and the name of that layer."""
    if isinstance(module, DilatedResNet):
        return ResNetFeatures(module), f"layer{module.depth}"
    if isinstance(module, AlexNetFCN):
        stride_at_pool2 = module.conv1[0].stride[0] * module.pool1.stride * module.pool2.stride
        if stride_at_pool2 == FEATURE_STRIDE:
            return AlexNetFeatures(module), "conv5"
        if stride_at_pool2 == 2 * FEATURE_STRIDE:
            return AlexNetFeatures(a_trous_pool2(module)), "conv5 (a trous: pool2 stride 1, conv3-5 dilation 2)"
        raise CheckpointError(f"AlexNet with stride {stride_at_pool2} at pool2: cannot make stride-8 features")
    raise CheckpointError(f"no stride-8 features defined for {type(module).__name__}")


def at_layer(encoder: FrozenEncoder, which: str) -> FrozenEncoder:
    """``encoder`` reading its last layer (``"last"``, as loaded) or the layer before (``"previous"``)."""
    if which not in FEATURE_LAYERS:
        raise InputError(f"features {which!r}: choose one of {', '.join(FEATURE_LAYERS)}")
    inner = encoder.features
    if which == "last":
        return encoder
    if isinstance(inner, ResNetFeatures):
        depth = inner.depth - 1
        features, layer = ResNetFeatures(inner.resnet, depth=depth), f"layer{depth}"
    elif isinstance(inner, AlexNetFeatures):
        features, layer = AlexNetFeatures(inner.alexnet, last_conv=4), encoder.layer.replace("conv5", "conv4", 1)
        layer = layer.replace("conv3-5", "conv3-4")
    else:
        raise CheckpointError(f"no previous layer defined for {type(inner).__name__}")
    return dataclasses.replace(encoder, features=features.eval().requires_grad_(False), layer=layer)


def a_trous_pool2(alexnet: AlexNetFCN) -> AlexNetFCN:
    """A copy of ``alexnet`` with pool2's stride removed and conv3-conv5 dilated by 2 (same weights).

    On the denser grid each dilated 3x3 conv sees the inputs the original
    conv saw, so position (2i, 2j) of the new conv5 equals position (i, j) of
    the original one wherever no zero padding is involved.
    """
    net = copy.deepcopy(alexnet)
    net.pool2.stride = 1
    for block in (net.conv3, net.conv4, net.conv5):
        conv = block[0]
        conv.dilation = (2, 2)
        conv.padding = (2 * (conv.kernel_size[0] // 2),) * 2
    return net
