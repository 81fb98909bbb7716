"""The CMP network: every preset builds and trains, output strides, names of the original release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import motionprop
from motionprop.config import ModelConfig
from motionprop.errors import InputError
from motionprop.losses import build_flow_loss
from motionprop.models import CMP, create_model, init_weights_trained_like, pad_to_multiple

DATA = Path(__file__).parent / "data"


def _inputs(model: CMP, batch: int = 2, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    size = size or model.min_input_size
    image = torch.randn(batch, 3, size, size)
    sparse = torch.zeros(batch, 4, size, size)
    sparse[:, 0, size // 2, size // 3] = 7.0
    sparse[:, 2:, size // 2, size // 3] = 1.0
    return image, sparse


@pytest.mark.parametrize("preset", motionprop.available_presets())
def test_every_preset_runs_forward_backward_at_its_output_stride(preset):
    model = create_model(preset)
    image, sparse = _inputs(model)
    size = image.shape[-1]
    out = model(image, sparse)
    stride = {"plain": model.image_encoder.output_stride, "skip": 2}[model.config.model.decoder]
    assert out.shape == (2, 198, size // stride, size // stride)
    loss = build_flow_loss(model.config.model)(out, torch.randn(2, 2, size, size) * 5)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert torch.isfinite(loss)
    assert model.flow_encoder.features[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("encoder,decoder,sparse_encoder,stride", [
    ("alexnet_fcn_8x", "plain", "shallownet8x", 8),
    ("resnet18", "plain", "shallownet8x", 8),
    ("resnet34", "skip", "shallownet8x", 2),
])
def test_other_encoders_build_with_their_strides(encoder, decoder, sparse_encoder, stride):
    cfg = ModelConfig(image_encoder=encoder, sparse_encoder=sparse_encoder, decoder=decoder,
                      decoder_combo=(1, 2, 4, 8) if decoder == "skip" else (1, 2, 4), nbins=11, fmax=10)
    model = create_model(cfg).eval()
    image, sparse = _inputs(model, batch=1, size=64)
    with torch.no_grad():
        out = model(image, sparse)
    assert out.shape == (1, 22, 64 // stride, 64 // stride)
    assert model.predict_flow(image, sparse).shape == (1, 2, 64, 64)


def test_dilated_resnet_keeps_stride_8_with_dilations_2_and_4():
    enc = create_model("resnet50_yfcc_voc_16gpu_42k").image_encoder
    for block in enc.layer3:
        assert block.conv2.dilation == (2, 2) and block.conv2.stride == (1, 1)
    for block in enc.layer4:
        assert block.conv2.dilation == (4, 4) and block.conv2.stride == (1, 1)
    assert enc.layer3[0].downsample[0].stride == (1, 1)
    assert enc.layer2[0].conv2.stride == (2, 2)


@pytest.mark.parametrize("preset", ["alexnet_yfcc_voc_16gpu_70k", "resnet50_yfcc_voc_16gpu_42k",
                                    "resnet50_vip+mpii_liteflow"])
def test_state_dict_layout_is_the_original_release(preset):
    """Key names and shapes equal those dumped from the original code (benchmarks/original_ref.py)."""
    expected = [(k.removeprefix("module."), tuple(s))
                for k, s in json.loads((DATA / "original_keys" / f"{preset}.json").read_text())]
    ours = [(k, tuple(v.shape)) for k, v in create_model(preset).state_dict().items()]
    assert sorted(ours) == sorted(expected)


def test_decode_shares_one_image_encoding_across_guidance_sets():
    model = init_weights_trained_like(create_model("resnet50_vip+mpii_liteflow")).eval()
    image, _ = _inputs(model, batch=1)
    sparse = torch.zeros(3, 4, 64, 64)
    for i, (x, y) in enumerate([(5, 5), (30, 40), (60, 10)]):
        sparse[i, :2, y, x] = torch.tensor([4.0, -3.0])
        sparse[i, 2:, y, x] = 1
    with torch.no_grad():
        features = model.encode_image(image)
        batched = model.decode(features, sparse)
        one_by_one = torch.cat([model(image, sparse[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(batched[0], batched[1])


def test_wrong_input_sizes_give_clear_errors():
    model = create_model("resnet50_yfcc_voc_16gpu_42k").eval()
    with pytest.raises(InputError, match="multiples of 8"):
        model(torch.zeros(1, 3, 60, 64), torch.zeros(1, 4, 60, 64))
    with pytest.raises(InputError, match=r"\(B, 4, H, W\)"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 2, 64, 64))
    alex = create_model("alexnet_yfcc_voc_16gpu_70k")
    with pytest.raises(InputError, match="at least 128"):
        alex(torch.zeros(1, 3, 64, 64), torch.zeros(1, 4, 64, 64))


def test_pad_to_multiple_pads_bottom_right_only():
    x = torch.arange(2 * 30 * 45, dtype=torch.float32).view(1, 2, 30, 45)
    padded, (h, w) = pad_to_multiple(x, 8)
    assert padded.shape == (1, 2, 32, 48) and (h, w) == (30, 45)
    torch.testing.assert_close(padded[..., :h, :w], x)
    assert padded[..., h:, :].abs().sum() == 0 and padded[..., :, w:].abs().sum() == 0


def test_predict_flow_follows_a_strong_guidance_signal():
    """With the head biased to one bin, decoded flow equals that bin's centre at full resolution."""
    model = create_model("resnet50_yfcc_voc_16gpu_42k").eval()
    with torch.no_grad():
        model.flow_decoder.head.bias.zero_()
        model.flow_decoder.head.bias[60] = 50.0  # x bin 60
        model.flow_decoder.head.bias[99 + 30] = 50.0  # y bin 30
    image, sparse = _inputs(model, batch=1)
    flow, conf = model.predict_flow(image, sparse, return_confidence=True)
    centers = model.bins.centers()
    assert flow.shape == (1, 2, 32, 32)
    torch.testing.assert_close(flow[0, 0], torch.full((32, 32), centers[60].item()), atol=1e-3, rtol=0)
    torch.testing.assert_close(flow[0, 1], torch.full((32, 32), centers[30].item()), atol=1e-3, rtol=0)
    assert conf.min() > 0.99


def test_predict_flow_refuses_numpy_integer_and_mismatched_float_inputs_clearly():
    import numpy as np

    from motionprop.errors import InputError

    model = create_model(ModelConfig(image_encoder="resnet18", img_enc_dim=32)).eval()
    image, sparse = torch.randn(1, 3, 64, 64), torch.zeros(1, 4, 64, 64)
    with pytest.raises(InputError, match="image must be a torch.Tensor"):
        model.predict_flow(np.zeros((1, 3, 64, 64), np.float32), sparse)
    with pytest.raises(InputError, match="image must be a float tensor .*uint8"):
        model.predict_flow(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), sparse)
    with pytest.raises(InputError, match=r"sparse is torch.float64 .* convert it with .to\(torch.float32\)"):
        model.predict_flow(image, sparse.double())
    with torch.no_grad():
        assert model.predict_flow(image, sparse).shape == (1, 2, 64, 64)
