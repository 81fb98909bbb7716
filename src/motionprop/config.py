"""Typed configuration of a CMP experiment: model, data and training.

A :class:`Config` is read from YAML in one of two layouts:

* motionprop's own: top-level sections ``model``, ``data`` and ``train`` whose
  keys are the dataclass fields below;
* the original release's ``config.yaml`` (sections ``model`` with a nested
  ``module``, ``data`` and ``trainer``), recognised by ``model.module`` and
  translated by :func:`config_from_original`, the one place that knows the
  original key names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .errors import ConfigError

IMAGE_ENCODERS = (
    "alexnet_fcn_32x",
    "alexnet_fcn_8x",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet18_l3",   # the ResNets without layer4 (models/resnet.py)
    "resnet34_l3",
    "resnet50_l3",
    "resnet101_l3",
    "resnet152_l3",
)
SPARSE_ENCODERS = ("shallownet8x", "shallownet32x")
DECODERS = ("plain", "skip")
FLOW_LOSSES = ("discrete", "smooth_l1", "mse")
SAMPLE_STRATEGIES = ("grid", "uniform", "watershed", "gradnms", "single", "full")
FLOW_FILE_TYPES = ("jpg", "flo", "png", "npy", "npz")
GUIDANCE_INPUTS = ("sparse", "dense", "fill")  # fill: dense, with the residual fill in place of the nearest vector
PREDICTIONS = ("flow", "residual")
RESIDUAL_BASES = ("nearest", "idw", "geodesic")  # geodesic: IDW with distances that cost more across image edges
# What weights each guidance vector in the geodesic fill's dominant motion (models/geodesic.py): its Voronoi cell's
# border pixels, area, or border pixels / sqrt(area) (boundary connectivity).
PRIOR_WEIGHTS = ("border", "area", "connectivity")
GUIDANCE_DENSITIES = ("fixed", "random")
CAMERA_FOLLOW = "follow"  # data.camera_motion: a camera that follows the moving subject instead of a random one


@dataclass
class ModelConfig:
    """Architecture of the CMP network and the meaning of its output."""

    image_encoder: str = "resnet50"
    sparse_encoder: str = "shallownet8x"
    decoder: str = "plain"
    decoder_combo: tuple[int, ...] = (1, 2, 4)
    img_enc_dim: int = 256
    sparse_enc_dim: int = 16
    flow_loss: str = "discrete"
    nbins: int = 99
    fmax: float = 50.0
    # Options beyond the paper (models/guidance_encoding.py); the defaults are the paper's network.
    guidance_input: str = "sparse"
    guidance_distance_scale: float = 64.0
    prediction: str = "flow"
    residual_base: str = "nearest"
    idw_power: float = 2.0
    geodesic_weight: float = 40.0
    geodesic_cells: int = 64
    geodesic_prior_distance: float = 0.0
    geodesic_prior_weights: str = "border"
    guidance_radius: float = 0.0
    affinity_dim: int = 0

    @property
    def output_dim(self) -> int:
        """Channels of the raw output: 2 x nbins logits, or 2 for direct flow."""
        return 2 * self.nbins if self.flow_loss == "discrete" else 2

    @property
    def is_discrete(self) -> bool:
        return self.flow_loss == "discrete"

    def validate(self) -> None:
        _check_choice("model.image_encoder", self.image_encoder, IMAGE_ENCODERS)
        _check_choice("model.sparse_encoder", self.sparse_encoder, SPARSE_ENCODERS)
        _check_choice("model.decoder", self.decoder, DECODERS)
        _check_choice("model.flow_loss", self.flow_loss, FLOW_LOSSES)
        _check_choice("model.guidance_input", self.guidance_input, GUIDANCE_INPUTS)
        _check_choice("model.prediction", self.prediction, PREDICTIONS)
        _check_choice("model.residual_base", self.residual_base, RESIDUAL_BASES)
        if self.guidance_input == "fill" and self.prediction != "residual":
            raise ConfigError("model.guidance_input: fill gives the sparse encoder the residual fill: "
                              "it needs model.prediction: residual")
        if not self.idw_power > 0:
            raise ConfigError(f"model.idw_power must be positive, got {self.idw_power}")
        if not self.geodesic_weight >= 0:
            raise ConfigError(f"model.geodesic_weight must be >= 0 (0 = plain IDW), got {self.geodesic_weight}")
        if self.geodesic_cells < 2:
            raise ConfigError(f"model.geodesic_cells must be at least 2, got {self.geodesic_cells}")
        if not self.geodesic_prior_distance >= 0:
            raise ConfigError(f"model.geodesic_prior_distance must be >= 0 (0 = off), got {self.geodesic_prior_distance}")
        if self.geodesic_prior_distance > 0 and (self.prediction != "residual" or self.residual_base != "geodesic"):
            raise ConfigError("model.geodesic_prior_distance > 0 adds the dominant motion to the geodesic fill: "
                              "it needs model.prediction: residual and model.residual_base: geodesic")
        _check_choice("model.geodesic_prior_weights", self.geodesic_prior_weights, PRIOR_WEIGHTS)
        if not self.guidance_distance_scale > 0:
            raise ConfigError(f"model.guidance_distance_scale must be positive, got {self.guidance_distance_scale}")
        if self.affinity_dim < 0:
            raise ConfigError(f"model.affinity_dim must be >= 0 (0 = off), got {self.affinity_dim}")
        if self.affinity_dim and (self.prediction != "residual" or self.residual_base != "idw"
                                  or self.is_discrete):
            raise ConfigError("model.affinity_dim > 0 corrects an IDW fill: it needs model.prediction: residual, "
                              "model.residual_base: idw and a regression flow_loss (not discrete)")
        if not self.guidance_radius >= 0:
            raise ConfigError(f"model.guidance_radius must be >= 0 (0 = off), got {self.guidance_radius}")
        if not self.decoder_combo or any(c not in (1, 2, 4, 8) for c in self.decoder_combo):
            raise ConfigError(
                f"model.decoder_combo must be a non-empty subset of [1, 2, 4, 8], got {list(self.decoder_combo)}"
            )
        if len(set(self.decoder_combo)) != len(self.decoder_combo):
            raise ConfigError(f"model.decoder_combo has repeated scales: {list(self.decoder_combo)}")
        if self.decoder == "skip" and not self.image_encoder.startswith("resnet"):
            raise ConfigError("model.decoder 'skip' needs a ResNet image encoder (it uses its conv1 and layer1 features)")
        if self.image_encoder.startswith("alexnet") and self.encoder_stride != self.sparse_stride:
            raise ConfigError(
                f"model.image_encoder {self.image_encoder} (stride {self.encoder_stride}) and "
                f"model.sparse_encoder {self.sparse_encoder} (stride {self.sparse_stride}) must have the same stride"
            )
        if self.image_encoder.startswith("resnet") and self.sparse_stride != 8:
            raise ConfigError(f"ResNet encoders have stride 8: use model.sparse_encoder shallownet8x, not {self.sparse_encoder}")
        if self.is_discrete:
            if self.nbins < 3 or self.nbins % 2 == 0:
                raise ConfigError(f"model.nbins must be an odd number >= 3, got {self.nbins}")
            if self.fmax <= 0:
                raise ConfigError(f"model.fmax must be positive, got {self.fmax}")
        for name in ("img_enc_dim", "sparse_enc_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")

    @property
    def encoder_stride(self) -> int:
        """Output stride of the image encoder."""
        return 32 if self.image_encoder == "alexnet_fcn_32x" else 8

    @property
    def sparse_stride(self) -> int:
        return 32 if self.sparse_encoder == "shallownet32x" else 8

    @property
    def output_stride(self) -> int:
        """Stride of the raw output relative to the input image."""
        return 2 if self.decoder == "skip" else self.encoder_stride


@dataclass
class DataConfig:
    """Where the training pairs are and how a sample is made from one."""

    train_source: list[str] = field(default_factory=list)
    val_source: list[str] = field(default_factory=list)
    flow_file_type: str = "jpg"
    short_size: int | None = 416
    long_size: int | None = None
    crop_size: tuple[int, int] = (384, 384)
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    sample_strategy: tuple[str, ...] = ("grid", "watershed")
    bg_ratio: float = 0.00015625
    nms_ks: int = 41
    max_num_guide: int = 150
    # guidance_density 'random' (training only): per sample, with probability dense_prob a dense grid
    # (every dense_grid px) + watershed points, else 1..max_sparse points (log-uniform), watershed first.
    guidance_density: str = "fixed"
    dense_prob: float = 0.25
    dense_grid: int = 20
    max_sparse: int = 64
    flip: bool = False
    flow_reverse: bool = False
    flow_scale: bool = False
    flow_rotate: bool = False
    # camera_motion > 0 (training only): with probability camera_prob the flow becomes that of a camera
    # that also moved by a random similarity (translation up to camera_motion px; dataset.add_camera_motion);
    # "follow": of a camera that followed the moving subject (dataset.follow_subject).
    camera_motion: float | str = 0.0
    camera_prob: float = 0.5
    # colour augmentation (training only; not in the paper): both frames' brightness, contrast and
    # saturation scaled by U(1 - colour_jitter, 1 + colour_jitter) each; grey with probability gray_prob.
    colour_jitter: float = 0.0
    gray_prob: float = 0.0
    batch_size: int = 12
    batch_size_val: int = 1
    workers: int = 2
    skip_bad: bool = False  # training: a pair that cannot be read is replaced by the next one, and counted

    def validate(self) -> None:
        _check_choice("data.flow_file_type", self.flow_file_type, FLOW_FILE_TYPES)
        for s in self.sample_strategy:
            _check_choice("data.sample_strategy", s, SAMPLE_STRATEGIES)
        if (self.short_size is None) == (self.long_size is None):
            raise ConfigError("exactly one of data.short_size and data.long_size must be set")
        for name in ("short_size", "long_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 3
                    and all(_is_number(v) and math.isfinite(v) for v in value)):
                raise ConfigError(f"data.{name} must be 3 numbers (R, G, B), got {value!r}")
        if not all(v > 0 for v in self.std):
            raise ConfigError(f"data.std must be positive, got {list(self.std)}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.workers}")
        if (len(self.crop_size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                 for v in self.crop_size) or min(self.crop_size) < 1):
            raise ConfigError(f"data.crop_size must be [height, width], got {list(self.crop_size)}")
        if not 0 < self.bg_ratio <= 1:
            raise ConfigError(f"data.bg_ratio must be in (0, 1], got {self.bg_ratio}")
        if self.nms_ks < 1 or self.nms_ks % 2 == 0:
            raise ConfigError(f"data.nms_ks must be an odd positive number, got {self.nms_ks}")
        _check_choice("data.guidance_density", self.guidance_density, GUIDANCE_DENSITIES)
        if not 0 <= self.dense_prob <= 1:
            raise ConfigError(f"data.dense_prob must be in [0, 1], got {self.dense_prob}")
        if self.dense_grid < 1 or self.max_sparse < 1:
            raise ConfigError("data.dense_grid and data.max_sparse must be positive")
        if not (self.camera_motion == CAMERA_FOLLOW
                or _is_number(self.camera_motion) and 0 <= self.camera_motion < math.inf):
            raise ConfigError(f"data.camera_motion must be a number of pixels >= 0 or {CAMERA_FOLLOW!r}, "
                              f"got {self.camera_motion!r}")
        if not (_is_number(self.camera_prob) and 0 <= self.camera_prob <= 1):
            raise ConfigError(f"data.camera_prob must be in [0, 1], got {self.camera_prob!r}")
        if not (_is_number(self.colour_jitter) and 0 <= self.colour_jitter < 1):
            raise ConfigError(f"data.colour_jitter must be in [0, 1), got {self.colour_jitter!r}")
        if not (_is_number(self.gray_prob) and 0 <= self.gray_prob <= 1):
            raise ConfigError(f"data.gray_prob must be in [0, 1], got {self.gray_prob!r}")
        if self.batch_size < 1 or self.batch_size_val < 1:
            raise ConfigError("data.batch_size and data.batch_size_val must be positive")


@dataclass
class TrainConfig:
    """Optimization schedule and bookkeeping, counted in iterations as the paper does."""

    total_iter: int = 70000
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    beta1: float = 0.9
    lr_steps: list[int] = field(default_factory=list)
    lr_mults: list[float] = field(default_factory=list)
    warmup_lr: list[float] = field(default_factory=list)
    warmup_steps: list[int] = field(default_factory=list)
    print_freq: int = 100
    val_freq: int = 10000
    save_freq: int = 10000
    val_iter: int = -1
    keep_last: int = 3
    keep_every: int = 0  # also keep the checkpoints at multiples of this iteration count (0: none)
    num_gpus: int = 1
    seed: int = 0
    grad_accum: int = 1
    grad_clip: float = 0.0
    amp: str = "auto"  # bf16 autocast where native (AVX512-BF16/AMX CPUs, CUDA), else float32: precision.py
    channels_last: bool = True  # NHWC: 0.73-0.91x the step time at paper sizes (docs/benchmarks.md)
    sync_bn: bool = False
    loss_resolution: str = "full"
    loss_impl: str = "fused"
    num_val_images: int = 4
    init: str = "original"
    image_encoder_init: str = ""  # a trained encoder file/folder to start the image encoder from (encoder_init.py)
    image_encoder_lr_mult: float = 1.0  # the image encoder learns at this x train.lr's schedule, the rest at 1x
    motion_weight: float = 0.0  # each pixel's loss x (1 + this x min(|flow|, 20 px) / 20); 0: the plain mean

    def validate(self) -> None:
        _check_choice("train.optimizer", self.optimizer, ("sgd", "adam"))
        _check_choice("train.amp", self.amp, ("auto", "none", "bf16", "fp16"))
        _check_choice("train.loss_resolution", self.loss_resolution, ("full", "output"))
        _check_choice("train.loss_impl", self.loss_impl, ("fused", "reference"))
        _check_choice("train.init", self.init, ("original", "kaiming"))
        if not isinstance(self.image_encoder_init, str):
            raise ConfigError(f"train.image_encoder_init must be a path (a string), got {self.image_encoder_init!r}")
        if self.grad_accum < 1:
            raise ConfigError(f"train.grad_accum must be >= 1, got {self.grad_accum}")
        if self.keep_every < 0:
            raise ConfigError(f"train.keep_every must be >= 0 (0: keep only the newest train.keep_last), "
                              f"got {self.keep_every}")
        for name in ("print_freq", "val_freq", "save_freq", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.total_iter < 1:
            raise ConfigError(f"train.total_iter must be positive, got {self.total_iter}")
        if not (_is_number(self.image_encoder_lr_mult) and 0 < self.image_encoder_lr_mult < math.inf):
            raise ConfigError(f"train.image_encoder_lr_mult must be a positive number, got {self.image_encoder_lr_mult!r}")
        for name in ("lr", "momentum", "weight_decay", "beta1", "grad_clip", "motion_weight"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"train.{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0:
            raise ConfigError("train.lr must be positive, got 0")
        if len(self.lr_steps) != len(self.lr_mults):
            raise ConfigError(f"train.lr_steps {self.lr_steps} and train.lr_mults {self.lr_mults} differ in length")
        if list(self.lr_steps) != sorted(self.lr_steps):
            raise ConfigError(f"train.lr_steps must increase, got {self.lr_steps}")
        if len(self.warmup_lr) != len(self.warmup_steps):
            raise ConfigError("train.warmup_lr and train.warmup_steps differ in length")


@dataclass
class Config:
    """A whole experiment: what to build, what to feed it, how to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""
    description: str = ""

    def validate(self) -> "Config":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        if self.train.motion_weight and self.model.flow_loss == "discrete":
            raise ConfigError(f"train.motion_weight {self.train.motion_weight} needs a regression model.flow_loss "
                              f"(smooth_l1 or mse), not discrete")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples) for YAML/JSON."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: unknown value {value!r}; choose one of {', '.join(map(str, choices))}")


def _section_from_dict(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """Build one dataclass section, rejecting unknown keys by name."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"section '{section}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"section '{section}': unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}"
        )
    defaults = cls()
    kwargs = {key: _coerce(f"{section}.{key}", value, getattr(defaults, key)) for key, value in values.items()}
    return cls(**kwargs)


# Numeric settings that also take a word, kept as the word.
_WORDS = {"data.camera_motion": (CAMERA_FOLLOW,)}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Match ``value`` to the type of the field's default: YAML reads '1e-4' as a string, lists for tuples."""
    if value is None or isinstance(value, str) and value in _WORDS.get(name, ()):
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            words = "".join(f" or {word!r}" for word in _WORDS.get(name, ()))
            raise ConfigError(f"{name} must be a number{words}, got {value!r}") from None
    if isinstance(default, float) and not isinstance(value, float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(default, int) and default is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if any(isinstance(v, (list, dict, tuple)) or v is None for v in value):
            raise ConfigError(f"{name} must be a list of plain values, got {value!r}")
        return tuple(value) if isinstance(default, tuple) else list(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build a validated :class:`Config` from a dict in either layout (see module doc)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("a config must be a mapping with sections model, data and train")
    model = raw.get("model")
    if isinstance(model, Mapping) and "module" in model:
        return config_from_original(raw)
    unknown = sorted(set(raw) - {"model", "data", "train", "name", "description"})
    if unknown:
        raise ConfigError(f"unknown top-level section(s) {', '.join(unknown)}; expected model, data, train")
    cfg = Config(
        model=_section_from_dict(ModelConfig, raw.get("model"), "model"),
        data=_section_from_dict(DataConfig, raw.get("data"), "data"),
        train=_section_from_dict(TrainConfig, raw.get("train"), "train"),
        name=str(raw.get("name", "")),
        description=str(raw.get("description", "")),
    )
    try:
        return cfg.validate()
    except (TypeError, ValueError) as exc:  # e.g. a list of strings where numbers belong
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"a config value has the wrong type ({exc})") from None


# Keys of the original config.yaml that have no effect here (cluster, logging or
# dead options of the original code); they are accepted and ignored.
_ORIGINAL_IGNORED = {
    "model": {"arch"},
    "module": {"arch", "pretrained_image_encoder", "skip_layer", "output_dim", "flow_decoder"},
    "data": {"memcached", "image_flow_aug", "flow_aug", "data_mean", "data_div"},
    "trainer": {"initial_val", "val_disp_start_iter", "val_disp_end_iter", "loss_record", "tensorboard"},
}
_ORIGINAL_DECODERS = {"MotionDecoderPlain": "plain", "MotionDecoderSkipLayer": "skip"}
_ORIGINAL_LOSSES = {"DiscreteLoss": "discrete", "L1": "smooth_l1", "L2": "mse"}


def config_from_original(raw: Mapping[str, Any], name: str = "") -> Config:
    """Translate the original release's config.yaml (model.module / data / trainer) to a :class:`Config`.

    The original's skip-layer decoder always used all four scales whatever
    ``decoder_combo`` said, so the combo is set to [1, 2, 4, 8] for it here,
    which is what makes its released checkpoints load.
    """
    try:
        model, module = raw["model"], raw["model"]["module"]
        data, trainer = raw.get("data", {}) or {}, raw.get("trainer", {}) or {}
        decoder_name = module.get("flow_decoder", "MotionDecoderPlain")
        if decoder_name not in _ORIGINAL_DECODERS:
            raise ConfigError(
                f"model.module.flow_decoder: {decoder_name!r} is not supported; "
                f"supported: {', '.join(_ORIGINAL_DECODERS)}"
            )
        decoder = _ORIGINAL_DECODERS[decoder_name]
        loss_name = module.get("flow_criterion", "DiscreteLoss")
        if loss_name not in _ORIGINAL_LOSSES:
            raise ConfigError(f"model.module.flow_criterion: unknown loss {loss_name!r}")
        combo = tuple(module.get("decoder_combo", [1, 2, 4]))
        model_cfg = ModelConfig(
            image_encoder=module["image_encoder"],
            sparse_encoder=module["sparse_encoder"],
            decoder=decoder,
            decoder_combo=(1, 2, 4, 8) if decoder == "skip" else combo,
            img_enc_dim=int(module["img_enc_dim"]),
            sparse_enc_dim=int(module["sparse_enc_dim"]),
            flow_loss=_ORIGINAL_LOSSES[loss_name],
            nbins=int(module.get("nbins", 99)),
            fmax=float(module.get("fmax", 50)),
        )
        if "output_dim" in module and int(module["output_dim"]) != model_cfg.output_dim:
            raise ConfigError(
                f"model.module.output_dim is {module['output_dim']} but {loss_name} with nbins "
                f"{model_cfg.nbins} gives {model_cfg.output_dim}"
            )
        flow_aug = data.get("flow_aug", {}) or {}
        data_cfg = DataConfig(
            train_source=list(data.get("train_source", [])),
            val_source=list(data.get("val_source", [])),
            flow_file_type=data.get("flow_file_type", "jpg"),
            short_size=data.get("short_size"),
            long_size=data.get("long_size"),
            crop_size=tuple(data.get("crop_size", (384, 384))),
            mean=tuple(data.get("data_mean", DataConfig.mean)),
            std=tuple(data.get("data_div", DataConfig.std)),
            sample_strategy=tuple(data.get("sample_strategy", ("grid", "watershed"))),
            bg_ratio=float(data.get("sample_bg_ratio", DataConfig.bg_ratio)),
            nms_ks=int(data.get("nms_ks", DataConfig.nms_ks)),
            max_num_guide=int(data.get("max_num_guide", DataConfig.max_num_guide)),
            flip=bool((data.get("image_flow_aug", {}) or {}).get("flip", False)),
            flow_reverse=bool(flow_aug.get("reverse", False)),
            flow_scale=bool(flow_aug.get("scale", False)),
            flow_rotate=bool(flow_aug.get("rotate", False)),
            batch_size=int(data.get("batch_size", 12)),
            batch_size_val=int(data.get("batch_size_test", 1)),
            workers=int(data.get("workers", 2)),
        )
        train_cfg = TrainConfig(
            total_iter=int(model["total_iter"]),
            optimizer=str(model.get("optim", "SGD")).lower(),
            lr=float(model["lr"]),
            beta1=float(model.get("beta1", 0.9)),
            lr_steps=[int(s) for s in model.get("lr_steps", [])],
            lr_mults=[float(m) for m in model.get("lr_mults", [])],
            warmup_lr=[float(x) for x in model.get("warmup_lr", []) or []],
            warmup_steps=[int(x) for x in model.get("warmup_steps", []) or []],
            print_freq=int(trainer.get("print_freq", 100)),
            val_freq=int(trainer.get("val_freq", 10000)),
            save_freq=int(trainer.get("save_freq", 10000)),
            val_iter=int(trainer.get("val_iter", -1)),
        )
    except KeyError as exc:
        raise ConfigError(f"original-format config is missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"original-format config has a value of the wrong type: {exc}") from None
    _warn_unknown_original_keys(raw)
    return Config(model=model_cfg, data=data_cfg, train=train_cfg, name=name).validate()


def _warn_unknown_original_keys(raw: Mapping[str, Any]) -> None:
    """Warn about original-format keys that neither map to a field nor are known to be inert."""
    known = {
        "model": {"total_iter", "lr_steps", "lr_mults", "lr", "optim", "beta1", "warmup_lr", "warmup_steps", "module"},
        "module": {"image_encoder", "sparse_encoder", "img_enc_dim", "sparse_enc_dim", "decoder_combo",
                   "flow_criterion", "nbins", "fmax"},
        "data": {"train_source", "val_source", "flow_file_type", "short_size", "long_size", "crop_size",
                 "sample_strategy", "sample_bg_ratio", "nms_ks", "max_num_guide", "batch_size",
                 "batch_size_test", "workers"},
        "trainer": {"print_freq", "val_freq", "save_freq", "val_iter"},
    }
    sections = {
        "model": raw.get("model", {}),
        "module": raw["model"]["module"],
        "data": raw.get("data", {}) or {},
        "trainer": raw.get("trainer", {}) or {},
    }
    for section, values in sections.items():
        extra = sorted(set(values) - known[section] - _ORIGINAL_IGNORED[section])
        if extra:
            warnings.warn(f"original config: ignoring unknown key(s) in '{section}': {', '.join(extra)}", stacklevel=3)


def load_config(path: str | Path) -> Config:
    """Read a YAML config file (motionprop's layout or the original release's)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        cfg = config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not cfg.name:
        cfg.name = path.parent.name if path.name == "config.yaml" else path.stem
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (values parsed as YAML)."""
    raw = cfg.to_dict()
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=0.01")
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        if section not in ("model", "data", "train"):
            raise ConfigError(f"override {item!r}: unknown section {section!r}; use model, data or train")
        try:
            raw[section][key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = " ".join(str(getattr(exc, "problem", "") or exc).split())
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem})") from None
    return config_from_dict(raw)


def section_overrides(overrides: Sequence[str], section: str) -> tuple[list[str], list[str]]:
    """``section.key=value`` overrides split into those of ``section`` and the others, in their order (e.g. the
    model changes a trained network can take, ``load_model(..., overrides=)``, and the rest)."""
    mine: list[str] = []
    others: list[str] = []
    for item in overrides:
        (mine if item.split("=", 1)[0].startswith(f"{section}.") else others).append(item)
    return mine, others
