"""Pooling several transfer results per clip (``evaluation/seeds.py``, ``benchmarks/transfer_seeds.py``)."""

import json

import numpy as np
import pytest

from motionprop.errors import InputError
from motionprop.evaluation.report import sign_flip_p
from motionprop.evaluation.seeds import pool_results, pooled_markdown

CLIPS = ("a", "b", "c")


def _scores(per_clip):
    m = float(np.mean(per_clip))
    return {"mean": {"J": m, "F": m, "JF": m}, "clips": {c: {"J": v, "F": v, "JF": v} for c, v in zip(CLIPS, per_clip)}}


def results_file(trained, random, arch="resnet18", task="probe", short_side=240, chunk=2048):
    """A results.json dict as motionprop transfer writes it: one pre-trained encoder and its random init."""
    return {"encoders": [{"name": "ckpt", "kind": "pre-trained", "arch": arch, "tasks": {task: _scores(trained)}},
                         {"name": "random:resnet18:0,1,2", "kind": "random init", "arch": "resnet18",
                          "tasks": {task: _scores(random)}}],
            "settings": {"tasks": [task], "clips": {c: {} for c in CLIPS}, "short_side": short_side,
                         "feature_stride": 8, "features": "last", "precision": "fp32", "random_seeds": [0, 1, 2],
                         "propagation": {"topk": 5, "query_chunk": chunk}, "probe": {"iterations": 100}}}


def test_each_encoder_is_paired_with_its_own_random_init_and_the_mean_is_taken_per_clip():
    seed0 = results_file([0.30, 0.20, 0.50], [0.20, 0.25, 0.40])   # +10, -5, +10
    seed1 = results_file([0.26, 0.30, 0.42], [0.20, 0.24, 0.40])   # +6, +6, +2 (random init differs by 0.01 on b)
    pooled = pool_results([("s0", seed0), ("s1", seed1)], "probe")
    assert [r.name for r in pooled.rows] == ["s0: ckpt", "s1: ckpt"]
    np.testing.assert_allclose(pooled.rows[0].diffs, [0.10, -0.05, 0.10])
    np.testing.assert_allclose(pooled.pooled.diffs, [0.08, 0.005, 0.06])
    assert pooled.pooled.wins == 3 and pooled.pooled.p == pytest.approx(1 / 8)
    assert pooled.rows[0].p == pytest.approx(sign_flip_p([0.10, -0.05, 0.10]))
    assert pooled.random_spread == pytest.approx(0.01)
    table = pooled_markdown(pooled)
    assert "| mean of 2 | 33.0 | +8.0, +0.5, +6.0 | +4.8 | 3 of 3 | 0.125 |" in table
    assert "differs between the files by up to 1.00 J&F" in table


def test_results_scored_differently_are_refused_by_name():
    base = ("s0", results_file([0.3] * 3, [0.2] * 3))
    with pytest.raises(InputError, match=r"s1: setting short_side = 480 differs from s0's 240"):
        pool_results([base, ("s1", results_file([0.3] * 3, [0.2] * 3, short_side=480))], "probe")
    other_clips = results_file([0.3] * 3, [0.2] * 3)
    other_clips["settings"]["clips"] = {"a": {}, "b": {}, "x": {}}
    with pytest.raises(InputError, match="s1: clips a, b, x differ from those of s0"):
        pool_results([base, ("s1", other_clips)], "probe")
    with pytest.raises(InputError, match="s0: no propagation results"):
        pool_results([base], "propagation")
    # how the work is split does not change scores
    pool_results([("p0", results_file([0.3] * 3, [0.2] * 3, task="propagation")),
                  ("p1", results_file([0.3] * 3, [0.2] * 3, task="propagation", chunk=512))], "propagation")


def test_an_encoder_without_a_random_init_of_its_architecture_is_an_error():
    with pytest.raises(InputError, match=r"s0: no random init of ckpt's architecture \(resnet18_l3\)"):
        pool_results([("s0", results_file([0.3] * 3, [0.2] * 3, arch="resnet18_l3"))], "probe")


def test_the_script_prints_the_table_and_names_a_bad_file(load_benchmark, tmp_path, capsys):
    script = load_benchmark("transfer_seeds")
    for name, trained in (("tr_s0", [0.30, 0.20, 0.50]), ("tr_s1", [0.26, 0.30, 0.42])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results_file(trained, [0.20, 0.25, 0.40])))
    assert script.main(["--task", "probe", str(tmp_path / "tr_s0"), str(tmp_path / "tr_s1" / "results.json")]) == 0
    out = capsys.readouterr().out
    assert "| tr_s0: ckpt | 33.3 | +10.0, -5.0, +10.0 | +5.0 | 2 of 3 | 0.250 |" in out
    assert "| mean of 2 |" in out and "| random init | 28.3 |" in out
    (tmp_path / "bad.json").write_text("{")
    for bad, message in ((tmp_path / "bad.json", "bad.json: not a results.json"),
                         (tmp_path / "missing", "missing: cannot read it")):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--task", "probe", str(tmp_path / "tr_s0"), str(bad)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
