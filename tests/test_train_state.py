"""The resume state (optimizer, RNG) loads with weights_only=True; a file that would run code is refused."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

import motionprop
from motionprop.config import TrainConfig
from motionprop.errors import CheckpointError, ConfigError
from motionprop.train.checkpoints import (list_checkpoints, load_train_state, rng_state, save_training_checkpoint,
                                          set_rng_state)


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_training_checkpoint_state_loads_with_weights_only_and_restores_the_generators(tmp_path):
    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=8))
    model = motionprop.CMP(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 64, 64), torch.rand(2, 4, 64, 64)).sum().backward()
    optimizer.step()
    np.random.normal()  # a cached gaussian in numpy's state
    folder = save_training_checkpoint(tmp_path, 5, model, optimizer, None, [rng_state()], keep_last=1)
    expected = _draws()
    torch.load(folder / "train_state.pt", weights_only=True)  # what resuming does: no error
    state = load_train_state(folder)
    assert state["iteration"] == 5 and len(state["optimizer"]["state"]) > 0
    set_rng_state(state["rng"][0])
    assert _draws() == expected


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran on load",))


def test_a_training_state_that_would_run_code_is_refused(tmp_path, capsys):
    torch.save({"optimizer": {}, "rng": [_RunsCode()]}, tmp_path / "train_state.pt")
    with pytest.raises(CheckpointError, match="refusing a training state"):
        load_train_state(tmp_path)
    assert "this ran on load" not in capsys.readouterr().out
    with open(tmp_path / "train_state.pt", "wb") as f:
        pickle.dump({"optimizer": {}}, f)  # not a torch zip file
    with pytest.raises(CheckpointError, match="train_state.pt"):
        load_train_state(tmp_path)


def test_checkpoints_at_multiples_of_keep_every_outlive_keep_last(tmp_path):
    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=8))
    model = motionprop.CMP(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for iteration in range(1, 8):
        save_training_checkpoint(tmp_path, iteration, model, optimizer, None, [rng_state()], keep_last=2,
                                 keep_every=3)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 6, 7]
    for iteration in range(8, 10):  # without keep_every only the newest keep_last stay
        save_training_checkpoint(tmp_path, iteration, model, optimizer, None, [rng_state()], keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [8, 9]


def test_a_negative_keep_every_is_a_config_error():
    with pytest.raises(ConfigError, match="train.keep_every"):
        TrainConfig(keep_every=-1).validate()
