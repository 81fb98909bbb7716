"""Named checkpoints (motionprop.hub, ``motionprop download``), offline: a file of the original format is
written into a local Hugging Face cache and read back with HF_HUB_OFFLINE=1; nothing is downloaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import motionprop
from motionprop import hub
from motionprop.cli import main

pytest.importorskip("huggingface_hub")

REPO = "MyNiuuu/MOFA-Video-Traj"


def tiny_config() -> motionprop.Config:
    cfg = motionprop.Config(model=motionprop.ModelConfig(
        image_encoder="resnet18", img_enc_dim=32, nbins=15, fmax=20.0, decoder="skip", decoder_combo=(1, 2, 4, 8)))
    cfg.data.crop_size = (64, 64)
    cfg.data.short_size = 64
    return cfg


def write_hub_cache(cache: Path, filename: str, model: motionprop.CMP) -> Path:
    """An original-release checkpoint of ``model`` at ``filename`` in a Hub cache laid out as huggingface_hub does."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{REPO.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    path = root / "snapshots" / revision / filename
    path.parent.mkdir(parents=True)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"step": 42000, "state_dict": state, "optimizer": {}}, path)
    return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """(original file, model) in an offline Hub cache; the 'annotation' entry pointed at a tiny config."""
    model = motionprop.create_model(tiny_config()).eval()
    spec = hub.NAMED["annotation"]
    original = write_hub_cache(tmp_path / "hf", spec.filename, model)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MOTIONPROP_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    monkeypatch.setitem(hub.NAMED, "annotation", hub.NamedCheckpoint(
        spec.repo_id, spec.filename, original.stat().st_size, digest, tiny_config(), spec.description))
    return original, model


@pytest.mark.slow
def test_download_verifies_converts_caches_and_the_name_works_as_checkpoint(offline_hub, tmp_path, capsys):
    original, model = offline_hub
    assert main(["download", "annotation"]) == 0
    folder = tmp_path / "cache" / "annotation"
    assert (folder / "model.safetensors").is_file() and "converted to" in capsys.readouterr().out
    loaded = motionprop.load_model(folder)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert hub.resolve_checkpoint("annotation") == str(folder)
    assert main(["download", "annotation"]) == 0 and "already converted" in capsys.readouterr().out
    # The name is accepted wherever a checkpoint is.
    image = tmp_path / "img.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert main(["propagate", "--checkpoint", "annotation", "--image", str(image), "--arrow", "10,10,3,0",
                 "--out-flow", str(tmp_path / "f.flo")]) == 0
    assert (tmp_path / "f.flo").is_file()


def test_a_digest_mismatch_is_an_error_unless_allowed(offline_hub, tmp_path, capsys, monkeypatch):
    original, _ = offline_hub
    spec = hub.NAMED["annotation"]
    monkeypatch.setitem(hub.NAMED, "annotation", hub.NamedCheckpoint(
        spec.repo_id, spec.filename, spec.size, "0" * 64, spec.config, spec.description))
    assert main(["download", "annotation"]) == 2
    err = capsys.readouterr().err
    assert "expected" in err and "--allow-unverified" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cache" / "annotation").exists()
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    assert main(["download", "annotation", "--allow-unverified", "--out", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {digest}" in out and (tmp_path / "mine" / "model.safetensors").is_file()


def test_offline_cache_miss_and_not_downloaded_are_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MOTIONPROP_CACHE", str(tmp_path / "cache"))
    assert main(["download", "annotation"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and REPO in err
    with pytest.raises(motionprop.InputError, match="motionprop download annotation"):
        hub.resolve_checkpoint("annotation")
    assert hub.resolve_checkpoint("some/path") == "some/path"


def test_the_recorded_release_file():
    spec = hub.NAMED["annotation"]
    assert spec.size == 228_465_722 and spec.sha256.startswith("cd3a385e")
    assert motionprop.get_preset(spec.config).model.decoder == "skip"
