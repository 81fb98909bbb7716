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
