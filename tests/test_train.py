"""Training: a short run, DDP over 2 gloo processes, exact resume, interruption, the NaN guard, the schedule."""

from __future__ import annotations

import dataclasses

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import motionprop
from motionprop.config import TrainConfig, apply_overrides
from motionprop.data.synth import SynthConfig, generate
from motionprop.train.quickstart import quickstart_config
from motionprop.train.sampler import IterationSampler
from motionprop.train.schedule import learning_rate
from motionprop.train.trainer import TrainingStopped, TrainOptions, train

TINY = ["model.image_encoder=resnet18", "model.img_enc_dim=32", "data.short_size=64", "data.crop_size=[64, 64]",
        "data.batch_size=2", "data.batch_size_val=2", "data.workers=0", "data.bg_ratio=0.0039",
        "data.nms_ks=9", "train.print_freq=1", "train.val_freq=3", "train.save_freq=2", "train.lr=0.02",
        "train.lr_steps=[3]", "train.lr_mults=[0.5]"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("synth")
    summary = generate(root / "data", SynthConfig(height=64, width=80, num_pairs=16, val_fraction=0.25),
                       progress=False)
    return Path(summary.train_list).resolve(), Path(summary.val_list).resolve()


def tiny_config(data: tuple[Path, Path], *extra: str) -> motionprop.Config:
    train_list, val_list = data
    return apply_overrides(quickstart_config(), [*TINY, f"data.train_source=[{train_list}]",
                                                 f"data.val_source=[{val_list}]", *extra])


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_short_run_writes_metrics_checkpoints_and_images(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "train.total_iter=4", "train.keep_last=1")
    result = train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    assert result.iteration == 4 and not result.stopped_early
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["split"] == "train"]
    assert [x["iter"] for x in train_lines] == [1, 2, 3, 4]
    assert all({"loss", "lr"} <= set(x) for x in train_lines)
    assert [x["lr"] for x in train_lines] == pytest.approx([0.02, 0.02, 0.02, 0.01])
    val = [x for x in lines if x["split"] == "val"]
    assert [x["iter"] for x in val] == [3, 4]
    assert all(x["epe"] > 0 and x["epe_nearest"] > 0 and x["epe_idw"] > 0 for x in val)
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["iter_0000004"]  # keep_last=1
    loaded = motionprop.load_model(checkpoints[0])
    for name, value in _params(result.model).items():
        torch.testing.assert_close(dict(loaded.named_parameters())[name], value)
    assert any((tmp_path / "run" / "images").glob("val_*.png"))
    assert motionprop.load_config(tmp_path / "run" / "config.yaml").model == cfg.model


def test_image_encoder_lr_mult_scales_the_image_encoders_steps_only(tiny_data, tmp_path):
    """With SGD and no momentum or decay a step is -lr x grad: the encoder's moves x mult, the rest's not at all."""
    from motionprop.train.trainer import build_optimizer, set_learning_rate

    base = tiny_config(tiny_data, "train.momentum=0", "train.weight_decay=0")
    moves = {}
    for mult in (1.0, 0.25):
        torch.manual_seed(0)
        cfg = apply_overrides(base, [f"train.image_encoder_lr_mult={mult}"])
        model = motionprop.create_model(cfg)
        optimizer = build_optimizer(model, cfg)
        assert len(optimizer.param_groups) == (1 if mult == 1 else 2)   # the paper's setting: one group, as before
        set_learning_rate(optimizer, 0.02)
        before = _params(model)
        sum(p.square().sum() for p in model.parameters()).backward()  # grad = 2 p: the same for both runs
        optimizer.step()
        moves[mult] = {k: v - before[k] for k, v in _params(model).items()}
    encoder = {f"image_encoder.{k}" for k, _ in motionprop.create_model(base).image_encoder.named_parameters()}
    assert encoder and set(moves[1.0]) - encoder
    for name, move in moves[1.0].items():
        torch.testing.assert_close(moves[0.25][name], move * (0.25 if name in encoder else 1.0), rtol=1e-5, atol=1e-9)
    with pytest.raises(motionprop.ConfigError, match="train.image_encoder_lr_mult"):
        apply_overrides(base, ["train.image_encoder_lr_mult=0"])


def test_run_folder_is_not_overwritten_without_force(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "train.total_iter=1")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("x")
    with pytest.raises(motionprop.InputError, match="already exists"):
        train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    assert (tmp_path / "run" / "precious.txt").exists()


def test_resume_gives_the_same_weights_as_a_straight_run(tiny_data, tmp_path):
    quiet = dict(progress=False, log=lambda *_: None)
    straight = train(tiny_config(tiny_data, "train.total_iter=4"), TrainOptions(tmp_path / "a", **quiet))
    train(tiny_config(tiny_data, "train.total_iter=2"), TrainOptions(tmp_path / "b", **quiet))
    resumed = train(tiny_config(tiny_data, "train.total_iter=4"), TrainOptions(tmp_path / "b", resume=True, **quiet))
    assert resumed.iteration == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines if x["split"] == "train"] == [1, 2, 3, 4]


def _ddp_worker(rank: int, world: int, port: int, cfg: motionprop.Config, run_dir: Path, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from motionprop.train.distributed import cleanup_distributed

    try:
        result = train(cfg, TrainOptions(run_dir, device="cpu", progress=False, log=lambda *_: None))
        torch.save(_params(result.model), out / f"rank{rank}.pt")
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "train.total_iter=3", "train.val_freq=100")
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, tmp_path / "ddp", tmp_path), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same summation order as far as possible
    try:
        single = train(apply_overrides(cfg, ["train.grad_accum=2"]),
                       TrainOptions(tmp_path / "single", progress=False, log=lambda *_: None))
    finally:
        torch.set_num_threads(threads)
    moved = 0
    initial = _params(motionprop.create_model(cfg))
    for name, value in _params(single.model).items():
        # Float tolerance relative to each tensor's size: the original init makes weights ~1e-3.
        assert (rank0[name] - value).norm() <= 1e-3 * value.norm() + 1e-7, name
        moved += int(not torch.allclose(value, initial[name]))
    assert moved > 10  # training really changed the weights


def test_sampler_shards_and_resumes_exactly():
    full = list(IterationSampler(10, total_iter=4, batch_size=3, world_size=1, accum=2, seed=1))
    ranks = [list(IterationSampler(10, 4, 3, world_size=2, rank=r, seed=1)) for r in (0, 1)]
    per_iter = 6
    for it in range(4):
        chunk = full[it * per_iter:(it + 1) * per_iter]
        assert chunk[:3] == ranks[0][it * 3:(it + 1) * 3] and chunk[3:] == ranks[1][it * 3:(it + 1) * 3]
    assert list(IterationSampler(10, 4, 3, accum=2, seed=1, start_iter=2)) == full[2 * per_iter:]
    draws = [d for _, d in full]
    assert draws[:10] == [0] * 10 and draws[10:20] == [1] * 10
    assert sorted(i for i, _ in full[:10]) == list(range(10))


def test_learning_rate_schedule_follows_the_original():
    cfg = TrainConfig(lr=0.1, lr_steps=[40000, 60000], lr_mults=[0.1, 0.1])
    assert [learning_rate(s, cfg) for s in (0, 39999, 40000, 60000)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    warm = TrainConfig(lr=0.01, warmup_lr=[0.1], warmup_steps=[100], lr_steps=[200], lr_mults=[0.1])
    assert [learning_rate(s, warm) for s in (0, 50, 100, 200)] == pytest.approx([0.01, 0.055, 0.1, 0.01])


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "train.total_iter=50", "train.save_freq=1", "train.lr=1e12",
                      "train.val_freq=1000")
    with pytest.raises(TrainingStopped, match="loss became nan|loss became inf"):
        train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints
    motionprop.load_model(checkpoints[-1])  # the last one saved is loadable


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint(tiny_data, tmp_path):
    train_list, val_list = tiny_data
    cmd = [sys.executable, "-m", "motionprop", "train", "--config", "resnet50_yfcc_voc_16gpu_42k",
           "--out", str(tmp_path / "run"), "--no-progress", *TINY, "data.workers=1", "train.total_iter=100000",
           "train.save_freq=100000", "train.val_freq=100000", "model.image_encoder=resnet18",
           f"data.train_source=[{train_list}]", "data.val_source=[]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    # As SLURM does: every process of the job, DataLoader workers included, gets SIGTERM.
    subprocess.run(["pkill", "-TERM", "-f", str(tmp_path / "run")], check=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143  # 128 + SIGTERM, as a shell reports a process ended by it
    assert "checkpoint saved" in err or "checkpoint saved" in _
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    step = int(checkpoints[0].name.split("_")[1])
    assert 2 <= step < 100000
    assert motionprop.load_model(checkpoints[0]).config.model.image_encoder == "resnet18"


def test_quickstart_end_to_end_on_tiny_settings(tmp_path):
    from motionprop.train.quickstart import run_quickstart

    messages = []
    synth = SynthConfig(height=64, width=80, num_pairs=12, val_fraction=0.25)
    summary = run_quickstart(tmp_path / "qs", overrides=[*TINY, "train.total_iter=3"], log=messages.append,
                             synth=synth, real=False)
    m = summary["val"]
    val_pairs = len((tmp_path / "qs" / "data" / "lists" / "val.txt").read_text().splitlines())
    assert {"epe", "epe_nearest", "epe_idw"} <= set(m) and m["samples"] == val_pairs > 0
    text = (tmp_path / "qs" / "summary.md").read_text()
    assert f"{m['epe']:.3f}" in text and f"{m['epe_idw']:.3f}" in text and f"{m['epe_nearest']:.3f}" in text
    assert f"| its fill alone (the non-learned flow its network corrects) | {m['epe_fill']:.3f} |" in text
    assert len(summary["examples"]) == 4 and all(Path(p).is_file() for p in summary["examples"])
    assert Path(summary["examples"][0]).name == "photo.png"  # arrows on a real photo come first
    assert "nearest-guidance" in messages[-1] and "IDW" in messages[-1]
    again = run_quickstart(tmp_path / "qs", overrides=[*TINY, "train.total_iter=3"], log=messages.append,
                           synth=synth, real=False)  # finished run: evaluated again, not retrained
    assert again["iteration"] == 3 and again["val"]["epe"] == pytest.approx(m["epe"], rel=1e-4)


def test_quickstart_stopped_by_its_time_limit_reports_the_checkpoint_it_names(tmp_path, monkeypatch):
    from motionprop.train import quickstart
    from motionprop.train.evaluate import evaluate

    real_train = quickstart.train

    def stopped_after_an_older_validation(cfg, options):
        result = real_train(cfg, options)
        stale = {"epe": 123.0, "epe_nearest": 1.0, "epe_idw": 1.0, "loss": 1.0, "samples": 1}
        return dataclasses.replace(result, stopped_early=True, val=stale)  # as at a time limit after a val

    monkeypatch.setattr(quickstart, "train", stopped_after_an_older_validation)
    synth = SynthConfig(height=64, width=80, num_pairs=12, val_fraction=0.25)
    summary = quickstart.run_quickstart(tmp_path / "qs", overrides=[*TINY, "train.total_iter=2"],
                                        log=lambda *_: None, synth=synth, real=False)
    assert summary["iteration"] == 2 and Path(summary["checkpoint"]).name.endswith("0000002")
    fresh = evaluate(summary["checkpoint"], [str(tmp_path / "qs" / "data" / "lists" / "val.txt")], workers=0)
    assert summary["val"]["epe"] == pytest.approx(fresh["epe"], rel=1e-6) != 123.0


def test_missing_list_file_fails_before_the_run_folder_is_made(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, f"data.val_source=[{tmp_path / 'typo.txt'}]")
    with pytest.raises(motionprop.InputError, match="list file not found: .*typo.txt"):
        train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    assert not (tmp_path / "run").exists()


def test_evaluate_repeats_the_runs_validation_and_checks_its_inputs(tiny_data, tmp_path, capsys):
    from motionprop.cli import main
    from motionprop.train.evaluate import evaluate

    cfg = tiny_config(tiny_data, "train.total_iter=2", "train.val_freq=2", "train.save_freq=2")
    train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (val,) = [x for x in logged if x["split"] == "val"]
    checkpoint = tmp_path / "run" / "checkpoints" / "iter_0000002"
    metrics = evaluate(checkpoint, [tiny_data[1]], device="cpu")
    for key in ("epe", "epe_nearest", "epe_idw", "loss"):  # same pairs, same seeded guidance, same weights
        assert metrics[key] == pytest.approx(val[key], rel=1e-5)
    assert metrics["samples"] == val["samples"] == 4
    # Guidance at every pixel: the nearest-guidance fill is the true flow, and so is the output of this
    # residual network, which moves guided pixels as guided (model.guidance_radius); sparse guidance is not.
    dense = evaluate(checkpoint, [tiny_data[1]], ["data.sample_strategy=[full]"], device="cpu")
    assert dense["epe_nearest"] < 1e-4 and dense["epe"] < 1e-4 < metrics["epe"]
    # --set model.*: the checkpoint's network is rebuilt with the change (output options only)
    fill_only = evaluate(checkpoint, [tiny_data[1]], ["model.guidance_radius=1e9"], device="cpu")
    assert fill_only["epe_idw"] == pytest.approx(metrics["epe_idw"]) and fill_only["loss"] == pytest.approx(metrics["loss"])
    assert fill_only["epe"] != metrics["epe"]  # same weights and guidance: only the blend can move it
    # a residual model's fill alone is reported beside it: what the blend above leaves when it removes the network
    assert fill_only["epe"] == pytest.approx(fill_only["epe_fill"], rel=1e-5)
    assert metrics["epe_fill"] == pytest.approx(fill_only["epe_fill"], rel=1e-6) != metrics["epe"]
    paper = evaluate(checkpoint, [tiny_data[1]], ["model.prediction=flow", "model.guidance_radius=0",
                                                  "model.residual_base=nearest", "model.geodesic_prior_distance=0"],
                     device="cpu")
    assert "epe_fill" not in paper   # a network that predicts the flow itself has no fill to compare with
    assert main(["evaluate", str(checkpoint), str(tiny_data[1]), "--set", "model.img_enc_dim=8"]) == 2
    assert "model.img_enc_dim=8" in capsys.readouterr().err

    out = tmp_path / "m.json"
    assert main(["evaluate", str(checkpoint), str(tiny_data[1]), "--device", "cpu", "--json", str(out)]) == 0
    assert f"EPE {metrics['epe']:.3f} px (its fill alone {metrics['epe_fill']:.3f}, " in capsys.readouterr().out
    assert json.loads(out.read_text())["epe"] == pytest.approx(metrics["epe"])
    assert main(["evaluate", str(checkpoint), str(tmp_path / "nope.txt")]) == 2
    assert "list file not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nockpt"), str(tiny_data[1])]) == 2


def test_a_run_starts_from_image_encoder_init_and_resumes_without_the_file(tiny_data, tmp_path):
    from motionprop.checkpoint import export_encoder
    from motionprop.models import create_model, init_weights_trained_like

    source_cfg = tiny_config(tiny_data)
    motionprop.save_model(tmp_path / "src", init_weights_trained_like(create_model(source_cfg), seed=5))
    export_encoder(tmp_path / "src", tmp_path / "enc.pth", fmt="torchvision")
    source = motionprop.load_model(tmp_path / "src").image_encoder.state_dict()
    lines: list[str] = []
    cfg = tiny_config(tiny_data, "train.total_iter=2", f"train.image_encoder_init={tmp_path / 'enc.pth'}")
    started = train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lines.append))
    plain = train(tiny_config(tiny_data, "train.total_iter=2"), TrainOptions(tmp_path / "plain", progress=False,
                                                                             log=lambda *_: None))

    def distance(model: torch.nn.Module) -> float:  # from the file's weights, over layer1-4 (not the projection)
        return sum(float((v - source[k]).abs().sum()) for k, v in model.image_encoder.state_dict().items()
                   if k.startswith("layer") and v.is_floating_point())

    assert distance(started.model) < 0.05 * distance(plain.model)  # 2 small steps away from the file, not random
    assert any("image encoder initialized from" in x and "a fresh projection" in x for x in lines)
    (tmp_path / "enc.pth").unlink()  # a resume takes its weights from the checkpoint, not from the file
    resumed = train(tiny_config(tiny_data, "train.total_iter=3", f"train.image_encoder_init={tmp_path / 'enc.pth'}"),
                    TrainOptions(tmp_path / "run", resume=True, progress=False, log=lambda *_: None))
    assert resumed.iteration == 3


def test_an_unreadable_image_encoder_init_fails_before_the_run_folder_is_made(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, f"train.image_encoder_init={tmp_path / 'typo.pth'}")
    with pytest.raises(motionprop.ConfigError, match="train.image_encoder_init .*typo.pth: no such file"):
        train(cfg, TrainOptions(tmp_path / "run", progress=False, log=lambda *_: None))
    assert not (tmp_path / "run").exists()


def test_a_resume_with_other_training_lists_continues_on_the_new_data(tiny_data, tmp_path):
    """Training in phases (docs/transfer.md: synthetic first, then real): `train --out RUN --resume
    data.train_source=[...] train.total_iter=N` continues the run's weights and optimizer on the new lists."""
    import shutil

    from motionprop.cli import main

    other = generate(tmp_path / "other", SynthConfig(height=64, width=80, num_pairs=16, val_fraction=0.25, seed=7),
                     progress=False)
    quiet = dict(progress=False, log=lambda *_: None)
    train(tiny_config(tiny_data, "train.total_iter=2"), TrainOptions(tmp_path / "a", **quiet))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    args = ["train", "--out", str(tmp_path / "b"), "--resume", "--no-progress", "--device", "cpu",
            f"data.train_source=[{Path(other.train_list).resolve()}]", "train.total_iter=4"]
    assert main(args) == 0
    same_data = train(tiny_config(tiny_data, "train.total_iter=4"), TrainOptions(tmp_path / "a", resume=True, **quiet))

    saved = motionprop.load_config(tmp_path / "b" / "config.yaml")
    assert [Path(p) for p in saved.data.train_source] == [Path(other.train_list).resolve()]
    assert saved.train.total_iter == 4 and [Path(p) for p in saved.data.val_source] == [tiny_data[1]]
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines if x["split"] == "train"] == [1, 2, 3, 4]
    phased = motionprop.load_model(tmp_path / "b" / "checkpoints" / "iter_0000004").state_dict()
    start = motionprop.load_model(tmp_path / "a" / "checkpoints" / "iter_0000002").state_dict()
    straight = same_data.model.state_dict()
    trained = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, straight[k])]
    assert trained and any(not torch.equal(phased[k], straight[k]) for k in trained)  # other data, other weights
    assert all(not torch.equal(phased[k], start[k]) for k in trained)  # the new phase trained every one of them


@pytest.mark.parametrize("text, expected", [("90", 90.0), ("90m", 90.0), ("90min", 90.0), ("1.5h", 90.0),
                                            ("2h30m", 150.0), (" 45 ", 45.0), ("0.5", 0.5)])
def test_time_limit_reads_minutes_or_hours_for_train_and_quickstart(text, expected):
    from motionprop.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--out", "r", "--time-limit", text]).time_limit == expected
    assert parser.parse_args(["quickstart", "--out", "q", "--time-limit", text]).time_limit == expected


@pytest.mark.parametrize("text", ["80x", "nan", "inf", "-5", "h", "1.5.2", ""])
def test_time_limit_refuses_what_is_not_a_duration_naming_the_option(text, capsys):
    from motionprop.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["train", "--out", "r", "--time-limit", text])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--time-limit" in err and "1.5h" in err and repr(text) in err
