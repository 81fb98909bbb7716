"""Flow bins: quantization, decoding and confidence."""

from __future__ import annotations

import math

import pytest
import torch

from motionprop.models import FlowBins
from motionprop.models import bins as bins_module


def test_quantize_then_decode_is_within_half_a_bin():
    bins = FlowBins(99, 50.0)
    flow = (torch.rand(2, 2, 17, 13) * 2 - 1) * 49.9
    labels = bins.quantize(flow)
    logits = torch.nn.functional.one_hot(labels, 99).permute(0, 1, 4, 2, 3).reshape(2, 198, 17, 13) * 60.0
    decoded = bins.decode(logits.float())
    assert (decoded - flow).abs().max() <= bins.step / 2 + 1e-4


def test_bin_edges_and_clamping():
    bins = FlowBins(5, 10.0)  # step 4: [-10,-6) [-6,-2) [-2,2) [2,6) [6,10]
    flow = torch.tensor([-100.0, -10.0, -6.0, -2.01, 0.0, 1.99, 2.0, 9.99, 100.0]).view(1, 1, 1, -1).repeat(1, 2, 1, 1)
    assert bins.quantize(flow)[0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert bins.centers().tolist() == pytest.approx([-8, -4, 0, 4, 8])


def test_decode_is_the_softmax_expectation():
    bins = FlowBins(3, 3.0)  # centres -2, 0, 2
    logits = torch.tensor([0.0, 0.0, math.log(3.0), 0.0, 0.0, 0.0]).view(1, 6, 1, 1)
    flow = bins.decode(logits)
    # x: p = (1/5, 1/5, 3/5) -> -2/5 + 6/5 = 0.8; y: uniform -> 0
    assert flow[0, :, 0, 0].tolist() == pytest.approx([0.8, 0.0], abs=1e-6)


def test_confidence_is_zero_for_uniform_and_one_for_certain():
    bins = FlowBins(9, 10.0)
    assert bins.confidence(torch.zeros(1, 18, 2, 2)).abs().max() < 1e-6
    certain = torch.zeros(1, 18, 2, 2)
    certain[:, 4] = certain[:, 9 + 2] = 100.0
    assert bins.confidence(certain).min() > 0.999
    assert bins.entropy(torch.zeros(1, 18, 1, 1))[0, :, 0, 0].tolist() == pytest.approx([math.log(9)] * 2)


def test_even_nbins_rejected():
    with pytest.raises(ValueError, match="odd"):
        FlowBins(10, 5.0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("block_pixels", [4096, 6])
def test_decode_and_entropy_equal_the_channel_axis_formulas_in_either_memory_layout(channels_last, block_pixels,
                                                                                     monkeypatch):
    """decode/entropy go in blocks of pixels along a contiguous last axis; they equal the channel-axis formulas."""
    monkeypatch.setattr(bins_module, "BLOCK_PIXELS", block_pixels)  # 6: blocks of one row (of 3 x 4 pixels)
    bins = FlowBins(7, 6.0)
    logits = torch.randn(3, 14, 5, 4) * 4
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    centers = bins.centers().view(1, -1, 1, 1)
    parts = logits[:, :7], logits[:, 7:]
    flow = torch.cat([(torch.softmax(p, 1) * centers).sum(1, keepdim=True) for p in parts], 1)
    entropy = torch.cat([-(torch.softmax(p, 1) * torch.log_softmax(p, 1)).sum(1, keepdim=True) for p in parts], 1)
    assert bins.decode(logits).shape == (3, 2, 5, 4)
    torch.testing.assert_close(bins.decode(logits), flow, rtol=0, atol=1e-5)
    torch.testing.assert_close(bins.entropy(logits), entropy, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="14, H, W"):
        bins.decode(logits[:, :13])
    ours, textbook = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    bins.decode(ours).square().sum().backward()
    parts = textbook[:, :7], textbook[:, 7:]
    torch.cat([(torch.softmax(p, 1) * centers).sum(1, keepdim=True) for p in parts], 1).square().sum().backward()
    torch.testing.assert_close(ours.grad, textbook.grad, rtol=1e-4, atol=1e-5)  # gradients flow through the blocks
