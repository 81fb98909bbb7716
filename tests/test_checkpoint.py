"""Checkpoints: original release files, motionprop's format, conversion, encoder export, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import motionprop
from motionprop.checkpoint import read_checkpoint
from motionprop.cli import main
from motionprop.errors import CheckpointError
from motionprop.models import create_model, init_weights_trained_like

ORIGINAL_CONFIGS = Path(__file__).parent / "data" / "original_configs"


def _trained(preset: str) -> motionprop.CMP:
    return init_weights_trained_like(create_model(preset)).eval()


def _write_original(model: motionprop.CMP, exp_dir: Path, preset: str, step: int = 42000) -> Path:
    """An experiment folder as the original trainer left it: config.yaml + checkpoints/ckpt_iter_N.pth.tar."""
    (exp_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(ORIGINAL_CONFIGS / f"{preset}.yaml", exp_dir / "config.yaml")
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = exp_dir / "checkpoints" / f"ckpt_iter_{step}.pth.tar"
    torch.save({"step": step, "state_dict": state, "optimizer": optim.state_dict()}, path)
    return path


def _inputs(size: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(batch, 3, size, size, generator=gen)
    sparse = torch.zeros(batch, 4, size, size)
    sparse[:, :2, 10:12, 20:22] = torch.tensor([5.0, -8.0]).view(1, 2, 1, 1)
    sparse[:, 2:, 10:12, 20:22] = 1
    return image, sparse


@pytest.fixture(scope="module")
def resnet_original(tmp_path_factory):
    torch.manual_seed(0)
    model = _trained("resnet50_yfcc_voc_16gpu_42k")
    path = _write_original(model, tmp_path_factory.mktemp("exp"), "resnet50_yfcc_voc_16gpu_42k")
    return model, path


def test_original_release_file_loads_with_identical_outputs(resnet_original):
    model, path = resnet_original
    loaded = motionprop.load_model(path)  # config.yaml found in the experiment folder
    assert not loaded.training
    image, sparse = _inputs(64)
    with torch.no_grad():
        expected = model(image, sparse)
        assert torch.equal(loaded(image, sparse), expected)
    assert expected.abs().max() > 1.0  # a real comparison, not of near-zero outputs
    _, _, extra = read_checkpoint(path)
    assert extra["step"] == 42000


def test_original_file_with_explicit_config_and_preset(resnet_original, tmp_path):
    model, path = resnet_original
    lonely = tmp_path / "ckpt.pth.tar"
    shutil.copy(path, lonely)
    with pytest.raises(CheckpointError, match="carry no config"):
        motionprop.load_model(lonely)
    by_yaml = motionprop.load_model(lonely, config=ORIGINAL_CONFIGS / "resnet50_yfcc_voc_16gpu_42k.yaml")
    by_preset = motionprop.load_model(lonely, config="resnet50_yfcc_voc_16gpu_42k")
    image, sparse = _inputs(64)
    with torch.no_grad():
        assert torch.equal(by_yaml(image, sparse), by_preset(image, sparse))


def test_motionprop_format_round_trip(tmp_path):
    model = _trained("resnet50_vip+mpii_liteflow")
    out = motionprop.save_model(tmp_path / "ckpt", model, extra={"step": 7})
    assert (out / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    for source in (out, out / "model.safetensors"):
        loaded = motionprop.load_model(source)
        assert loaded.config.model == model.config.model and loaded.config.name == model.config.name
        image, sparse = _inputs(64)
        with torch.no_grad():
            assert torch.equal(loaded(image, sparse), model(image, sparse))
    assert read_checkpoint(out)[2]["step"] == 7
    changed = motionprop.load_model(out, overrides=["model.guidance_radius=32"])  # an output option: same weights
    assert changed.guidance_radius == 32 and changed.config.model.guidance_radius == 32
    with torch.no_grad():
        assert torch.equal(changed(image, sparse), model(image, sparse))
    with pytest.raises(CheckpointError, match=r"model.img_enc_dim=64.*cannot be applied to a trained one"):
        motionprop.load_model(out, overrides=["model.img_enc_dim=64"])
    with pytest.raises(CheckpointError, match="already exists"):
        motionprop.save_model(out, model)


def test_a_checkpoint_whose_config_this_version_does_not_know_is_named_with_the_reason(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from motionprop.train.quickstart import quickstart_config

    out = motionprop.save_model(tmp_path / "ckpt", create_model(quickstart_config()))
    weights = out / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        meta = handle.metadata()
    config = json.loads(meta["config"])
    config["train"]["option_of_a_later_version"] = True
    save_file(load_file(str(weights)), str(weights), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"model.safetensors: its saved config does not fit this motionprop "
                                              r"\(.*option_of_a_later_version.*\); was it written by another version"):
        motionprop.load_model(out)


def test_missing_and_wrong_files_are_errors_not_random_weights(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nothing.pth"):
        motionprop.load_model(tmp_path / "nothing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a readable PyTorch checkpoint \(neither a zip archive "
                                              r"nor a pickle\)$"):
        motionprop.load_model(text, config="resnet50_yfcc_voc_16gpu_42k")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="garbage.pth: not a readable PyTorch checkpoint"):
        motionprop.load_model(garbage, config="resnet50_yfcc_voc_16gpu_42k")
    # torch's own advice (load with weights_only=False) is not passed on: this package never loads unsafely
    good = tmp_path / "whole.pth"
    torch.save({"w": torch.zeros(64)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"cut.pth: not a readable PyTorch checkpoint \([^.]*\)$") as info:
        motionprop.load_model(cut, config="resnet50_yfcc_voc_16gpu_42k")
    assert "weights_only" not in str(info.value)
    objects = tmp_path / "objects.pth"
    torch.save({"state_dict": {}, "meta": np.zeros(2)}, objects)
    with pytest.raises(CheckpointError, match=r"objects.pth: .*holds Python objects \(numpy\S*\) that a safe"):
        motionprop.load_model(objects, config="resnet50_yfcc_voc_16gpu_42k")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="fake.safetensors"):
        motionprop.load_model(fake)
    with pytest.raises(CheckpointError, match="without model.safetensors"):
        motionprop.load_model(tmp_path)


def test_missing_unexpected_and_mis_shaped_keys_are_listed(resnet_original, tmp_path):
    model, _ = resnet_original
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    del state["module.flow_decoder.head.bias"]
    state["module.flow_decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth.tar"
    torch.save({"step": 1, "state_dict": state, "optimizer": {}}, path)
    with pytest.raises(CheckpointError) as info:
        motionprop.load_model(path, config="resnet50_yfcc_voc_16gpu_42k")
    message = str(info.value)
    assert "missing keys: flow_decoder.head.bias" in message
    assert "unexpected keys: flow_decoder.extra.weight" in message
    # Same file against a network of another shape: the wrong config is named by its shapes.
    good = tmp_path / "good.pth.tar"
    torch.save({"step": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, good)
    with pytest.raises(CheckpointError, match=r"shape mismatches .*image_encoder.conv5.weight \(256, 2048, 1, 1\) vs \(64"):
        motionprop.load_model(good, config=motionprop.ModelConfig(img_enc_dim=64))


def test_convert_and_export_encoder_cli(resnet_original, tmp_path, capsys):
    model, path = resnet_original
    out = tmp_path / "converted"
    assert main(["convert", str(path), "--out", str(out)]) == 0
    loaded = motionprop.load_model(out)
    image, sparse = _inputs(64)
    with torch.no_grad():
        assert torch.equal(loaded(image, sparse), model(image, sparse))
    assert main(["convert", str(path), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    tv = tmp_path / "r50.pth"
    assert main(["export-encoder", str(out), "--out", str(tv), "--format", "torchvision"]) == 0
    state = torch.load(tv, weights_only=True)
    assert len(state) == 318  # torchvision resnet50 has 320 entries; fc.weight and fc.bias are not ours
    assert state["layer1.0.conv1.weight"].shape == (64, 64, 1, 1)
    assert state["layer4.2.bn3.running_var"].shape == (2048,)
    assert not any(k.startswith("conv5") for k in state)
    torch.testing.assert_close(state["layer3.5.conv2.weight"], model.image_encoder.layer3[5].conv2.weight)

    own = tmp_path / "r50.safetensors"
    assert main(["export-encoder", str(path), "--out", str(own)]) == 0
    from safetensors.torch import load_file

    enc = load_file(own)
    assert "conv5.weight" in enc and len(enc) == 320
    with pytest.raises(CheckpointError, match="exported image_encoder"):
        motionprop.load_model(own)


def test_alexnet_torchvision_export_uses_the_documented_name_map(tmp_path):
    model = _trained("alexnet_yfcc_voc_16gpu_70k")
    ckpt = motionprop.save_model(tmp_path / "alex", model)
    out = tmp_path / "alex.pth"
    motionprop.export_encoder(ckpt, out, "torchvision")
    state = torch.load(out, weights_only=True)
    assert state["features.0.weight"].shape == (96, 3, 11, 11)
    assert state["features.15.running_mean"].shape == (256,)
    assert state["classifier.0.weight"].shape == (4096, 256, 3, 3)
    assert not any(k.startswith("conv8") for k in state)


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.pth" in err
    assert main(["export-encoder", str(tmp_path), "--out", "x.bin"]) == 2
    assert "use a .safetensors file name" in capsys.readouterr().err
