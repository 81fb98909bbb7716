"""Training and evaluation under bad data: one line and exit 2 (never a hang), no lost progress, safe resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import TINY, tiny_config, tiny_data  # noqa: F401  (fixture)

import motionprop
from motionprop.train.trainer import TrainOptions, train


def _run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``motionprop ARGS`` in a fresh process; a hang fails the test instead of blocking it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "motionprop", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _list_with(tmp_path: Path, source: Path, extra_line: str, at: int) -> Path:
    """A copy of list ``source`` (absolute paths) with ``extra_line`` inserted as line ``at`` (0-based)."""
    from motionprop.data.dataset import read_pair_list

    lines = [" ".join([r.image1, r.image2, *r.flow]) for r in read_pair_list(source)]
    lines.insert(at, extra_line)
    out = tmp_path / f"list_{at}.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def _corrupt_pair(tmp_path: Path, source: Path) -> str:
    """A list line whose first image exists but is not an image (the rest of the line is real)."""
    from motionprop.data.dataset import read_pair_list

    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"this is not a JPEG")
    record = read_pair_list(source)[0]
    return " ".join([str(path), record.image2, *record.flow])


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "warning" not in line.lower()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_data, tmp_path_factory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(tiny_config(tiny_data, "train.total_iter=1", "data.val_source=[]"),
          TrainOptions(run, progress=False, log=lambda *_: None))
    return run / "checkpoints" / "iter_0000001"


@pytest.mark.slow
def test_evaluate_with_workers_exits_with_one_line_after_a_data_error(tiny_data, tiny_checkpoint,  # noqa: F811
                                                                      tmp_path):
    bad = _list_with(tmp_path, tiny_data[1], _corrupt_pair(tmp_path, tiny_data[1]), 3)
    proc = _run_cli("evaluate", str(tiny_checkpoint), str(bad), "--workers", "2", "--device", "cpu")
    _one_error_line(proc, "corrupt.jpg")


@pytest.mark.slow
def test_train_with_a_worker_exits_with_one_line_after_a_bad_validation_pair(tiny_data, tmp_path):  # noqa: F811
    bad = _list_with(tmp_path, tiny_data[1], _corrupt_pair(tmp_path, tiny_data[1]), 1)
    train_list = tiny_data[0]
    proc = _run_cli("train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", str(tmp_path / "run"),
                    "--no-progress", *TINY, "data.workers=1", "train.total_iter=2", "train.val_freq=1",
                    "model.image_encoder=resnet18", f"data.train_source=[{train_list}]", f"data.val_source=[{bad}]")
    _one_error_line(proc, "corrupt.jpg")


def _bad_at_iteration(tiny_data, tmp_path: Path, iteration: int) -> Path:  # noqa: F811
    """The training list with a corrupt pair placed where the sampler (seed 0, batch 2) first draws it at
    ``iteration``."""
    from motionprop.data.dataset import read_pair_list
    from motionprop.train.sampler import IterationSampler

    size = len(read_pair_list(tiny_data[0])) + 1
    index, _ = IterationSampler(size, 100, 2).key(2 * iteration)
    return _list_with(tmp_path, tiny_data[0], _corrupt_pair(tmp_path, tiny_data[0]), index)


def test_a_missing_listed_file_fails_before_the_first_iteration(tiny_data, tmp_path):  # noqa: F811
    bad = _list_with(tmp_path, tiny_data[0], f"{tmp_path}/gone.jpg {tmp_path}/b.jpg {tmp_path}/c.flo", 7)
    cfg = tiny_config(tiny_data, f"data.train_source=[{bad}]", "train.total_iter=50")
    with pytest.raises(motionprop.InputError, match=r"pair 8: file not found: .*gone.jpg"):
        train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    assert not (tmp_path / "run").exists()


def test_a_data_error_mid_run_saves_a_checkpoint_naming_the_file(tiny_data, tmp_path):  # noqa: F811
    bad = _bad_at_iteration(tiny_data, tmp_path, 3)
    cfg = tiny_config(tiny_data, f"data.train_source=[{bad}]", "train.total_iter=50", "train.save_freq=1000",
                      "train.val_freq=1000")
    with pytest.raises(motionprop.InputError, match=r"corrupt.jpg.*saved a checkpoint at iteration 3"):
        train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["iter_0000003"]
    motionprop.load_model(tmp_path / "run" / "checkpoints" / "iter_0000003")


def test_skip_bad_skips_and_counts_bad_pairs(tiny_data, tmp_path):  # noqa: F811
    bad = _bad_at_iteration(tiny_data, tmp_path, 1)
    messages = []
    cfg = tiny_config(tiny_data, f"data.train_source=[{bad}]", "train.total_iter=3", "data.skip_bad=true",
                      "train.val_freq=1000")
    result = train(cfg, TrainOptions(tmp_path / "run", progress=False, log=messages.append))
    assert result.iteration == 3
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("skipped", 0) for x in lines if x["split"] == "train"] == [0, 1, 1]
    assert any("skipped 1 bad pair" in m for m in messages)


def test_a_refused_resume_or_a_failed_start_writes_nothing(tiny_data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    cfg = tiny_config(tiny_data, "train.total_iter=2", "train.val_freq=1000", "data.flip=true")
    train(cfg, TrainOptions(run, progress=False, log=lambda *_: None))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    shorter = tiny_config(tiny_data, "train.total_iter=1", "train.val_freq=1000")  # loses data.flip
    with pytest.raises(motionprop.InputError, match="already finished 2 of 1"):
        train(shorter, TrainOptions(run, resume=True, progress=False, log=lambda *_: None))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed: the failed start below needs it missing")
    with pytest.raises(motionprop.InputError, match="tensorboard"):  # a failed --force start keeps the old run
        train(cfg, TrainOptions(run, force=True, tensorboard=True, progress=False, log=lambda *_: None))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(motionprop.InputError, match="tensorboard"):  # and a failed new start leaves no folder
        train(cfg, TrainOptions(tmp_path / "new", tensorboard=True, progress=False, log=lambda *_: None))
    assert not (tmp_path / "new").exists()


def test_resume_removes_a_checkpoint_folder_a_killed_run_left_half_written(tiny_data, tmp_path):  # noqa: F811
    """kill -9 while saving leaves a ~100 MB temporary folder; --resume deletes it, not a live writer's."""
    from test_fileio import dead_pid

    from motionprop.fileio import temp_prefix

    run = tmp_path / "run"
    cfg = tiny_config(tiny_data, "train.total_iter=1", "train.val_freq=1000")
    train(cfg, TrainOptions(run, progress=False, log=lambda *_: None))
    dead = dead_pid()
    stale = run / "checkpoints" / (temp_prefix("iter_0000002", pid=dead) + "abcdefgh")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    stale_config = run / (temp_prefix("config.yaml", pid=dead) + "abcdefgh.yaml")
    stale_config.write_text("half")
    live = run / "checkpoints" / (temp_prefix("iter_0000009") + "abcdefgh")  # this process: alive
    live.mkdir()
    longer = tiny_config(tiny_data, "train.total_iter=2", "train.val_freq=1000")
    assert train(longer, TrainOptions(run, resume=True, progress=False, log=lambda *_: None)).iteration == 2
    assert not stale.exists() and not stale_config.exists() and live.is_dir()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(["iter_0000001", "iter_0000002",
                                                                              live.name])


def test_a_full_disk_at_a_checkpoint_stops_with_one_line_and_keeps_the_last_one(tiny_data, tmp_path,  # noqa: F811
                                                                               monkeypatch, capsys):
    import motionprop.checkpoint
    import motionprop.fileio
    from motionprop.cli import main

    real_save_file, calls = motionprop.checkpoint.save_file, []

    def save_file_then_fill_the_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:     # the second checkpoint: the disk is full (safetensors' own exception)
            monkeypatch.setattr(motionprop.fileio, "free_bytes", lambda path: 0)
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(motionprop.checkpoint, "save_file", save_file_then_fill_the_disk)
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(tiny_config(tiny_data, "train.total_iter=4", "train.save_freq=2", "train.val_freq=1000").to_yaml())
    args = ["train", "--config", str(config), "--out", str(run), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "could not save the checkpoint of iteration 4: No space left on device (0 MB free" in err[0]
    assert f"{run / 'checkpoints' / 'iter_0000004'}; --resume continues from iteration 2" in err[0]
    checkpoints = run / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["iter_0000002"]      # no half-written folder beside it
    monkeypatch.setattr(motionprop.checkpoint, "save_file", real_save_file)
    monkeypatch.setattr(motionprop.fileio, "free_bytes", lambda path: 2**40)
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0    # room again: it goes on
    assert sorted(p.name for p in checkpoints.iterdir()) == ["iter_0000002", "iter_0000004"]
