"""The guidance options beyond the paper: dense guidance input, residual prediction, guidance blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from motionprop import create_model
from motionprop.baselines import nearest_fill
from motionprop.config import Config, ModelConfig
from motionprop.errors import ConfigError, InputError
from motionprop.models.guidance_encoding import blend_guidance, dense_guidance_input, nearest_guidance

SMALL = dict(image_encoder="resnet18", img_enc_dim=32, sparse_enc_dim=8)


def random_sparse(batch: int = 2, size: tuple[int, int] = (40, 56), points: int = 7, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    sparse = torch.zeros(batch, 4, *size)
    for b in range(batch):
        ys, xs = rng.integers(0, size[0], points), rng.integers(0, size[1], points)
        sparse[b, 0, ys, xs] = torch.from_numpy(rng.normal(0, 10, points)).float()
        sparse[b, 1, ys, xs] = torch.from_numpy(rng.normal(0, 10, points)).float()
        sparse[b, 2:, ys, xs] = 1
    return sparse


def test_nearest_guidance_distance_is_the_exact_euclidean_distance_transform():
    sparse = random_sparse()
    fill, distance = nearest_guidance(sparse)
    for b in range(sparse.shape[0]):
        expected = ndimage.distance_transform_edt(sparse[b, 2].numpy() == 0)
        np.testing.assert_allclose(distance[b, 0].numpy(), expected, rtol=1e-6, atol=1e-5)


def test_nearest_guidance_fill_equals_the_nearest_fill_baseline_away_from_ties():
    sparse = random_sparse(points=5, seed=3)
    fill, distance = nearest_guidance(sparse)
    expected = nearest_fill(sparse)
    for b in range(sparse.shape[0]):
        # A pixel is a tie when its two nearest points are equally far: either vector is right there.
        ys, xs = torch.nonzero(sparse[b, 2] > 0, as_tuple=True)
        grid_y, grid_x = torch.meshgrid(torch.arange(40.0), torch.arange(56.0), indexing="ij")
        d = ((grid_y[..., None] - ys) ** 2 + (grid_x[..., None] - xs) ** 2).sort(dim=-1).values
        unique = d[..., 1] > d[..., 0]
        assert unique.float().mean() > 0.9
        assert torch.equal(fill[b][:, unique], expected[b][:, unique])


def test_nearest_guidance_without_points_is_zero_fill_and_infinite_distance():
    fill, distance = nearest_guidance(torch.zeros(1, 4, 16, 24))
    assert torch.count_nonzero(fill) == 0
    assert torch.isinf(distance).all()


def test_dense_input_channels_are_fill_mask_and_capped_distance():
    sparse = random_sparse(batch=1)
    encoded, fill = dense_guidance_input(sparse, distance_scale=8.0)
    assert encoded.shape == sparse.shape
    assert torch.equal(encoded[:, :2], fill)
    assert torch.equal(encoded[:, 2], sparse[:, 2])
    assert encoded[:, 3].max() == 1.0 and encoded[:, 3][sparse[:, 2] > 0].max() == 0.0


def test_blend_equals_the_guidance_at_guided_pixels_and_the_flow_beyond_the_radius():
    sparse = random_sparse(batch=1, points=2, seed=5)
    flow = torch.randn(1, 2, 40, 56) * 5
    out = blend_guidance(flow, sparse, radius=3.0)
    mask = sparse[0, 2] > 0
    assert torch.equal(out[0][:, mask], sparse[0, :2][:, mask])
    _, distance = nearest_guidance(sparse)
    far = distance[0, 0] >= 3.0
    torch.testing.assert_close(out[0][:, far], flow[0][:, far])


def _model(**options) -> torch.nn.Module:
    return create_model(Config(model=ModelConfig(**SMALL, **options))).eval()


def _zero_last_layer(model: torch.nn.Module) -> None:
    """Make every bin logit 0 (uniform bins, decoded flow exactly 0): an untrained residual model."""
    last = [m for m in model.flow_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def test_a_residual_model_with_zero_output_gives_the_nearest_fill():
    model = _model(guidance_input="dense", prediction="residual")
    _zero_last_layer(model)
    image, sparse = torch.randn(2, 3, 64, 64), random_sparse(size=(64, 64))
    with torch.no_grad():
        flow = model.predict_flow(image, sparse)
    torch.testing.assert_close(flow, nearest_guidance(sparse)[0], atol=1e-4, rtol=0)


def test_residual_target_plus_fill_is_the_flow():
    model = _model(guidance_input="dense", prediction="residual")
    sparse, flow = random_sparse(size=(64, 64)), torch.randn(2, 2, 64, 64)
    torch.testing.assert_close(model.training_target(flow, sparse) + nearest_guidance(sparse)[0], flow)
    assert _model().training_target(flow, sparse) is flow


def test_guidance_radius_makes_guided_pixels_move_as_guided():
    model = _model(guidance_radius=4.0)
    image, sparse = torch.randn(2, 3, 64, 64), random_sparse(size=(64, 64), seed=2)
    with torch.no_grad():
        flow = model.predict_flow(image, sparse)
    mask = sparse[:, 2] > 0
    assert torch.equal(flow.permute(0, 2, 3, 1)[mask], sparse[:, :2].permute(0, 2, 3, 1)[mask])


def test_the_dense_input_changes_what_the_sparse_encoder_sees_only_when_asked():
    paper, dense = _model(), _model(guidance_input="dense")
    dense.load_state_dict(paper.state_dict())  # same weights, same keys
    sparse = random_sparse(size=(64, 64))
    assert paper.encode_guidance(sparse) is sparse
    assert not torch.equal(dense.encode_guidance(sparse), sparse)


def test_output_to_flow_of_a_residual_model_needs_the_guidance():
    model = _model(prediction="residual")
    with torch.no_grad():
        output = model(torch.randn(1, 3, 64, 64), random_sparse(batch=1, size=(64, 64)))
    with pytest.raises(InputError, match="needs the guidance"):
        model.output_to_flow(output, (64, 64))


@pytest.mark.parametrize("key, value", [("guidance_input", "pixels"), ("prediction", "delta"),
                                        ("guidance_radius", -1.0), ("guidance_distance_scale", 0.0),
                                        ("residual_base", "mean"), ("idw_power", 0.0)])
def test_bad_guidance_options_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=f"model.{key}"):
        ModelConfig(**{key: value}).validate()


def test_an_idw_residual_model_with_zero_output_gives_the_idw_fill():
    from motionprop.baselines import idw_fill

    model = _model(guidance_input="dense", prediction="residual", residual_base="idw", idw_power=4.0)
    _zero_last_layer(model)
    image, sparse = torch.randn(2, 3, 64, 64), random_sparse(size=(64, 64))
    with torch.no_grad():
        flow = model.predict_flow(image, sparse)
    torch.testing.assert_close(flow, idw_fill(sparse, power=4.0), atol=1e-4, rtol=0)
    assert not torch.allclose(flow, idw_fill(sparse, power=2.0), atol=1e-2)


def test_the_radius_of_a_residual_model_blends_into_its_fill():
    from motionprop.baselines import idw_fill

    model = _model(guidance_input="dense", prediction="residual", residual_base="idw", flow_loss="smooth_l1",
                   guidance_radius=1e6)
    last = [m for m in model.flow_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(5.0)  # a correction of (5, 5) px everywhere
        image, sparse = torch.randn(1, 3, 64, 64), random_sparse(batch=1, size=(64, 64))
        flow = model.predict_flow(image, sparse)
        model.guidance_radius = 0.0
        unblended = model.predict_flow(image, sparse)
    # A huge radius leaves almost nothing of the network's correction: the flow is the IDW fill.
    torch.testing.assert_close(flow, idw_fill(sparse, power=2.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(unblended, idw_fill(sparse, power=2.0) + 5.0, atol=0.05, rtol=0)


AFFINITY = dict(guidance_input="dense", prediction="residual", residual_base="idw", idw_power=4.0,
                flow_loss="smooth_l1", affinity_dim=8)


def test_an_untrained_affinity_model_is_exactly_its_idw_fill_and_the_scale_learns():
    from motionprop.baselines import idw_fill

    model = _model(**AFFINITY)
    _zero_last_layer(model)
    image, sparse = torch.randn(2, 3, 64, 64), random_sparse(size=(64, 64))
    with torch.no_grad():
        flow = model.predict_flow(image, sparse)
    torch.testing.assert_close(flow, idw_fill(sparse, power=4.0), atol=1e-4, rtol=0)
    # The scale starts at 0, yet gets a gradient, so training can move away from plain IDW.
    model.train()
    output = model(image, sparse)
    (output - torch.randn_like(output)).square().sum().backward()
    assert model.affinity_scale.grad is not None and model.affinity_scale.grad.abs() > 0


def test_affinity_pulls_a_pixel_toward_the_guidance_point_that_looks_like_it():
    from motionprop.models.guidance_encoding import affinity_correction

    # Two points at the left and right edges of a 1 x 5 cell row; cell 1 is nearer the left point,
    # but its embedding equals the right point's.
    embedding = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0, 1.0]]).view(1, 2, 1, 5)
    sparse = torch.zeros(1, 4, 1, 5)
    sparse[0, 0, 0, 0], sparse[0, 0, 0, 4] = -10.0, 10.0
    sparse[0, 2:, 0, 0] = sparse[0, 2:, 0, 4] = 1
    none = affinity_correction(embedding, sparse, power=4.0, scale=torch.tensor(0.0))
    assert torch.count_nonzero(none) == 0
    pulled = affinity_correction(embedding, sparse, power=4.0, scale=torch.tensor(20.0))
    assert pulled[0, 0, 0, 1] > 10.0  # plain IDW gives about -9.7 there; the affinity flips it toward +10
    assert torch.all(pulled[0, 1] == 0)  # no vertical guidance, no vertical correction


def test_cached_decode_of_an_affinity_model_equals_decode():
    from motionprop.models.init import init_weights_trained_like

    model = init_weights_trained_like(_model(**AFFINITY)).eval()
    with torch.no_grad():
        model.affinity_scale.fill_(5.0)
        image, sparse = torch.randn(1, 3, 64, 64), random_sparse(size=(64, 64))
        direct = model(image.expand(2, -1, -1, -1), sparse)
        cached = model.cached_decode(model.encode_image(image))(sparse)
    torch.testing.assert_close(cached, direct, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("options", [dict(affinity_dim=-1), dict(affinity_dim=4),
                                     dict(affinity_dim=4, prediction="residual", residual_base="nearest",
                                          flow_loss="smooth_l1")])
def test_affinity_needs_an_idw_residual_regression_model(options):
    with pytest.raises(ConfigError, match="model.affinity_dim"):
        ModelConfig(**options).validate()
