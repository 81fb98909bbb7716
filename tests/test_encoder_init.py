"""train.image_encoder_init: a run's image encoder starts from a trained encoder file, or says why it cannot."""

from __future__ import annotations

import pytest
import torch

import motionprop
from motionprop.checkpoint import export_encoder
from motionprop.errors import ConfigError
from motionprop.models import create_model, init_weights_trained_like
from motionprop.train.encoder_init import init_image_encoder


def _model(encoder: str, dim: int = 32, seed: int = 0, sparse: str = "shallownet8x") -> torch.nn.Module:
    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder=encoder, img_enc_dim=dim, nbins=15,
                                                         sparse_encoder=sparse))
    return init_weights_trained_like(create_model(cfg), seed=seed)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 'trained' ResNet-18 CMP checkpoint and its encoder exported in both formats."""
    root = tmp_path_factory.mktemp("enc")
    model = _model("resnet18", seed=1)
    motionprop.save_model(root / "ckpt", model)
    export_encoder(root / "ckpt", root / "enc.safetensors")
    export_encoder(root / "ckpt", root / "enc.pth", fmt="torchvision")
    return model, root


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.equal(a, b)


def _assert_body_from_file_projection_fresh(run, source, projection: str, fresh: torch.Tensor) -> None:
    """Every tensor of ``run``'s encoder but ``projection`` equals ``source``'s; the projection kept ``fresh``."""
    expected = source.image_encoder.state_dict()
    for key, value in run.image_encoder.state_dict().items():
        if not key.startswith(f"{projection}."):
            assert torch.equal(value, expected[key]), key
    assert torch.equal(getattr(run.image_encoder, projection).weight, fresh)


@pytest.mark.parametrize("name", ["ckpt", "enc.safetensors"])
def test_the_whole_encoder_is_taken_from_a_checkpoint_or_motionprop_export(trained, name):
    source, root = trained
    run = _model("resnet18", seed=2)
    decoder_before = {k: v.clone() for k, v in run.flow_decoder.state_dict().items()}
    line = init_image_encoder(run.image_encoder, root / name)
    expected = source.image_encoder.state_dict()
    for key, value in run.image_encoder.state_dict().items():
        assert torch.equal(value, expected[key]), key
    for key, value in run.flow_decoder.state_dict().items():  # the rest of the network keeps its init
        assert torch.equal(value, decoder_before[key]), key
    assert "resnet18" in line and "the projection from the file" in line


def test_a_torchvision_export_fills_a_shallower_run_and_leaves_its_projection_fresh(trained):
    source, root = trained
    run = _model("resnet18_l3", dim=16, seed=2)
    fresh_projection = run.image_encoder.conv5.weight.clone()
    line = init_image_encoder(run.image_encoder, root / "enc.pth")
    _assert_body_from_file_projection_fresh(run, source, "conv5", fresh_projection)
    assert "a fresh projection" in line and "left out of the file: layer4" in line


def test_an_encoder_that_does_not_fit_is_refused_by_name(trained, tmp_path):
    _, root = trained
    run = _model("resnet34")
    before = {k: v.clone() for k, v in run.image_encoder.state_dict().items()}
    with pytest.raises(ConfigError, match=r"train.image_encoder_init .*enc.pth: its resnet18 encoder does not fit "
                                          r"this run's image encoder \(missing layer1.2"):
        init_image_encoder(run.image_encoder, root / "enc.pth")
    assert all(torch.equal(v, before[k]) for k, v in run.image_encoder.state_dict().items())  # untouched
    with pytest.raises(ConfigError, match="no such file or folder"):
        init_image_encoder(run.image_encoder, tmp_path / "typo.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"train.image_encoder_init .*junk.pth: "):
        init_image_encoder(run.image_encoder, tmp_path / "junk.pth")


def test_a_different_input_normalization_is_warned_about(trained):
    _, root = trained
    run = _model("resnet18", seed=2)
    cfg = motionprop.Config()
    same = init_image_encoder(run.image_encoder, root / "ckpt", cfg.data.mean, cfg.data.std)
    other = init_image_encoder(run.image_encoder, root / "ckpt", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert "warning" not in same and "warning: the file's encoder saw images normalized" in other


def test_the_option_must_be_a_path():
    cfg = motionprop.Config()
    cfg.train.image_encoder_init = 3
    with pytest.raises(ConfigError, match="train.image_encoder_init must be a path"):
        cfg.validate()


def test_an_alexnet_run_takes_conv5_which_is_body_and_leaves_only_conv8_fresh(tmp_path):
    # AlexNet's conv5 is its fifth convolution; only conv8 is the CMP projection (here of another width)
    source = _model("alexnet_fcn_32x", dim=16, seed=1, sparse="shallownet32x")
    motionprop.save_model(tmp_path / "ckpt", source)
    run = _model("alexnet_fcn_32x", dim=32, seed=2, sparse="shallownet32x")
    fresh_projection = run.image_encoder.conv8.weight.clone()
    line = init_image_encoder(run.image_encoder, tmp_path / "ckpt")
    _assert_body_from_file_projection_fresh(run, source, "conv8", fresh_projection)
    assert "a fresh projection" in line
