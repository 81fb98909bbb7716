"""motionprop transfer: DAVIS reading, frozen encoders, label propagation, the linear probe and the command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from motionprop.cli import main
from motionprop.errors import CheckpointError, InputError
from motionprop.evaluation import benchmark as benchmark_module
from motionprop.evaluation.benchmark import (TransferSettings, average_seeds, extract_features, run_transfer,
                                             working_size)
from motionprop.evaluation.davis import foreground, list_clips, read_mask, read_masks
from motionprop.evaluation.encoders import (a_trous_pool2, load_encoder_file, parse_encoder, random_encoder,
                                            stride8_features)
from motionprop.evaluation.probe import (ProbeConfig, cell_targets, predict_foreground, probe_folds, probe_objective,
                                        train_probe)
from motionprop.evaluation.propagation import (PropagationConfig, first_argmax, labels_at, normalize_features,
                                               propagate_clip, propagate_step, window_mask)
from motionprop.evaluation.report import _paired_differences, sign_flip_p
from motionprop.models.alexnet import AlexNetFCN
from motionprop.models.init import init_weights_trained_like

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [224, 224, 192]


def write_palette(path: Path, labels: np.ndarray) -> None:
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.astype(np.uint8).tobytes())
    image.putpalette(PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def moving_clip(num_frames=5, size=(64, 80), step=4, two_objects=True, seed=0):
    """Textured frames with objects that move ``step`` px right per frame, and their label maps (ids 1, 2; 255 void)."""
    rng = np.random.default_rng(seed)
    h, w = size
    background = rng.integers(0, 256, (h, w + 64, 3)).astype(np.uint8)
    background = cv2.GaussianBlur(background, (5, 5), 2)
    frames, labels = [], []
    for t in range(num_frames):
        frame = background[:, :w].copy()
        lab = np.zeros((h, w), np.uint8)
        x = 8 + t * step
        frame[16:40, x:x + 20] = (250, 40, 40)
        lab[16:40, x:x + 20] = 1
        if two_objects:
            frame[44:58, 50:70] = (30, 200, 30)
            lab[44:58, 50:70] = 2
            lab[43, 50:70] = 255                       # a void line, as DAVIS-2017 draws between objects
        frames.append(frame)
        labels.append(lab)
    return frames, labels


def write_davis(root: Path, clips: dict[str, tuple[list, list]], palette=True, resolution="480p") -> Path:
    for name, (frames, labels) in clips.items():
        for t, (frame, lab) in enumerate(zip(frames, labels)):
            fdir = root / "JPEGImages" / resolution / name
            fdir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(fdir / f"{t:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
            mpath = root / "Annotations" / resolution / name / f"{t:05d}.png"
            if palette:
                write_palette(mpath, lab)
            else:
                mpath.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(((lab == 1) * 255).astype(np.uint8)).save(mpath)
    return root


@pytest.fixture
def davis2017(tmp_path):
    clips = {"alpha": moving_clip(seed=0), "beta": moving_clip(seed=1, step=2), "gamma": moving_clip(seed=2, step=0)}
    return write_davis(tmp_path / "davis", clips)


# --------------------------------------------------------------------------- dataset walking


def test_palette_masks_keep_ids_and_void(davis2017):
    clips = list_clips(davis2017)
    assert [c.name for c in clips] == ["alpha", "beta", "gamma"]
    labels = read_masks(clips[0])
    assert labels.shape == (5, 64, 80)
    assert set(np.unique(labels)) == {0, 1, 2, 255}
    fg = foreground(labels[0])
    assert set(np.unique(fg)) == {0, 1, 255}


def test_binary_masks_without_resolution_folder(tmp_path):
    root = write_davis(tmp_path / "d16", {"clip": moving_clip(two_objects=False)}, palette=False, resolution="")
    clip = list_clips(root)[0]
    assert len(clip.frames) == 5
    mask = read_mask(clip.masks[0])
    assert set(np.unique(mask)) == {0, 1}                 # 255 is the object in DAVIS-2016, not void


def test_shared_davis2016_clips_read_as_single_objects(shared_data):
    root = shared_data / "davis2016"
    if not root.is_dir():
        pytest.skip("no davis2016 in the shared data")
    clips = list_clips(root)
    assert len(clips) == 6
    for clip in clips:
        assert len(clip.frames) == len(clip.masks) >= 50
    assert set(np.unique(read_mask(clips[0].masks[0]))) == {0, 1}


def test_dataset_errors_name_the_problem(davis2017):
    with pytest.raises(InputError, match="clip 'nope' not found"):
        list_clips(davis2017, ["alpha", "nope"])
    (davis2017 / "Annotations" / "480p" / "beta" / "00004.png").unlink()
    with pytest.raises(InputError, match="5 frames .* but 4 masks"):
        list_clips(davis2017, ["beta"])
    with pytest.raises(InputError, match="no JPEGImages/ folder"):
        list_clips(davis2017 / "JPEGImages")


def test_working_size_rounds_to_the_stride():
    assert working_size(480, 854, 240) == (240, 424)
    assert working_size(854, 480, 240) == (424, 240)
    assert working_size(64, 80, 32) == (32, 40)


# --------------------------------------------------------------------------- encoders


def test_random_encoder_is_seeded_and_stride_8():
    a, b, c = random_encoder("resnet18", 0), random_encoder("resnet18", 0), random_encoder("resnet18", 1)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        fa, fb, fc = a.features(x), b.features(x), c.features(x)
    assert fa.shape == (1, 512, 8, 10) and a.layer == "layer4"
    assert torch.equal(fa, fb) and not torch.equal(fa, fc)
    assert parse_encoder("random:resnet18").seeds == (0, 1, 2)
    assert parse_encoder("random:resnet50_yfcc_voc_16gpu_42k:4").arch == "resnet50"
    with pytest.raises(InputError, match="unknown architecture"):
        parse_encoder("random:vgg16")
    with pytest.raises(InputError, match="encoder not found"):
        parse_encoder("/no/such/checkpoint")


def test_a_trous_alexnet_computes_the_strided_conv5_on_a_denser_grid():
    net = init_weights_trained_like(AlexNetFCN(16, (4, 2, 2, 2)), seed=0).eval()
    features, layer = stride8_features(net)
    assert "a trous" in layer
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        dense = features(x)
        a = net
        strided = a.conv5(a.conv4(a.conv3(a.pool2(a.conv2(a.pool1(a.conv1(x)))))))
    assert strided.shape[-1] == 12 and dense.shape[-1] == 24
    inner = slice(4, 8)
    sub = dense[..., ::2, ::2][..., inner, inner]
    torch.testing.assert_close(sub, strided[..., inner, inner], rtol=1e-4, atol=1e-4)
    assert net.pool2.stride == 2                  # the original network is untouched
    assert a_trous_pool2(net).conv3[0].dilation == (2, 2)


def test_the_previous_layer_is_layer3_for_resnets_and_conv4_for_alexnet():
    from motionprop.evaluation.encoders import at_layer

    res = random_encoder("resnet18", seed=0)
    prev = at_layer(res, "previous")
    assert (res.layer, prev.layer) == ("layer4", "layer3") and at_layer(res, "last") is res
    x = torch.randn(1, 3, 64, 64)
    r = res.features.resnet
    with torch.no_grad():
        expected = r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))))
        assert prev.features(x).shape == (1, 256, 8, 8) and res.features(x).shape == (1, 512, 8, 8)
        torch.testing.assert_close(prev.features(x), expected)

    alex = random_encoder("alexnet_fcn_32x", seed=0)
    prev = at_layer(alex, "previous")
    assert prev.layer.startswith("conv4 (a trous") and "conv3-4" in prev.layer
    a = prev.features.alexnet
    with torch.no_grad():
        out = prev.features(torch.randn(1, 3, 64, 64))
    assert out.shape[1] == a.conv4[0].out_channels != a.conv5[0].out_channels and out.shape[-1] == 8
    with pytest.raises(InputError, match="features 'first'"):
        at_layer(res, "first")


def test_a_resnet_without_layer4_reads_layer3_and_layer2_as_previous():
    from motionprop.evaluation.encoders import at_layer

    enc = random_encoder("resnet18_l3", seed=0)
    r = enc.features.resnet
    assert not hasattr(r, "layer4") and r.conv5.in_channels == 256
    assert not any(k.startswith("layer4.") for k in r.state_dict())
    prev = at_layer(enc, "previous")
    assert (enc.layer, prev.layer) == ("layer3", "layer2")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        layer2 = r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))
        torch.testing.assert_close(prev.features(x), layer2)
        torch.testing.assert_close(enc.features(x), r.layer3(layer2))
        assert r(x).shape == (1, 256, 8, 8)   # conv5 projects layer3 to the feature width
    with pytest.raises(ValueError, match="depth"):
        type(enc.features)(r, depth=4)


@pytest.mark.parametrize("arch", ["resnet18", "resnet18_l3"])
def test_checkpoint_and_both_export_formats_give_the_same_features(tmp_path, arch):
    import motionprop
    from motionprop.checkpoint import export_encoder, save_model

    cfg = motionprop.load_config(Path(motionprop.__file__).parent / "configs" / "quickstart.yaml")
    cfg.model.image_encoder = arch
    model = motionprop.create_model(cfg)
    init_weights_trained_like(model, seed=1)
    save_model(tmp_path / "ckpt", model)
    export_encoder(tmp_path / "ckpt", tmp_path / "enc.safetensors", "motionprop")
    export_encoder(tmp_path / "ckpt", tmp_path / "enc.pth", "torchvision")
    x = torch.randn(1, 3, 64, 64)
    outputs = []
    for path in ("ckpt", "ckpt/model.safetensors", "enc.safetensors", "enc.pth"):
        enc = load_encoder_file(tmp_path / path)
        assert enc.arch == arch
        with torch.no_grad():
            outputs.append(enc.features(x))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=0, atol=0)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_encoder_file(bad)


def test_torchvision_alexnet_export_loads_as_the_papers_alexnet(tmp_path):
    from motionprop.checkpoint import ALEXNET_NAME_MAP

    net = init_weights_trained_like(AlexNetFCN(256, (4, 2, 2, 2)), seed=2)
    state = {}
    for key, value in net.state_dict().items():
        layer, leaf = key.rsplit(".", 1)
        if layer in ALEXNET_NAME_MAP:
            state[f"{ALEXNET_NAME_MAP[layer]}.{leaf}"] = value
    torch.save(state, tmp_path / "alex.pth")
    enc = load_encoder_file(tmp_path / "alex.pth")
    assert enc.arch == "alexnet_fcn_32x" and enc.layer.startswith("conv5")
    expected, _ = stride8_features(net.eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc.features(x), expected(x))


# --------------------------------------------------------------------------- propagation


def test_window_mask():
    assert torch.equal(window_mask(2, 3, 0), torch.eye(6, dtype=torch.bool))
    m = window_mask(1, 4, 1)
    assert m[0].tolist() == [True, True, False, False]
    assert m.sum() == 10
    assert window_mask(3, 3, 1)[0].reshape(3, 3).tolist() == [[True, True, False], [True, True, False],
                                                              [False, False, False]]


def test_propagate_step_top_k_softmax():
    keys = torch.tensor([[[1.0, 0.0, 0.6]], [[0.0, 1.0, 0.8]]]).permute(1, 0, 2)  # (M=1, C=2, n=3)
    keys = torch.nn.functional.normalize(keys, dim=1)
    labels = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])                   # (M=1, L=2, n=3)
    query = torch.nn.functional.normalize(torch.tensor([[1.0], [0.05]]), dim=0)   # close to key 0
    out = propagate_step(query, keys, labels, None, topk=1, temperature=0.1)
    assert out[:, 0].tolist() == [1.0, 0.0]
    # top-2: keys 0 and 2, softmax of their affinities / temperature
    sims = (keys[0].T @ query)[:, 0]
    w = torch.softmax(torch.stack([sims[0], sims[2]]) / 0.1, 0)
    out2 = propagate_step(query, keys, labels, None, topk=2, temperature=0.1)
    torch.testing.assert_close(out2[:, 0], torch.stack([w[0], w[1]]))


def test_weight_share_says_which_context_frame_the_labels_come_from_without_changing_them():
    keys = torch.nn.functional.normalize(torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.rand(3, 2, 5, generator=torch.Generator().manual_seed(1))
    query = keys[2].clone()                                    # each query cell is a cell of context frame 2
    share: list[torch.Tensor] = []
    out = propagate_step(query, keys, labels, None, topk=1, temperature=0.1, query_chunk=2, weight_share=share)
    assert torch.equal(out, propagate_step(query, keys, labels, None, topk=1, temperature=0.1))
    assert len(share) == 1 and share[0].tolist() == [0.0, 0.0, 1.0]
    # top-3: the weights of every query's three matches, summed per frame and averaged over queries
    propagate_step(query, keys, labels, None, topk=3, temperature=0.5, weight_share=share)
    affinity = (query.T @ keys.permute(1, 0, 2).reshape(4, 15)) / 0.5
    values, index = affinity.topk(3, dim=1)
    weights = torch.softmax(values, dim=1)
    expected = torch.stack([(weights * (index // 5 == f)).sum(1).mean() for f in range(3)])
    torch.testing.assert_close(share[1], expected)
    assert abs(float(share[1].sum()) - 1.0) < 1e-5 and share[1][2] < 1.0


@pytest.mark.parametrize("size,radius", [((30, 54), 12), ((7, 11), 2), ((5, 9), 0), ((6, 6), 20), ((20, 13), 9)])
def test_local_propagation_gives_the_windowed_labels(size, radius):
    """Tile by tile (only the context cells near each tile) is the whole-frame product with the window mask:
    the same labels and the same weight shares, for windows smaller and larger than the grid."""
    from motionprop.evaluation.propagation import propagate_step_local

    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + radius)
    keys = torch.nn.functional.normalize(torch.randn(4, 16, h * w, generator=gen), dim=1)
    labels = torch.softmax(torch.randn(4, 3, h * w, generator=gen), dim=1)
    query = torch.nn.functional.normalize(torch.randn(16, h * w, generator=gen), dim=0)
    whole_share: list[torch.Tensor] = []
    local_share: list[torch.Tensor] = []
    whole = propagate_step(query, keys, labels, window_mask(h, w, radius), topk=5, temperature=0.1,
                           weight_share=whole_share)
    local = propagate_step_local(query, keys, labels, size, radius, topk=5, temperature=0.1, weight_share=local_share)
    torch.testing.assert_close(local, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(local_share[0], whole_share[0], rtol=0, atol=1e-6)
    unwindowed = propagate_step(query, keys, labels, None, topk=5, temperature=0.1)
    assert radius >= max(h, w) or not torch.allclose(local, unwindowed, atol=1e-3)   # the window does matter
    with pytest.raises(ValueError, match="cells are not"):
        propagate_step_local(query, keys, labels, (h + 1, w), radius, topk=5, temperature=0.1)


@pytest.mark.parametrize("context_frames,radius", [(7, 3), (2, 1), (0, 2)])
def test_propagate_clip_keeps_the_frame_by_frame_labels(context_frames, radius):
    """The clip as one ring of context frames kept tile by tile gives the labels and weight shares of the
    protocol's frame-by-frame steps (frame 0 and the N previous frames, whole frames with the window mask)."""
    from motionprop.evaluation.propagation import PropagationConfig, normalize_features, propagate_clip

    gen = torch.Generator().manual_seed(context_frames)
    features = torch.randn(12, 8, 9, 14, generator=gen)
    first = np.zeros((36, 56), np.uint8)
    first[8:20, 10:30], first[24:32, 40:52] = 1, 2
    config = PropagationConfig(context_frames=context_frames, topk=3, radius=radius, temperature=0.2)
    shares: list[torch.Tensor] = []
    soft = propagate_clip(features, first, 3, config, weight_share=shares)
    flat = normalize_features(features).reshape(12, 8, 9 * 14)
    expected = torch.zeros(12, 3, 9 * 14)
    expected[0] = soft[0].reshape(3, -1)
    expected_shares: list[torch.Tensor] = []
    for t in range(1, 12):
        context = [0] + list(range(max(1, t - context_frames), t))
        expected[t] = propagate_step(flat[t], flat[context], expected[context], window_mask(9, 14, radius), 3, 0.2,
                                     weight_share=expected_shares)
    torch.testing.assert_close(soft.reshape(12, 3, -1), expected, rtol=0, atol=1e-6)
    assert len(shares) == len(expected_shares) == 11
    for got, want in zip(shares, expected_shares):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert soft[11, 1:].sum() > 0    # the objects' labels reach the last frame


@pytest.mark.parametrize("num_labels", [1, 2, 5])
def test_first_argmax_is_argmax_with_ties_to_the_first_label(num_labels):
    generator = torch.Generator().manual_seed(num_labels)
    scores = torch.randint(0, 3, (num_labels, 37, 53), generator=generator).float()   # many ties
    scores[:, 0, 0] = 1.0                                                                  # all tied
    index = first_argmax(scores)
    assert index.dtype == torch.uint8 and index.shape == (37, 53)
    assert torch.equal(index.long(), scores.argmax(dim=0)) and int(index[0, 0]) == 0
    top = scores.gather(0, index.long()[None])[0]
    assert torch.equal(top, scores.amax(dim=0))


def test_normalize_features_survives_tiny_activations():
    f = torch.randn(2, 8, 3, 3) * 1e-20
    n = normalize_features(f)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(2, 3, 3))


def test_propagation_follows_an_object_with_identity_features():
    """Features that say 'object' or 'background' (plus noise) let propagation track a moving object exactly."""
    t_len, h, w = 6, 8, 12
    truth = np.zeros((t_len, h, w), np.uint8)
    for t in range(t_len):
        truth[t, 2:5, 1 + t:4 + t] = 1
    rng = np.random.default_rng(0)
    feats = np.stack([truth == 1, truth == 0], axis=1).astype(np.float32) + 0.05 * rng.random((t_len, 2, h, w))
    soft = propagate_clip(torch.from_numpy(feats.astype(np.float32)), truth[0], 2, PropagationConfig(radius=3))
    assert soft.shape == (t_len, 2, h, w)
    pred = labels_at(soft, (h, w))
    assert np.array_equal(pred, truth)
    # with a zero radius labels cannot move: the object's new cells get nothing
    still = labels_at(propagate_clip(torch.from_numpy(feats), truth[0], 2, PropagationConfig(radius=0)), (h, w))
    assert not np.array_equal(still[-1], truth[-1])


def test_ground_truth_context_benchmark_labels_each_frame_from_the_true_labels_of_its_context(load_benchmark):
    """benchmarks/bench_propagation_context.py: the object jumps beyond the radius between frames 0 and 1,
    so frame 1 loses it; the protocol (own predictions) never finds it again, while each later frame
    labelled from the ground truth of its context is right."""
    bench = load_benchmark("bench_propagation_context")
    t_len, h, w = 6, 8, 16
    truth = np.zeros((t_len, h, w), np.uint8)
    truth[0, 2:5, 1:4] = 1
    for t in range(1, t_len):
        truth[t, 2:5, 6 + t:9 + t] = 1
    feats = torch.from_numpy(np.stack([truth == 1, truth == 0], axis=1).astype(np.float32))
    config = PropagationConfig(radius=3)
    settings = TransferSettings(propagation=config)
    pred = bench.ground_truth_context(feats, truth, 2, settings)
    own = labels_at(propagate_clip(feats, truth[0], 2, config), (h, w))
    assert not pred[1].any() and not own[1].any()                     # out of reach of frame 0
    assert all(np.array_equal(pred[t], truth[t]) for t in range(2, t_len))
    assert not own[2:].any()                                          # the protocol never finds it again
    assert bench.clip_jf(pred, truth) > bench.clip_jf(own, truth)


def test_drift_statistics_of_hand_made_labels(load_benchmark):
    """Weight shares averaged over frames, entropy in units of log(L), area against the truth (void excluded)."""
    bench = load_benchmark("bench_propagation_context")
    share = [torch.tensor([1.0]), torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5])]
    soft = torch.zeros(4, 2, 2, 2)
    soft[:, 0] = 1.0
    soft[2:] = 0.5                                                  # frames 2 and 3 undecided everywhere
    target = np.zeros((4, 4, 4), np.uint8)
    target[:, :2, :2] = 1
    target[3, 0, 0] = 255
    hard = np.zeros_like(target)
    hard[:, :2, :] = 1                                              # twice the object's area
    stats = bench.drift_statistics(share, soft, hard, target)
    assert stats["first_frame_weight"] == pytest.approx((1.0 + 0.5 + 0.2) / 3)
    assert stats["previous_frame_weight"] == pytest.approx((0.5 + 0.5) / 2)
    assert stats["entropy"] == pytest.approx(2 / 3, abs=1e-6)
    assert stats["area_ratio"] == pytest.approx((2 + 2 + 8 / 3) / 3)


# --------------------------------------------------------------------------- probe


def test_probe_separates_linearly_separable_features():
    rng = np.random.default_rng(0)
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, 8:24, 8:24] = 1
    labels[:, 0, :] = 255
    targets = cell_targets(labels, (4, 4))
    assert targets[0, 0].tolist() == [0, 0, 0, 0]          # row 0 of cells is 1/8 void: kept
    assert targets[0, 1:3, 1:3].tolist() == [[1, 1], [1, 1]]
    fg = torch.from_numpy((targets >= 1).astype(np.float32))[:, None]
    feats = torch.cat([fg * 3 + torch.from_numpy(rng.normal(size=(4, 1, 4, 4))).float() * 0.3,
                       torch.from_numpy(rng.normal(size=(4, 3, 4, 4))).float()], dim=1)
    x = feats.permute(0, 2, 3, 1).reshape(-1, 4)
    y = torch.from_numpy(targets.reshape(-1))
    probe = train_probe(x[y >= 0], y[y >= 0], ProbeConfig(iterations=50))
    pred = predict_foreground(probe, feats, (4, 4))
    assert np.array_equal(pred, (targets == 1).astype(np.uint8))



@pytest.mark.parametrize("chunk", [7, 2048])
def test_probe_objective_is_the_class_balanced_cross_entropy_and_its_gradient(chunk):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(301, 16, generator=generator) * 3
    targets = (torch.rand(301, generator=generator) < 0.2).long()
    class_weight = torch.tensor([0.6, 2.4])
    weight = torch.randn(2, 16, generator=generator).requires_grad_(True)
    bias = torch.randn(2, generator=generator).requires_grad_(True)
    expected = torch.nn.functional.cross_entropy(x @ weight.T + bias, targets, weight=class_weight)
    expected = expected + 1e-2 * weight.pow(2).sum()
    expected.backward()
    loss, grad_weight, grad_bias = probe_objective(x, targets, class_weight, weight.detach(), bias.detach(), 1e-2,
                                                   chunk=chunk)
    assert torch.allclose(loss, expected.detach(), rtol=1e-5)
    assert torch.allclose(grad_weight, weight.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(grad_bias, bias.grad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- the benchmark and the command


@pytest.mark.slow
def test_transfer_command_writes_results_pictures_and_baselines(davis2017, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["transfer", "--davis", str(davis2017), "--out", str(out), "--size", "48", "--pictures", "2",
                 "--random-seeds", "0,1", "--no-progress", str(_checkpoint(tmp_path)), "random:resnet18_l3:5"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    names = [e["name"] for e in results["encoders"]]
    assert names == [str(tmp_path / "ckpt"), "random:resnet18_l3:5"]  # given ones only: its architecture's random is present
    for entry in results["encoders"]:
        for task in ("propagation", "probe"):
            res = entry["tasks"][task]
            assert set(res["clips"]) == {"alpha", "beta", "gamma"}
            for scores in [res["mean"], *res["clips"].values()]:
                assert 0.0 <= scores["J"] <= 1.0 and 0.0 <= scores["F"] <= 1.0
                assert scores["JF"] == pytest.approx((scores["J"] + scores["F"]) / 2)
    assert results["encoders"][1]["seeds"] == [5]
    assert set(results["encoders"][0]["tasks"]["propagation"]["clips"]["alpha"]["objects"]) == {"1", "2"}
    copy = results["baselines"]["copy-first-frame"]["tasks"]["propagation"]["clips"]
    assert copy["gamma"]["JF"] == 1.0                     # nothing moves in gamma
    assert copy["alpha"]["JF"] < 0.9                      # object 1 moves 4 px a frame
    md = (out / "results.md").read_text()
    assert "copy-first-frame" in md and "random:resnet18_l3:5" in md and "J&F per clip" in md
    pictures = sorted(p.name for p in (out / "pictures").rglob("*.png"))
    assert "propagation_alpha.png" in pictures and "probe_gamma.png" in pictures
    picture = cv2.imread(str(next((out / "pictures").rglob("propagation_alpha.png"))))
    assert picture.shape[0] > 48 and picture.shape[1] > 2 * 60   # 2 frames high, 2 panels wide
    printed = capsys.readouterr()
    assert "copy-first-frame: propagation J&F" in printed.out
    # the progress log and the summary give J&F in the same unit (percent)
    summary = next(line for line in printed.out.splitlines() if line.startswith("random:resnet18_l3:5:"))
    assert f"random:resnet18_l3:5 seed 5: {summary.split(': ', 1)[1]}" in printed.err


@pytest.mark.slow
def test_random_baseline_is_added_and_averaged_over_seeds(davis2017, tmp_path):
    settings = TransferSettings(tasks=("propagation",), short_side=32, random_seeds=(0, 1), pictures_per_clip=0)
    results = run_transfer(davis2017, tmp_path / "out", [str(_checkpoint(tmp_path))], ["alpha", "beta"], settings)
    added = results["encoders"][1]
    assert added["name"] == "random:resnet18_l3:0,1" and added["added_as_baseline"]
    res = added["tasks"]["propagation"]
    assert len(res["seeds"]) == 2
    assert res["mean"]["JF"] == pytest.approx(np.mean([s["JF"] for s in res["seeds"]]))
    assert "probe" not in added["tasks"]
    assert "minus random:resnet18_l3:0,1" in (tmp_path / "out" / "results.md").read_text()


def _counting_runs(monkeypatch) -> list[str]:
    """Record the encoders ``run_encoder`` computes (random ones as ``arch:seed``)."""
    import motionprop.evaluation.benchmark as benchmark

    computed, real = [], benchmark.run_encoder

    def counted(encoder, *args, **kwargs):
        computed.append(f"{encoder.arch}:{encoder.seed}")
        return real(encoder, *args, **kwargs)

    monkeypatch.setattr(benchmark, "run_encoder", counted)
    return computed


def test_runs_are_kept_and_reused_only_for_the_same_clips_settings_and_weights(davis2017, tmp_path, monkeypatch):
    computed = _counting_runs(monkeypatch)
    ckpt, cache, logs = str(_checkpoint(tmp_path)), tmp_path / "cache", []
    settings = TransferSettings(short_side=32, random_seeds=(0, 1), pictures_per_clip=1)
    first = run_transfer(davis2017, tmp_path / "a", [ckpt], ["alpha", "beta"], settings, cache_dir=cache)
    assert computed == ["resnet18_l3:None", "resnet18_l3:0", "resnet18_l3:1"]
    assert first["cache"] == str(cache)

    assert len(list(cache.glob("*.json"))) == 3

    computed.clear()
    second = run_transfer(davis2017, tmp_path / "b", [ckpt], ["alpha", "beta"], settings, log=logs.append,
                          cache_dir=cache)
    assert computed == []                                         # every run came from the cache
    assert [e["tasks"] for e in second["encoders"]] == [e["tasks"] for e in first["encoders"]]
    assert second["encoders"][0]["runs_from_cache"] == 1 and second["encoders"][1]["runs_from_cache"] == 2
    assert sum("kept from an earlier command" in line for line in logs) == 3
    pictures = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "pictures").rglob("*.png"))
    assert pictures and pictures == sorted(p.relative_to(tmp_path / "b")
                                           for p in (tmp_path / "b" / "pictures").rglob("*.png"))
    for picture in pictures:
        assert np.array_equal(cv2.imread(str(tmp_path / "a" / picture)), cv2.imread(str(tmp_path / "b" / picture)))

    computed.clear()                                              # other clips, size, layer: computed again
    run_transfer(davis2017, tmp_path / "c", ["random:resnet18_l3:0"], ["alpha", "gamma"], settings, cache_dir=cache)
    run_transfer(davis2017, tmp_path / "c", ["random:resnet18_l3:0"], ["alpha", "beta"],
                 dataclasses.replace(settings, short_side=40), cache_dir=cache)
    run_transfer(davis2017, tmp_path / "c", ["random:resnet18_l3:0"], ["alpha", "beta"],
                 dataclasses.replace(settings, features="previous"), cache_dir=cache)
    run_transfer(davis2017, tmp_path / "c", ["random:resnet18_l3:0"], ["alpha", "beta"],
                 dataclasses.replace(settings, precision="bf16"), cache_dir=cache)
    assert computed == ["resnet18_l3:0"] * 4
    computed.clear()                                              # the seeds asked for do not matter
    run_transfer(davis2017, tmp_path / "c", ["random:resnet18_l3:1"], ["alpha", "beta"],
                 dataclasses.replace(settings, random_seeds=(5,)), cache_dir=cache)
    assert computed == []

    import motionprop                                             # other weights: computed again
    from motionprop.checkpoint import save_model

    model = motionprop.load_model(ckpt)
    with torch.no_grad():
        model.image_encoder.conv1.weight.mul_(1.5)
    save_model(tmp_path / "retrained", model)
    run_transfer(davis2017, tmp_path / "d", [str(tmp_path / "retrained")], ["alpha", "beta"], settings,
                 cache_dir=cache)
    assert computed == ["resnet18_l3:None"]


def test_a_stopped_command_resumes_from_the_runs_it_finished(davis2017, tmp_path, monkeypatch):
    import motionprop.evaluation.benchmark as benchmark

    computed, real, stop_after = [], benchmark.run_encoder, [2]

    def run_or_stop(encoder, *args, **kwargs):
        if len(computed) == stop_after[0]:
            raise KeyboardInterrupt                               # Ctrl-C during the third run
        computed.append(encoder.seed)
        return real(encoder, *args, **kwargs)

    monkeypatch.setattr(benchmark, "run_encoder", run_or_stop)
    settings = TransferSettings(tasks=("propagation",), short_side=32, pictures_per_clip=0)
    args = (davis2017, tmp_path / "out", ["random:resnet18_l3:0,1,2"], ["alpha", "beta"], settings)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(*args, cache_dir=tmp_path / "cache")
    assert computed == [0, 1] and not (tmp_path / "out" / "results.json").exists()
    computed.clear()
    stop_after[0] = -1
    results = run_transfer(*args, cache_dir=tmp_path / "cache")
    assert computed == [2] and results["encoders"][0]["runs_from_cache"] == 2


def test_a_damaged_cache_entry_is_computed_again_and_rewritten(davis2017, tmp_path, monkeypatch):
    computed = _counting_runs(monkeypatch)
    settings, cache, logs = TransferSettings(tasks=("propagation",), short_side=32, pictures_per_clip=0), \
        tmp_path / "cache", []
    first = run_transfer(davis2017, tmp_path / "a", ["random:resnet18_l3:0"], ["alpha", "beta"], settings,
                         cache_dir=cache)
    (entry,) = cache.glob("*.json")
    entry.write_text('{"format": 1, "tasks": ')                   # a truncated entry
    again = run_transfer(davis2017, tmp_path / "b", ["random:resnet18_l3:0"], ["alpha", "beta"], settings,
                         log=logs.append, cache_dir=cache)
    assert computed == ["resnet18_l3:0", "resnet18_l3:0"]
    assert any(line.startswith("warning: ") and str(entry) in line for line in logs)
    assert again["encoders"][0]["tasks"] == first["encoders"][0]["tasks"]
    assert json.loads(entry.read_text())["seed"] == 0               # rewritten whole
    arrays = entry.with_suffix(".npz")
    arrays.write_bytes(arrays.read_bytes()[:len(arrays.read_bytes()) // 2])   # truncated pictures
    logs.clear()
    run_transfer(davis2017, tmp_path / "c", ["random:resnet18_l3:0"], ["alpha", "beta"], settings, log=logs.append,
                 cache_dir=cache)
    assert computed == ["resnet18_l3:0"] * 3 and any(str(entry) in line for line in logs)


def test_transfer_command_cache_options(davis2017, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOTIONPROP_CACHE_DIR", str(tmp_path / "env_cache"))
    base = ["transfer", "--davis", str(davis2017), "--clips", "alpha,beta", "--size", "32", "--task", "propagation",
            "--pictures", "0", "--no-progress", "random:resnet18_l3:0"]
    assert main(base + ["--no-cache", "--out", str(tmp_path / "a")]) == 0
    assert not (tmp_path / "env_cache").exists()
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "env_cache" / "transfer").glob("*.json"))) == 1
    assert main(base + ["--cache", str(tmp_path / "mine"), "--out", str(tmp_path / "c")]) == 0
    assert len(list((tmp_path / "mine").glob("*.json"))) == 1
    capsys.readouterr()
    assert main(base + ["--cache", str(tmp_path / "mine"), "--no-cache", "--out", str(tmp_path / "d")]) == 2
    assert "--no-cache" in capsys.readouterr().err


def test_paired_differences_count_clips_above_and_below_every_random_seed():
    def result(per_clip):
        m = float(np.mean(list(per_clip.values())))
        return {"mean": {"J": m, "F": m, "JF": m},
                "clips": {c: {"J": v, "F": v, "JF": v} for c, v in per_clip.items()}}
    seeds = [result({"a": 0.50, "b": 0.30, "c": 0.40}), result({"a": 0.60, "b": 0.20, "c": 0.40})]
    random_entry = {"name": "random:resnet18:0,1", "kind": "random init", "arch": "resnet18",
                    "tasks": {"probe": average_seeds(seeds)}}
    # a: above the mean (0.55) but not above seed 1; b: above both; c: below both
    trained = {"name": "ckpt", "kind": "pre-trained", "arch": "resnet18",
               "tasks": {"probe": result({"a": 0.58, "b": 0.35, "c": 0.10})}}
    results = {"encoders": [trained, random_entry], "settings": {"clips": {"a": {}, "b": {}, "c": {}}}}
    line = "".join(_paired_differences(results, "probe"))
    assert "a +3.0, b +10.0, c -30.0" in line and "better on 2 of 3 clips" in line
    assert "above every random seed on 1 and below every one on 1" in line
    assert "one-sided p = 0.625" in line           # sign patterns of (3, 10, 30) with a sum >= -17: 5 of 8
    del random_entry["tasks"]["probe"]["seed_clips"]        # results.json written before per-seed scores were kept
    assert "every random seed" not in "".join(_paired_differences(results, "probe"))
    # Two random inits of one architecture listed apart: the encoder is compared with each, not with the last.
    other = {"name": "random:resnet18:2", "kind": "random init", "arch": "resnet18",
             "tasks": {"probe": result({"a": 0.50, "b": 0.40, "c": 0.05})}}
    results["encoders"].append(other)
    lines = "".join(_paired_differences(results, "probe"))
    assert "ckpt minus random:resnet18:0,1" in lines and "a +3.0, b +10.0, c -30.0" in lines
    assert "ckpt minus random:resnet18:2" in lines and "a +8.0, b -5.0, c +5.0" in lines


def test_sign_flip_p_is_exact_for_few_clips_and_sampled_for_many():
    assert sign_flip_p([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]) == pytest.approx(1 / 64)   # all six better
    carried = [0.004, 0.078, -0.271, 0.009, 0.253, 0.001]                             # two large clips
    assert sign_flip_p(carried) > 0.3
    assert sign_flip_p(carried) + sign_flip_p([-d for d in carried]) >= 1.0
    many = [0.01] * 30
    assert 0 < sign_flip_p(many) < 1e-3 and sign_flip_p([-d for d in many]) == 1.0


def test_the_layer_read_is_recorded_in_results_and_table(davis2017, tmp_path):
    runs = {}
    for which in ("last", "previous"):
        settings = TransferSettings(tasks=("propagation",), short_side=32, random_baseline=False,
                                    pictures_per_clip=0, features=which)
        runs[which] = run_transfer(davis2017, tmp_path / which, ["random:resnet18:0"], ["alpha"], settings)
    assert [runs[w]["settings"]["features"] for w in runs] == ["last", "previous"]
    assert [runs[w]["encoders"][0]["features"] for w in runs] == ["layer4", "layer3"]
    assert "| layer3 |" in (tmp_path / "previous" / "results.md").read_text()


def test_bf16_features_are_close_to_float32_and_the_precision_is_recorded(davis2017, tmp_path, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    encoder = random_encoder("resnet18", seed=0)
    exact = normalize_features(extract_features(encoder, frames, 2))
    fast = normalize_features(extract_features(encoder, frames, 2, precision="bf16"))
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)        # bf16 did run ...
    assert (fast * exact).sum(dim=1).min() > 0.98                              # ... and kept the directions
    settings = TransferSettings(tasks=("propagation",), short_side=32, random_baseline=False, pictures_per_clip=0,
                                precision="auto")
    monkeypatch.setattr(benchmark_module, "resolve_precision", lambda precision, device: "bf16")
    result = run_transfer(davis2017, tmp_path / "auto", ["random:resnet18:0"], ["alpha"], settings)
    assert result["settings"]["precision"] == "bf16"                           # auto is recorded as what it ran
    assert "stride 8 (bf16 autocast)." in (tmp_path / "auto" / "results.md").read_text()
    with pytest.raises(InputError, match="--precision fp64"):
        dataclasses.replace(settings, precision="fp64").validate()


def test_probe_folds_group_clips_round_robin():
    names = [f"c{i}" for i in range(7)]
    assert probe_folds(names, 3) == [["c0", "c3", "c6"], ["c1", "c4"], ["c2", "c5"]]
    assert probe_folds(names, 0) == probe_folds(names, 7) == probe_folds(names, 9) == [[n] for n in names]


def test_probe_in_folds_scores_every_clip_and_as_many_folds_as_clips_is_leave_one_out(davis2017, tmp_path):
    def probe(folds: int, out: str) -> dict:
        settings = TransferSettings(tasks=("probe",), short_side=32, random_baseline=False, pictures_per_clip=1,
                                    probe=ProbeConfig(samples_per_clip=200, iterations=20, folds=folds))
        return run_transfer(davis2017, tmp_path / out, ["random:resnet18_l3:0"], None, settings)

    two, three, alone = probe(2, "two"), probe(3, "three"), probe(0, "alone")
    result = two["encoders"][0]["tasks"]["probe"]
    assert list(result["clips"]) == ["alpha", "beta", "gamma"]
    assert result["clips"] != alone["encoders"][0]["tasks"]["probe"]["clips"]     # alpha, gamma held out together
    assert three["encoders"][0]["tasks"] == alone["encoders"][0]["tasks"]
    assert two["settings"]["probe"]["folds"] == 2
    assert "linear probe (2 folds of clips)" in (tmp_path / "two" / "results.md").read_text()
    assert "linear probe (leave-one-clip-out)" in (tmp_path / "three" / "results.md").read_text()
    assert sorted(p.name for p in (tmp_path / "two" / "pictures").rglob("probe_*.png")) == [
        "probe_alpha.png", "probe_beta.png", "probe_gamma.png"]


def test_transfer_command_errors_exit_2(davis2017, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["transfer", "--davis", str(davis2017), "--out", out, "--clips", "alpha,zeta", "random:resnet18:0"]) == 2
    assert "clip 'zeta' not found" in capsys.readouterr().err
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"\x00" * 10)
    assert main(["transfer", "--davis", str(davis2017), "--out", out, str(bad)]) == 2
    assert "broken.pth" in capsys.readouterr().err
    frame = davis2017 / "JPEGImages" / "480p" / "beta" / "00002.jpg"
    cv2.imwrite(str(frame), np.zeros((10, 10, 3), np.uint8))
    assert main(["transfer", "--davis", str(davis2017), "--out", out, "--clips", "beta", "--task", "propagation",
                 "random:resnet18:0"]) == 2
    assert "00002.jpg is 10x10 but its mask is 80x64" in capsys.readouterr().err
    assert main(["transfer", "--davis", str(davis2017), "--out", out, "--clips", "alpha", "--task", "probe",
                 "random:resnet18:0"]) == 2
    assert "at least 2 clips" in capsys.readouterr().err
    assert main(["transfer", "--davis", str(davis2017), "--out", out, "--probe-folds", "1", "random:resnet18:0"]) == 2
    assert "--probe-folds 1" in capsys.readouterr().err
    assert main(["transfer", "--davis", str(davis2017), "--out", out, "--device", "gpu0", "random:resnet18:0"]) == 2
    assert "--device 'gpu0' is not a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["transfer", "--davis", str(davis2017), "--out", out, "--device", "cuda", "random:resnet18:0"]) == 2
        assert "no CUDA" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()
    (tmp_path / "a_file").write_text("keep me")
    assert main(["transfer", "--davis", str(davis2017), "--out", str(tmp_path / "a_file"), "random:resnet18:0"]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "a_file").read_text() == "keep me"


def test_probe_iterations_reach_the_fit_and_the_recorded_settings(davis2017, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["transfer", "--davis", str(davis2017), "--out", str(out), "--clips", "alpha,beta", "--task",
                 "probe", "--size", "32", "--pictures", "0", "--no-random-baseline", "--no-progress",
                 "--probe-iterations", "7", "random:resnet18:0"]) == 0
    assert json.loads((out / "results.json").read_text())["settings"]["probe"]["iterations"] == 7
    assert main(["transfer", "--davis", str(davis2017), "--out", str(out), "--probe-iterations", "0",
                 "random:resnet18:0"]) == 2
    assert "--probe-iterations must be positive" in capsys.readouterr().err


def _checkpoint(tmp_path: Path) -> Path:
    import motionprop
    from motionprop.checkpoint import save_model

    path = tmp_path / "ckpt"
    if not path.exists():
        model = motionprop.create_model(motionprop.load_config(
            Path(motionprop.__file__).parent / "configs" / "quickstart.yaml"))
        save_model(path, init_weights_trained_like(model, seed=3))
    return path


def test_clip_without_object_in_its_first_mask_is_an_error(tmp_path):
    frames, labels = moving_clip()
    labels[0][:] = 0
    root = write_davis(tmp_path / "d", {"empty": (frames, labels)})
    with pytest.raises(InputError, match="has no object"):
        run_transfer(root, tmp_path / "out", ["random:resnet18:0"], settings=TransferSettings(tasks=("propagation",)))
