"""Named presets: the paper's experiments with the original release's hyper-parameters.

Names are those of the original repository's experiment folders, so a user of
the original finds the same experiment under the same name. Batch sizes are per
process (GPU), as in the original; ``train.num_gpus`` records how many processes
the paper used, so the global batch is ``data.batch_size * train.num_gpus``.
"""

from __future__ import annotations

from typing import Callable

from .config import Config, DataConfig, ModelConfig, TrainConfig
from .errors import ConfigError


def _alexnet() -> ModelConfig:
    return ModelConfig(image_encoder="alexnet_fcn_32x", sparse_encoder="shallownet32x", decoder="plain",
                       decoder_combo=(1, 2, 4))


def _resnet50(decoder: str = "plain") -> ModelConfig:
    combo = (1, 2, 4, 8) if decoder == "skip" else (1, 2, 4)
    return ModelConfig(image_encoder="resnet50", sparse_encoder="shallownet8x", decoder=decoder, decoder_combo=combo)


def _schedule(total_iter: int, num_gpus: int, freq: int = 10000) -> TrainConfig:
    """The paper's SGD step schedule: lr 0.1, x0.1 at 4/7 and 6/7 of the run."""
    return TrainConfig(
        total_iter=total_iter,
        lr=0.1,
        lr_steps=[total_iter * 4 // 7, total_iter * 6 // 7],
        lr_mults=[0.1, 0.1],
        num_gpus=num_gpus,
        val_freq=freq,
        save_freq=freq,
    )


def _data(sources: list[str], val: str, **kwargs: object) -> DataConfig:
    return DataConfig(
        train_source=[f"data/{s}/lists/train.txt" for s in sources],
        val_source=[val],
        flow_file_type="jpg",
        **kwargs,
    )


_YFCC_VAL = "data/yfcc/lists/val.txt"


def _alexnet_yfcc_voc_16gpu_70k() -> Config:
    return Config(
        model=_alexnet(),
        data=_data(["yfcc"], _YFCC_VAL, batch_size=12, short_size=416, crop_size=(384, 384),
                   bg_ratio=0.00015625, nms_ks=41, max_num_guide=150),
        train=_schedule(70000, num_gpus=16),
        description="AlexNet-BN 32x, YFCC, 16 GPUs, 70k iterations (paper's AlexNet VOC result)",
    )


def _alexnet_yfcc_voc_8gpu_140k() -> Config:
    cfg = _alexnet_yfcc_voc_16gpu_70k()
    return cfg.replace(train=_schedule(140000, num_gpus=8),
                       description="AlexNet-BN 32x, YFCC, 8 GPUs, 140k iterations (same samples seen as 16 GPU 70k)")


def _alexnet_yfcc_youtube_voc_16gpu_140k() -> Config:
    return Config(
        model=_alexnet(),
        data=_data(["yfcc", "youtube9000"], _YFCC_VAL, batch_size=12, short_size=416, crop_size=(384, 384),
                   bg_ratio=0.000025, nms_ks=81, max_num_guide=150),
        train=_schedule(140000, num_gpus=16),
        description="AlexNet-BN 32x, YFCC + YouTube9000, 16 GPUs, 140k iterations",
    )


def _resnet50_yfcc_voc_16gpu_42k() -> Config:
    return Config(
        model=_resnet50(),
        data=_data(["yfcc"], _YFCC_VAL, batch_size=10, short_size=416, crop_size=(320, 320),
                   bg_ratio=0.00003629, nms_ks=67, max_num_guide=-1),
        train=_schedule(42000, num_gpus=16),
        description="ResNet-50 8x, YFCC, 16 GPUs, 42k iterations (paper's ResNet-50 VOC result)",
    )


def _resnet50_yfcc_coco_16gpu_42k() -> Config:
    return Config(
        model=_resnet50(),
        data=_data(["yfcc"], _YFCC_VAL, batch_size=16, short_size=333, crop_size=(256, 256),
                   bg_ratio=0.00005632, nms_ks=49, max_num_guide=-1),
        train=_schedule(42000, num_gpus=16),
        description="ResNet-50 8x, YFCC, 16 GPUs, 42k iterations (paper's COCO result)",
    )


def _resnet50_lip_16gpu_70k() -> Config:
    return Config(
        model=_resnet50(),
        data=_data(["yfcc", "youtube9000", "VIP", "MPII"], _YFCC_VAL, batch_size=10, short_size=416,
                   crop_size=(320, 320), bg_ratio=0.00015625, nms_ks=15, max_num_guide=-1),
        train=_schedule(70000, num_gpus=16),
        description="ResNet-50 8x, YFCC + YouTube9000 + VIP + MPII, 16 GPUs, 70k iterations (paper's LIP result)",
    )


def _resnet50_semiauto_annot_42k() -> Config:
    return Config(
        model=_resnet50(decoder="skip"),
        data=_data(["VIP", "MPII"], "data/VIP/lists/randval.txt", batch_size=8, short_size=416,
                   crop_size=(384, 384), bg_ratio=5.74e-5, nms_ks=41, max_num_guide=-1),
        train=_schedule(42000, num_gpus=8, freq=5000),
        description="ResNet-50 8x with the skip-layer decoder (sharp flow), VIP + MPII, 8 GPUs, 42k iterations: "
        "semi-automatic annotation",
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "alexnet_yfcc_voc_16gpu_70k": _alexnet_yfcc_voc_16gpu_70k,
    "alexnet_yfcc_voc_8gpu_140k": _alexnet_yfcc_voc_8gpu_140k,
    "alexnet_yfcc+youtube_voc_16gpu_140k": _alexnet_yfcc_youtube_voc_16gpu_140k,
    "resnet50_yfcc_voc_16gpu_42k": _resnet50_yfcc_voc_16gpu_42k,
    "resnet50_yfcc_coco_16gpu_42k": _resnet50_yfcc_coco_16gpu_42k,
    "resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k": _resnet50_lip_16gpu_70k,
    "resnet50_vip+mpii_liteflow": _resnet50_semiauto_annot_42k,
}


def available_presets() -> list[str]:
    """Names accepted by :func:`get_preset` and ``create_model``."""
    return list(PRESETS)


def get_preset(name: str) -> Config:
    """A fresh, validated :class:`Config` of the named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    cfg.name = name
    return cfg.validate()
