"""The packaged quickstart recipes: each loads and validates, and each says what it is for."""

from __future__ import annotations

import numpy as np
import pytest

from motionprop.errors import InputError
from motionprop.train.quickstart import RECIPES, quickstart_config


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_loads_validates_and_has_a_time_limit(recipe):
    cfg = quickstart_config(recipe)
    cfg.model.validate()
    assert cfg.name == recipe
    assert cfg.data.train_source == [] and cfg.data.val_source == []  # filled in by the quickstart
    assert RECIPES[recipe].time_limit > 0


def test_the_pretrain_recipe_is_the_papers_objective_and_the_others_are_not():
    paper = quickstart_config("pretrain").model
    assert (paper.guidance_input, paper.prediction, paper.flow_loss, paper.guidance_radius) == \
        ("sparse", "flow", "discrete", 0.0)
    assert quickstart_config("pretrain-long").model == paper
    # pretrain-long is our recipe, not a preset: it adds the colour augmentation measured for transfer
    long_data, paper_data = quickstart_config("pretrain-long").data, quickstart_config("pretrain").data
    assert (long_data.colour_jitter, long_data.gray_prob) == (0.4, 0.2)
    assert (paper_data.colour_jitter, paper_data.gray_prob) == (0.0, 0.0)
    for recipe in ("quickstart", "long"):
        assert quickstart_config(recipe).model.prediction == "residual"


def test_an_unknown_recipe_is_a_clear_error():
    with pytest.raises(InputError, match="unknown recipe 'fast'.*quickstart"):
        quickstart_config("fast")


# A one-iteration run on tiny crops, for the tests that train.
TINY = ["model.img_enc_dim=32", "data.short_size=64", "data.crop_size=[64, 64]", "data.batch_size=2",
        "data.batch_size_val=2", "data.workers=0", "data.bg_ratio=0.0039", "data.nms_ks=9",
        "train.total_iter=1", "train.val_freq=1", "train.save_freq=1"]


def _moving_frames(folder, count=10, size=(72, 96)):
    """A folder of frames in which a textured square moves 3 px to the right per frame."""
    from PIL import Image

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    background = rng.integers(0, 255, (*size, 3), dtype=np.uint8) // 3
    folder.mkdir(parents=True)
    for i in range(count):
        frame = background.copy()
        frame[20:44, 10 + 3 * i:34 + 3 * i] = texture
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    return folder


def test_quickstart_trains_on_the_users_videos_too(tmp_path):
    import yaml

    from motionprop.data.synth import SynthConfig
    from motionprop.train.quickstart import REAL_GAPS, run_quickstart

    clip = _moving_frames(tmp_path / "mine" / "square")
    run_quickstart(tmp_path / "qs", overrides=TINY, log=lambda *_: None, real=False, videos=(str(clip),),
                   synth=SynthConfig(height=64, width=80, num_pairs=8, val_fraction=0.25))
    sources = yaml.safe_load((tmp_path / "qs" / "run" / "config.yaml").read_text())["data"]["train_source"]
    lists = [tmp_path / "qs" / "video" / f"gap{gap}" / "lists" / "train.txt" for gap in REAL_GAPS]
    assert [str(p.resolve()) for p in lists] == sources[1:]
    for gap, path in zip(REAL_GAPS, lists):
        lines = path.read_text().splitlines()
        assert len(lines) == 10 - gap  # every pair of the clip moves, so none is dropped as static
        assert all("square" in line for line in lines)


def test_a_missing_video_is_refused_before_any_work(tmp_path):
    from motionprop.train.quickstart import run_quickstart

    with pytest.raises(InputError, match="input not found: .*nothere.mp4"):
        run_quickstart(tmp_path / "qs", log=lambda *_: None, real=False, videos=(str(tmp_path / "nothere.mp4"),))
    assert not (tmp_path / "qs").exists()


def test_an_override_after_video_gets_a_hint(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "motionprop", "quickstart", "--out", str(tmp_path / "qs"),
                           "--video", str(tmp_path), "train.total_iter=5"], capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--video train.total_iter=5" in done.stderr and "before --video" in done.stderr
    assert not (tmp_path / "qs").exists()


@pytest.mark.parametrize("recipe", ["quickstart", "pretrain", "pretrain-long"])
def test_the_summary_points_the_pretrain_recipe_at_transfer(recipe, tmp_path):
    from motionprop.train.quickstart import _summary
    from motionprop.train.trainer import TrainResult

    val = {"epe": 6.0, "epe_nearest": 5.0, "epe_idw": 5.5, "samples": 10}
    text = _summary(TrainResult(500, False, tmp_path / "iter_0000500", val), [], recipe)["text"]
    assert text.startswith(f"{recipe}: after 500 iterations") and "does NOT yet beat" in text
    assert ("motionprop transfer" in text and str(tmp_path / "iter_0000500") in text) == (recipe != "quickstart")
    assert ("--features previous" in text) == (recipe == "pretrain-long")


@pytest.mark.parametrize("recipe", ["quickstart", "pretrain-long"])
def test_the_summary_of_a_run_the_time_limit_stopped_says_it_is_unfinished(recipe, tmp_path):
    from motionprop.train.quickstart import _summary
    from motionprop.train.trainer import TrainResult

    val = {"epe": 8.9, "epe_nearest": 5.9, "epe_idw": 5.7, "samples": 66}
    stopped = TrainResult(493, True, tmp_path / "checkpoints" / "iter_0000493", val)
    summary = _summary(stopped, [], recipe, 22000)
    text = summary["text"]
    assert text.startswith(f"{recipe}: stopped by the time limit after 493 of 22000 iterations")
    assert "unfinished: run the same command again" in text and "train longer" not in text
    assert "| CMP (493 of 22000 iterations, unfinished) | 8.900 |" in summary["markdown"]
    assert summary["finished"] is False and summary["total_iterations"] == 22000
    if recipe == "pretrain-long":  # transfer is pointed at the finished run's checkpoint, not this one
        assert f"when it has finished, measure it with 'motionprop transfer --davis ROOT --out DIR " \
               f"{tmp_path / 'checkpoints' / 'iter_0022000'}'" in text
    finished = _summary(TrainResult(22000, False, tmp_path / "checkpoints" / "iter_0022000", val), [], recipe, 22000)
    assert finished["finished"] is True and "train longer" in finished["text"] and "unfinished" not in finished["text"]


def test_videos_that_give_no_pairs_are_refused_before_training(tmp_path):
    from motionprop.data.synth import SynthConfig
    from motionprop.train.quickstart import run_quickstart

    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    with pytest.raises(InputError, match=r"--video .*broken\.mp4: no training pairs at any frame gap"):
        run_quickstart(tmp_path / "qs", log=lambda *_: None, real=False, videos=(str(broken),),
                       synth=SynthConfig(height=64, width=80, num_pairs=8, val_fraction=0.25))
    assert not (tmp_path / "qs" / "run").exists()


def test_a_clip_too_short_for_the_long_gap_trains_on_the_short_one(tmp_path):
    import yaml

    from motionprop.data.synth import SynthConfig
    from motionprop.train.quickstart import run_quickstart

    clip = _moving_frames(tmp_path / "mine" / "short", count=6)  # gap 3 gives 3 pairs, gap 8 none
    messages = []
    run_quickstart(tmp_path / "qs", overrides=TINY, log=messages.append, real=False, videos=(str(clip),),
                   synth=SynthConfig(height=64, width=80, num_pairs=8, val_fraction=0.25))
    sources = yaml.safe_load((tmp_path / "qs" / "run" / "config.yaml").read_text())["data"]["train_source"]
    assert sources[1:] == [str((tmp_path / "qs" / "video" / "gap3" / "lists" / "train.txt").resolve())]
    assert any("no pairs at frame gap 8" in m for m in messages)


def test_the_cli_offers_every_recipe():
    from motionprop.cli import build_parser

    parser = build_parser()
    quickstart = next(a for a in parser._subparsers._group_actions[0].choices["quickstart"]._actions
                      if a.dest == "recipe")
    assert set(quickstart.choices) == set(RECIPES)


def _tiny_pretrain_long(monkeypatch, total_iter: int):
    """pretrain-long switching phases at iteration 2 of ``total_iter``, on tiny data: (module, overrides, synth)."""
    from motionprop.data.synth import SynthConfig
    from motionprop.train import quickstart as qs

    monkeypatch.setitem(qs.RECIPES, "pretrain-long", qs.Recipe("configs/pretrain_long.yaml", 10.0,
                                                               extra_synthetic=(6600, 1), synthetic_until=2))
    tiny = [*TINY, f"train.total_iter={total_iter}", "train.val_freq=100", "train.print_freq=1",
            "train.keep_last=10", "model.img_enc_dim=16"]
    return qs, tiny, SynthConfig(height=64, width=80, num_pairs=8, val_fraction=0.25)


def test_pretrain_long_trains_with_the_extra_synthetic_pairs_first_then_without_them(tmp_path, monkeypatch):
    import json

    import yaml

    qs, tiny, synth = _tiny_pretrain_long(monkeypatch, 4)
    messages = []
    qs.run_quickstart(tmp_path / "qs", overrides=tiny, log=messages.append, real=False, synth=synth,
                      recipe="pretrain-long")
    out = tmp_path / "qs"
    base, extra = out / "data" / "lists" / "train.txt", out / "synthetic" / "lists" / "train.txt"
    assert json.loads((out / "synthetic" / "synth.json").read_text())["config"]["seed"] == 1   # other clips
    first = "frames/00000/000000.jpg"
    assert (out / "data" / first).read_bytes() != (out / "synthetic" / first).read_bytes()
    config = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert config["data"]["train_source"] == [str(base.resolve())]          # the last phase: without them
    assert config["train"]["total_iter"] == 4 and config["train"]["lr_steps"] == [12800]
    lines = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in lines if m["split"] == "train"] == [1, 2, 3, 4]   # one run, resumed at 2
    assert any("until iteration 2 with the 6 training pairs of" in m for m in messages)
    ckpts = sorted(p.name for p in (out / "run" / "checkpoints").iterdir())
    assert ckpts == [f"iter_000000{i}" for i in (1, 2, 3, 4)]
    again = []
    qs.run_quickstart(tmp_path / "qs", overrides=tiny, log=again.append, real=False, synth=synth,
                      recipe="pretrain-long")                               # done: nothing is retrained
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == ckpts


def test_a_pretrain_long_run_no_longer_than_its_first_phase_keeps_the_extra_pairs(tmp_path):
    from motionprop.config import apply_overrides
    from motionprop.train.quickstart import _phases

    cfg = apply_overrides(quickstart_config("pretrain-long"), ["data.train_source=[a.txt]"])
    lists, extra = [tmp_path / "a.txt"], [tmp_path / "b.txt"]
    two = _phases(cfg, lists, extra, 16000, [])
    assert [p.train.total_iter for p in two] == [16000, 22000]
    assert [len(p.data.train_source) for p in two] == [2, 1]
    short = _phases(apply_overrides(cfg, ["train.total_iter=1000"]), lists, extra, 16000, [])
    assert len(short) == 1 and short[0].train.total_iter == 1000 and len(short[0].data.train_source) == 2
    mine = _phases(cfg, lists, extra, 16000, ["data.train_source=[c.txt]"])
    assert mine == [cfg]


def test_a_run_of_another_recipe_is_not_continued(tmp_path):
    from motionprop.train.quickstart import run_quickstart

    run = tmp_path / "qs" / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(quickstart_config("pretrain").to_yaml())
    with pytest.raises(InputError, match=r"--out .*qs: its run was trained with the recipe 'pretrain', "
                                         r"not 'pretrain-long'.*--force"):
        run_quickstart(tmp_path / "qs", log=lambda *_: None, real=False, recipe="pretrain-long")
    assert sorted(p.name for p in (tmp_path / "qs").iterdir()) == ["run"]     # refused before any data
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_pretrain_long_stopped_in_its_first_phase_continues_both(tmp_path, monkeypatch):
    import json

    import yaml

    qs, tiny, synth = _tiny_pretrain_long(monkeypatch, 3)
    out, messages = tmp_path / "qs", []
    summary = qs.run_quickstart(out, overrides=tiny, log=messages.append, real=False, synth=synth,
                                recipe="pretrain-long", time_limit_min=1e-6)   # stops after one iteration
    assert summary["iteration"] == 1
    assert any("stopped at iteration 1 by the time limit" in m for m in messages)
    qs.run_quickstart(out, overrides=tiny, log=lambda *_: None, real=False, synth=synth, recipe="pretrain-long")
    lines = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in lines if m["split"] == "train"] == [1, 2, 3]
    config = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert config["data"]["train_source"] == [str((out / "data" / "lists" / "train.txt").resolve())]


def test_a_run_is_continued_only_with_the_settings_it_was_started_with(tmp_path, monkeypatch):
    import json

    qs, tiny, synth = _tiny_pretrain_long(monkeypatch, 3)
    out, colour = tmp_path / "qs", ["data.colour_jitter=0.2", "data.gray_prob=0.1"]   # not the recipe's own
    qs.run_quickstart(out, overrides=[*tiny, *colour], log=lambda *_: None, real=False, synth=synth,
                      recipe="pretrain-long", time_limit_min=1e-6)                # stops after one iteration
    metrics = (out / "run" / "metrics.jsonl").read_text()
    with pytest.raises(InputError, match=r"its run was started with data.colour_jitter=0.2, data.gray_prob=0.1, "
                                         r"this command gives data.colour_jitter=0.4, data.gray_prob=0.2; give the "
                                         r"overrides it was started with.*--force"):
        qs.run_quickstart(out, overrides=tiny, log=lambda *_: None, real=False, synth=synth, recipe="pretrain-long")
    assert (out / "run" / "metrics.jsonl").read_text() == metrics                 # refused before training
    # bookkeeping and the length may change; the precision 'auto' keeps the run's own
    qs.run_quickstart(out, overrides=[*colour, *tiny, "train.total_iter=4", "train.save_freq=2"],
                      log=lambda *_: None, real=False, synth=synth, recipe="pretrain-long")
    lines = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in lines if m["split"] == "train"] == [1, 2, 3, 4]
