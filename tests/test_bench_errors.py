"""Benchmarks given a checkpoint that cannot be read stop at once with one line naming it, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_bench_real_motion_names_a_missing_checkpoint_before_any_work(load_benchmark, tmp_path, capsys):
    bench = load_benchmark("bench_real_motion")
    missing = tmp_path / "no_such_run"
    with pytest.raises(SystemExit) as stop:   # --davis is not even looked at: the checkpoints are read first
        bench.main([str(missing), "--davis", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "cache")])
    assert str(missing) in str(stop.value.code) and "not found" in str(stop.value.code)
    assert not (tmp_path / "cache").exists()


def test_bench_annotate_names_a_missing_checkpoint(load_benchmark, tmp_path, capsys):
    bench = load_benchmark("bench_annotate")
    missing = tmp_path / "no_such_run"
    with pytest.raises(SystemExit) as stop:
        bench.main([str(missing), "--data", str(tmp_path)])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "not found" in error and "Traceback" not in error


def test_bench_boundaries_names_a_backbone_that_cannot_be_read(load_benchmark, tmp_path, capsys):
    bench = load_benchmark("bench_boundaries")
    lists = tmp_path / "train.txt"
    lists.write_text("")
    with pytest.raises(SystemExit) as stop:
        bench.main(["train", "--out", str(tmp_path / "net.pt"), "--lists", str(lists),
                    "--backbone", str(tmp_path / "no_such_run")])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "--backbone" in error and "no_such_run" in error and "Traceback" not in error


@pytest.mark.parametrize("powers", ["0", "4,x", ""])
def test_bench_fills_refuses_prior_powers_that_are_not_positive_numbers(load_benchmark, tmp_path, powers):
    bench = load_benchmark("bench_fills")
    with pytest.raises(SystemExit) as stop:   # before any pair is read
        bench.main(["--davis", str(tmp_path / "nowhere"), "--prior", "80", "--prior-powers", powers])
    assert "--prior-powers" in str(stop.value.code)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("args", [["--prior", "80", "--prior-contrast", "-5"], ["--prior-contrast", "20"]])
def test_bench_fills_refuses_contrast_sigmas_that_are_not_positive_or_without_a_prior(load_benchmark, tmp_path, args):
    bench = load_benchmark("bench_fills")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--davis", str(tmp_path / "nowhere"), *args])
    assert "--prior-contrast" in str(stop.value.code)


def test_bench_real_motion_set_changes_model_options_and_refuses_the_rest(load_benchmark, tmp_path, capsys):
    import motionprop
    from motionprop.models import create_model

    bench = load_benchmark("bench_real_motion")
    quickstart = Path(motionprop.__file__).parent / "configs" / "quickstart.yaml"
    checkpoint = motionprop.save_model(tmp_path / "ckpt", create_model(str(quickstart)))
    common = ["--davis", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as stop:
        bench.main([str(checkpoint), "--set", "data.short_size=64", *common])
    assert stop.value.code == 2 and "only model options" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:   # changes the weights' shapes: one line, before any work
        bench.main([str(checkpoint), "--set", "model.img_enc_dim=8", *common])
    assert str(checkpoint) in str(stop.value.code) and "model.img_enc_dim=8" in str(stop.value.code)
    models = bench.load_checkpoints([str(checkpoint)], ["model.guidance_radius=32"])
    assert models[str(checkpoint)].guidance_radius == 32
    assert not (tmp_path / "cache").exists()


def _moving_clip(root: Path, frames: int = 7) -> None:
    """ROOT/JPEGImages/clip/*.jpg: a smooth random texture moving 2 px right and 1 px down per frame."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (140, 180, 3), dtype=np.uint8), (0, 0), 3)
    folder = root / "JPEGImages" / "clip"
    folder.mkdir(parents=True)
    for t in range(frames):
        cv2.imwrite(str(folder / f"{t:05d}.jpg"), texture[20 - t:116 - t, 30 - 2 * t:158 - 2 * t])


def test_bench_real_motion_reports_a_residual_models_fill_alone(load_benchmark, tmp_path):
    import motionprop
    import torch
    from motionprop.models import create_model

    bench = load_benchmark("bench_real_motion")
    configs = Path(motionprop.__file__).parent / "configs"
    torch.manual_seed(0)
    network = create_model(str(configs / "quickstart.yaml"))
    with torch.no_grad():   # an untrained residual network outputs zeros (exactly its fill): give it a correction
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    residual = motionprop.save_model(tmp_path / "residual", network)
    paper = motionprop.save_model(tmp_path / "paper", create_model(str(configs / "pretrain.yaml")))
    _moving_clip(tmp_path / "set")
    pairs = bench.make_pairs(bench.clip_folders(tmp_path / "set", None), 64, 2, 4, tmp_path / "cache")
    checkpoints = [str(residual), str(paper)]
    models = bench.load_checkpoints(checkpoints)
    results = bench.run(checkpoints, pairs, ["20", "dense"], 0, "none", tmp_path / "cache", models)
    for density in ("20", "dense"):
        assert "fill_epe" in results["models"][str(residual)][density]
        assert "fill_epe" not in results["models"][str(paper)][density]
    table = bench.table(results, ["20", "dense"])
    assert table.count("its fill alone") == 1
    # the decomposed flow is predict_flow's, and a radius that blends the network away leaves exactly the fill
    pair, _, sparse = next(bench.pair_tensors(pairs, "20", 0))
    model = models[str(residual)]
    image = (torch.from_numpy(pair["image"].transpose(2, 0, 1)).float()
             - torch.tensor(model.config.data.mean).view(3, 1, 1)) / torch.tensor(model.config.data.std).view(3, 1, 1)
    with torch.no_grad():
        flow, fill = bench.flow_and_fill(model, image[None], sparse[None])
        assert torch.allclose(flow, model.predict_flow(image[None], sparse[None])[0], atol=1e-5)
        assert not torch.allclose(flow, fill, atol=1e-3)    # the network moves the flow
    blended = bench.load_checkpoints([str(residual)], ["model.guidance_radius=1e9"])
    alone = bench.run([str(residual)], pairs, ["20"], 0, "none", tmp_path / "cache", blended)
    row = alone["models"][str(residual)]["20"]
    assert abs(row["epe"] - row["fill_epe"]) < 1e-5


def test_bench_model_names_a_preset_that_is_neither_a_preset_nor_a_checkpoint(load_benchmark, tmp_path, capsys):
    bench = load_benchmark("bench_model")
    missing = tmp_path / "no_such_run"
    with pytest.raises(SystemExit) as stop:
        bench.main(["--presets", "resnet50_yfcc_voc_16gpu_42k", str(missing), "--modes", "train"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert "--presets" in captured.err and str(missing) in captured.err and "not found" in captured.err
    assert "Traceback" not in captured.err and "s/iter" not in captured.out   # nothing was measured first
