"""Training losses."""

from __future__ import annotations

import math

import pytest
import torch

from motionprop.config import ModelConfig
from motionprop.losses import DiscreteLoss, RegressionLoss, build_flow_loss


def test_discrete_loss_hand_computed():
    loss = DiscreteLoss(nbins=3, fmax=3.0)  # bins [-3,-1) [-1,1) [1,3]
    target = torch.tensor([0.5, -2.0]).view(1, 2, 1, 1)  # x -> bin 1, y -> bin 0
    logits = torch.tensor([0.0, 0.0, 0.0, math.log(2.0), 0.0, 0.0]).view(1, 6, 1, 1)
    # x: uniform over 3 -> -log(1/3); y: p(bin 0) = 2/4 -> -log(1/2)
    assert loss(logits, target).item() == pytest.approx(math.log(3.0) + math.log(2.0), rel=1e-6)


def test_discrete_loss_upsamples_logits_to_the_target():
    loss = DiscreteLoss(nbins=3, fmax=3.0)
    logits = torch.zeros(1, 6, 1, 1)
    logits[0, 2] = 10.0  # x certain of bin 2
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 2.0  # x in bin 2 everywhere; y in bin 1 with uniform logits
    assert loss(logits, target).item() == pytest.approx(
        -math.log(math.exp(10) / (math.exp(10) + 2)) + math.log(3.0), rel=1e-5)
    target[:, 0, 0, 0] = -2.0  # one pixel in bin 0 raises the mean
    assert loss(logits, target).item() > math.log(3.0) + 0.5


def test_loss_choice_follows_the_model_config():
    assert isinstance(build_flow_loss(ModelConfig(flow_loss="discrete")), DiscreteLoss)
    reg = build_flow_loss(ModelConfig(flow_loss="mse"))
    assert isinstance(reg, RegressionLoss)
    flow = torch.ones(1, 2, 2, 2)
    assert reg(flow, torch.zeros(1, 2, 4, 4)).item() == pytest.approx(1.0)
