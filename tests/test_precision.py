"""Precision: ``auto`` picks bf16 only where it is native; runs record what they trained in; bf16 apps stay close."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import motionprop
from motionprop import precision
from motionprop.apps.propagate import Propagator
from motionprop.config import apply_overrides
from motionprop.train.quickstart import quickstart_config
from motionprop.errors import ConfigError
from motionprop.models import create_model

from test_train import tiny_config, tiny_data  # noqa: F401  (fixture)


def _cpu_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch, native):
    _cpu_bf16(monkeypatch, native)
    assert precision.native_bf16("cpu") is native
    assert precision.resolve("auto", "cpu") == ("bf16" if native else "none")
    assert "auto" in precision.describe("auto", "cpu")
    # explicit choices are kept whatever the hardware
    assert precision.resolve("bf16", "cpu") == "bf16"
    assert precision.resolve("fp32", "cpu") == precision.resolve("none", "cpu") == "none"


def test_an_unknown_precision_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="auto, none, fp32, bf16, fp16"):
        precision.resolve("int8", "cpu")
    with pytest.raises(ConfigError, match="train.amp"):
        apply_overrides(quickstart_config(), ["train.amp=int8"])


def test_autocast_runs_convolutions_in_bf16_and_float32_is_untouched():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with precision.autocast("bf16", "cpu"):
        assert conv(x).dtype == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert conv(x).dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_a_run_records_the_precision_auto_chose(tiny_data, tmp_path, monkeypatch, native):  # noqa: F811
    from motionprop.train.trainer import TrainOptions, train

    _cpu_bf16(monkeypatch, native)
    messages: list[str] = []
    cfg = tiny_config(tiny_data, "train.total_iter=1", "train.amp=auto")
    train(cfg, TrainOptions(tmp_path / "run", progress=False, log=messages.append))
    saved = motionprop.load_config(tmp_path / "run" / "config.yaml")
    assert saved.train.amp == ("bf16" if native else "none")
    assert any(("bf16 autocast (auto" if native else "float32 (auto") in m for m in messages)


def test_the_fills_stay_float32_under_autocast():
    model = create_model(apply_overrides(quickstart_config(), ["model.image_encoder=resnet18",
                                                               "model.img_enc_dim=32"])).eval()
    image = torch.randn(1, 3, 64, 64) * 50
    sparse = torch.zeros(1, 4, 64, 64)
    sparse[0, :, 20, 30] = torch.tensor([7.3, -2.1, 1, 1])
    sparse[0, :, 50, 10] = torch.tensor([-3.3, 5.9, 1, 1])
    cost = model.guidance_cost(image)
    fill = model.residual_fill(sparse, cost)
    with precision.autocast("bf16", "cpu"):
        cost_bf16 = model.guidance_cost(image)
        fill_bf16 = model.residual_fill(sparse, cost_bf16)
    assert cost_bf16.dtype == fill_bf16.dtype == torch.float32
    torch.testing.assert_close(cost_bf16, cost)
    torch.testing.assert_close(fill_bf16, fill)


def test_a_bf16_propagator_honours_arrows_and_stays_close_to_fp32():
    model = create_model(apply_overrides(quickstart_config(), ["model.image_encoder=resnet18",
                                                               "model.img_enc_dim=32"])).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    arrows, still = [(30.0, 40.0, 12.0, -5.0)], [(80.0, 10.0)]
    flows = {}
    for name in ("fp32", "bf16"):
        propagator = Propagator(model, working_size=64, precision=name)
        assert propagator.precision == ("none" if name == "fp32" else "bf16")
        propagator.set_image(image)
        flows[name] = propagator.propagate(arrows, still)
    assert flows["bf16"].dtype == np.float32
    # the residual network's guided pixels are exact in either precision; elsewhere bf16 rounds
    np.testing.assert_allclose(flows["bf16"][40, 30], [12.0, -5.0], atol=1e-3)
    assert np.abs(flows["bf16"] - flows["fp32"]).mean() < 0.05
    assert np.abs(flows["bf16"] - flows["fp32"]).max() < 1.0


def test_a_resume_with_auto_keeps_the_precision_the_run_started_in(tiny_data, tmp_path, monkeypatch):  # noqa: F811
    from motionprop.train.trainer import TrainOptions, train

    quiet = dict(progress=False, log=lambda *_: None)
    _cpu_bf16(monkeypatch, True)
    train(tiny_config(tiny_data, "train.total_iter=1", "train.amp=auto"), TrainOptions(tmp_path / "run", **quiet))
    _cpu_bf16(monkeypatch, False)  # resumed on a machine without native bf16
    train(tiny_config(tiny_data, "train.total_iter=2", "train.amp=auto"),
          TrainOptions(tmp_path / "run", resume=True, **quiet))
    assert motionprop.load_config(tmp_path / "run" / "config.yaml").train.amp == "bf16"


def test_propagate_cli_precision_bf16_stays_close_and_auto_is_accepted(tmp_path, capsys):
    import cv2

    from motionprop.cli import main
    from motionprop.data.flow_io import read_flow

    model = create_model(apply_overrides(quickstart_config(), ["model.image_encoder=resnet18",
                                                               "model.img_enc_dim=32", "data.short_size=64"]))
    ckpt = motionprop.save_model(tmp_path / "ckpt", model.eval())
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    flows = {}
    for name in ("fp32", "bf16", "auto"):
        out = tmp_path / f"{name}.flo"
        code = main(["propagate", "--checkpoint", str(ckpt), "--image", str(image), "--arrow", "20,30,9,-4",
                     "--still", "70,5", "--out-flow", str(out), "--precision", name])
        assert code == 0, capsys.readouterr().err
        flows[name] = read_flow(out)
    np.testing.assert_allclose(flows["bf16"][30, 20], [9.0, -4.0], atol=1e-3)
    assert np.abs(flows["bf16"] - flows["fp32"]).max() < 1.0
    expected = flows["bf16"] if precision.native_bf16("cpu") else flows["fp32"]
    np.testing.assert_array_equal(flows["auto"], expected)
    with pytest.raises(SystemExit):
        main(["propagate", "--checkpoint", str(ckpt), "--image", str(image), "--arrow", "20,30,9,-4",
              "--out-flow", str(tmp_path / "x.flo"), "--precision", "int8"])
    assert "--precision" in capsys.readouterr().err


def test_auto_on_cuda_ignores_emulated_bf16(monkeypatch):
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return including_emulation  # a pre-Ampere GPU: bf16 only by emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert precision.resolve("auto", "cuda") == "none"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.resolve("auto", "cuda:0") == "bf16"
