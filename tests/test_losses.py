"""Training losses."""

from __future__ import annotations

import math

import pytest
import torch

from motionprop.config import ModelConfig
from motionprop.losses import DiscreteLoss, FusedDiscreteLoss, RegressionLoss, build_flow_loss


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


# --------------------------------------------------------------------------- unknown pixels, the fused loss


def _old_discrete_loss(logits: torch.Tensor, target: torch.Tensor, nbins: int = 99, fmax: float = 50.0):
    """The original's formula, written out: upsample, quantize, two mean cross-entropies."""
    from torch.nn import functional as F

    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=True)
    step = 2 * fmax / nbins
    labels = torch.floor((target.clamp(-fmax + 1e-3, fmax - 1e-3) + fmax) / step).long()
    return F.cross_entropy(logits[:, :nbins], labels[:, 0]) + F.cross_entropy(logits[:, nbins:], labels[:, 1])


def _case(batch, low, high, seed=0, unknown=0.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 198, *low, generator=gen) * 4
    target = torch.randn(batch, 2, *high, generator=gen) * 30  # some beyond fmax: end bins
    if unknown:
        hole = torch.rand(batch, 1, *high, generator=gen) < unknown
        target = target.masked_fill(hole.expand_as(target), float("nan"))
        target[0, 1, 0, 0] = float("nan")  # one NaN component makes the whole pixel unknown
    return logits, target


def test_all_known_targets_give_exactly_the_old_loss():
    logits, target = _case(2, (5, 6), (37, 45))
    assert torch.equal(DiscreteLoss()(logits, target), _old_discrete_loss(logits, target))


def test_nan_target_pixels_are_left_out_of_the_mean():
    from torch.nn import functional as F

    logits, target = _case(2, (4, 5), (9, 11), unknown=0.3)
    known = ~torch.isnan(target).any(dim=1)
    up = F.interpolate(logits, size=(9, 11), mode="bilinear", align_corners=True)
    labels = torch.floor((target.nan_to_num(0).clamp(-50 + 1e-3, 50 - 1e-3) + 50) / (100 / 99)).long()
    per_pixel = (F.cross_entropy(up[:, :99], labels[:, 0], reduction="none")
                 + F.cross_entropy(up[:, 99:], labels[:, 1], reduction="none"))
    expected = per_pixel[known].mean()
    assert DiscreteLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert FusedDiscreteLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("batch,low,high,unknown,block", [
    (2, (24, 24), (185, 185), 0.0, 1 << 18),    # stride 8 (AlexNet, ResNet-50), all pixels known
    (3, (13, 11), (101, 87), 0.2, 5000),      # odd sizes, stride ~8, several blocks per sample
    (2, (3, 4), (97, 125), 0.1, 1 << 18),      # stride 32
    (2, (25, 24), (49, 47), 0.5, 3000),       # stride 2 (skip-layer decoder), blocks of one row
    (1, (1, 1), (5, 7), 0.0, 1 << 18),        # a single logit pixel
])
def test_fused_loss_matches_the_reference_value_and_gradient(batch, low, high, unknown, block):
    logits, target = _case(batch, low, high, unknown=unknown)
    logits_ref = logits.clone().requires_grad_()
    logits_fused = logits.clone().requires_grad_()
    ref = DiscreteLoss()(logits_ref, target)
    fused = FusedDiscreteLoss(block_elements=block)(logits_fused, target)
    (ref * 3).backward()
    (fused * 3).backward()
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)
    scale = logits_ref.grad.abs().max()
    assert scale > 0
    assert ((logits_fused.grad - logits_ref.grad).abs().max() / scale).item() < 1e-4


def test_fused_loss_accepts_channels_last_logits_and_equal_sizes():
    logits, target = _case(2, (6, 7), (41, 50))
    ref = DiscreteLoss()(logits, target)
    assert FusedDiscreteLoss()(logits.contiguous(memory_format=torch.channels_last), target).item() == \
        pytest.approx(ref.item(), rel=1e-5)
    same, target_same = _case(2, (6, 7), (6, 7))
    assert torch.equal(FusedDiscreteLoss()(same, target_same), DiscreteLoss()(same, target_same))


def test_fused_loss_stays_float32_under_bf16_autocast():
    logits, target = _case(2, (6, 6), (48, 48))
    ref = DiscreteLoss()(logits, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = FusedDiscreteLoss()(logits, target)
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)


def test_no_known_pixel_gives_zero_loss_and_gradient():
    logits, target = _case(1, (3, 3), (17, 17))
    target[:] = float("nan")
    for loss_fn in (DiscreteLoss(), FusedDiscreteLoss()):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x, target)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.count_nonzero(x.grad) == 0


def test_fused_loss_is_what_the_trainer_builds_by_default():
    from motionprop.config import TrainConfig

    assert TrainConfig().loss_impl == "fused"
    assert isinstance(build_flow_loss(ModelConfig(), fused=True), FusedDiscreteLoss)
    assert not isinstance(build_flow_loss(ModelConfig()), FusedDiscreteLoss)
    with pytest.raises(Exception, match="loss_impl"):
        TrainConfig(loss_impl="fast").validate()


def test_motion_weights_grow_with_motion_up_to_the_cap():
    from motionprop.losses import motion_weights

    flow = torch.zeros(1, 2, 1, 4)
    flow[0, 0, 0] = torch.tensor([0.0, 10.0, 20.0, 60.0])   # still, half the cap, the cap, beyond it
    weights = motion_weights(flow, 4.0)
    assert weights.shape == (1, 1, 1, 4)
    assert weights.flatten().tolist() == pytest.approx([1.0, 3.0, 5.0, 5.0])


def test_weighted_regression_loss_is_the_weighted_mean_of_the_pixels():
    loss = RegressionLoss("mse")
    target = torch.zeros(1, 2, 1, 2)
    flow = torch.tensor([[[[1.0, 3.0]], [[1.0, 3.0]]]])      # squared errors 1 and 9 in both components
    assert loss(flow, target).item() == pytest.approx(5.0)
    assert loss(flow, target, torch.ones(1, 1, 1, 2)).item() == pytest.approx(5.0)   # equal weights: the mean
    assert loss(flow, target, torch.tensor([[[[3.0, 1.0]]]])).item() == pytest.approx((3 * 1 + 9) / 4)
    assert loss(flow, target, torch.tensor([[[[0.0, 1.0]]]])).item() == pytest.approx(9.0)  # weight 0: left out


def test_motion_weighted_training_loss_counts_moving_pixels_more():
    """compute_loss weights by the pair's flow, not by the target (a residual model's target is not the flow)."""
    from motionprop.train.trainer import compute_loss

    loss_fn = RegressionLoss("smooth_l1")
    output = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 4, 4)
    target[:, :, :2, :2] = 0.5                       # the error sits in one output cell
    still, moving = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    moving[:, 0, :2, :2] = 20.0                      # ... where the pair moves
    plain = compute_loss(loss_fn, output, target, "output")
    assert compute_loss(loss_fn, output, target, "output", still, 4.0).item() == pytest.approx(plain.item())
    weighted = compute_loss(loss_fn, output, target, "output", moving, 4.0).item()
    assert weighted == pytest.approx(5 * 0.125 / (5 + 3))     # that cell x 5, the three still cells x 1
    assert weighted > plain.item()


def test_motion_weight_is_refused_with_the_discrete_loss_or_below_zero():
    import motionprop
    from motionprop.config import apply_overrides

    base = motionprop.Config(model=ModelConfig(flow_loss="smooth_l1"))
    assert apply_overrides(base, ["train.motion_weight=4"]).train.motion_weight == 4
    with pytest.raises(motionprop.ConfigError, match="train.motion_weight 4.0 needs a regression"):
        apply_overrides(motionprop.Config(), ["train.motion_weight=4"])
    with pytest.raises(motionprop.ConfigError, match="train.motion_weight must be"):
        apply_overrides(base, ["train.motion_weight=-1"])
