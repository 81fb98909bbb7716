"""Configs: our YAML, the original release's YAML, presets, overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import motionprop
from motionprop.config import Config, apply_overrides, config_from_dict, load_config
from motionprop.errors import ConfigError
from motionprop.presets import get_preset

ORIGINAL_CONFIGS = sorted((Path(__file__).parent / "data" / "original_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", ORIGINAL_CONFIGS, ids=lambda p: p.stem)
def test_original_config_loads_unchanged_and_equals_its_preset(path):
    cfg = load_config(path)
    preset = get_preset(path.stem)
    assert cfg.model == preset.model
    assert cfg.data == preset.data
    for key in ("total_iter", "lr", "lr_steps", "lr_mults", "optimizer", "val_freq", "save_freq"):
        assert getattr(cfg.train, key) == getattr(preset.train, key), key


def test_original_skip_layer_config_uses_all_four_scales():
    cfg = load_config(Path(__file__).parent / "data" / "original_configs" / "resnet50_vip+mpii_liteflow.yaml")
    assert cfg.model.decoder == "skip" and cfg.model.decoder_combo == (1, 2, 4, 8)


def test_own_yaml_round_trip(tmp_path):
    cfg = get_preset("resnet50_yfcc_coco_16gpu_42k")
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    back = load_config(path)
    assert back.model == cfg.model and back.data == cfg.data and back.train == cfg.train


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {"image_encoder": "resnet50", "nbinz": 3}}))
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key\(s\) nbinz"):
        load_config(path)


@pytest.mark.parametrize("raw,message", [
    ({"model": {"image_encoder": "vgg16"}}, "model.image_encoder: unknown value 'vgg16'"),
    ({"model": {"nbins": 98}}, "odd"),
    ({"model": {"decoder": "skip", "image_encoder": "alexnet_fcn_32x", "sparse_encoder": "shallownet32x"}},
     "needs a ResNet"),
    ({"model": {"image_encoder": "alexnet_fcn_32x", "sparse_encoder": "shallownet8x"}}, "same stride"),
    ({"train": {"lr_steps": [10, 5], "lr_mults": [0.1, 0.1]}}, "must increase"),
    ({"data": {"nms_ks": 4}}, "odd"),
    ({"train": {"init": "xavier"}}, "train.init: unknown value 'xavier'"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number"),
    ({"data": {"batch_size": 2.5}}, "data.batch_size must be an integer"),
])
def test_invalid_values_rejected(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_overrides_parse_values_and_revalidate():
    cfg = apply_overrides(get_preset("alexnet_yfcc_voc_16gpu_70k"), ["train.lr=0.01", "data.crop_size=[256, 256]"])
    assert cfg.train.lr == 0.01 and cfg.data.crop_size == (256, 256)
    assert apply_overrides(cfg, ["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(cfg, ["lr=0.1"])
    with pytest.raises(ConfigError, match="odd"):
        apply_overrides(cfg, ["model.nbins=10"])


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="resnet50_vip\\+mpii_liteflow"):
        get_preset("resnet51")
    assert "resnet50_yfcc_voc_16gpu_42k" in motionprop.available_presets()


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    assert isinstance(Config().validate(), Config)
