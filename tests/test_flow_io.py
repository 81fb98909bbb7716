"""Tests of motionprop.data.flow_io: round trips per format, damaged files, real Sintel flow."""

from __future__ import annotations

import numpy as np
import pytest

from motionprop.data.flow_io import (
    FLO_MAGIC,
    read_flow,
    read_flow_jpg,
    read_flow_with_valid,
    write_flow,
    write_flow_jpg,
)
from motionprop.errors import FlowFileError, InputError

SINTEL_FLO = "sintel/clean/easy/gt/frame_0002.flo"


def random_flow(height: int = 37, width: int = 53, scale: float = 20.0, seed: int = 0) -> np.ndarray:
    """Float32 (H, W, 2) flow with non-representable-in-few-bits values, both signs."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((height, width, 2)) * scale).astype(np.float32)


def smooth_flow(height: int = 48, width: int = 64) -> np.ndarray:
    """A slowly varying flow in [-40, 40], which JPEG compresses with little error."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([40 * np.sin(x / width * np.pi), 30 * np.cos(y / height * np.pi)], axis=-1)


@pytest.mark.parametrize("suffix", [".flo", ".npy", ".npz"])
def test_exact_formats_round_trip_bit_exactly(tmp_path, suffix):
    flow = random_flow()
    write_flow(tmp_path / f"f{suffix}", flow)
    back = read_flow(tmp_path / f"f{suffix}")
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert np.array_equal(back, flow)


def test_kitti_png_round_trip_within_quantization(tmp_path):
    flow = random_flow()
    write_flow(tmp_path / "f.png", flow)
    back, valid = read_flow_with_valid(tmp_path / "f.png")
    assert valid.all()
    assert np.abs(back - flow).max() <= 1 / 128 + 1e-6  # rounded to 1/64 px


def test_kitti_png_channel_order_is_u_then_v(tmp_path):
    import cv2

    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0
    write_flow(tmp_path / "f.png", flow)
    raw = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)  # BGR
    assert raw.dtype == np.uint16
    assert (raw[..., 2] == 2**15 + 3 * 64).all() and (raw[..., 1] == 2**15 - 2 * 64).all()
    assert (raw[..., 0] == 1).all()


@pytest.mark.parametrize("suffix", [".flo", ".png", ".npy", ".npz"])
def test_unknown_flow_round_trips_as_nan_or_invalid(tmp_path, suffix):
    flow = random_flow(scale=5.0)
    valid = np.ones(flow.shape[:2], bool)
    valid[3, 4] = valid[10, 20] = False
    write_flow(tmp_path / f"f{suffix}", flow, valid=valid)
    with_nan = read_flow(tmp_path / f"f{suffix}")
    assert np.array_equal(np.isnan(with_nan).any(-1), ~valid)
    assert np.isnan(with_nan[3, 4]).all()
    zeroed, back_valid = read_flow_with_valid(tmp_path / f"f{suffix}")
    assert np.array_equal(back_valid, valid)
    assert (zeroed[~valid] == 0).all() and np.isfinite(zeroed).all()


def test_flo_values_above_1e9_are_unknown(tmp_path):
    flow = random_flow()
    flow[0, 0, 1] = 1e10  # only one component: the whole pixel is unknown
    write_flow(tmp_path / "f.flo", flow)
    back, valid = read_flow_with_valid(tmp_path / "f.flo")
    assert not valid[0, 0] and valid.sum() == valid.size - 1
    assert (back[0, 0] == 0).all()


def test_jpg_pair_round_trip_within_quantization(tmp_path):
    flow = smooth_flow()
    write_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg", flow, quality=100)
    back = read_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg")
    assert back.dtype == np.float32 and back.shape == flow.shape
    step = 100 / 255
    assert np.abs(back - flow).max() < 2 * step  # half a step of rounding + JPEG's own error
    assert np.abs(back - flow).mean() < step


def test_jpg_pair_clips_to_50_pixels_and_decodes_like_the_original(tmp_path):
    flow = np.full((16, 16, 2), 80.0, np.float32)
    flow[..., 1] = -80.0
    write_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg", flow)
    back = read_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg")
    # The original: float32(pixel) / 255 * 100 - 50, so 255 -> exactly 50 and 0 -> exactly -50.
    assert (back[..., 0] == np.float32(255) / 255 * 100 - 50).all()
    assert (back[..., 1] == -50).all()


def test_jpg_decoding_matches_pillow_like_the_original_loader(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    write_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg", random_flow(scale=15.0), quality=80)
    ours = read_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg")
    theirs = [np.array(Image.open(tmp_path / n)).astype(np.float32) / 255 * 100 - 50 for n in ("x.jpg", "y.jpg")]
    assert np.array_equal(ours, np.stack(theirs, axis=-1))


def test_jpg_pair_of_different_sizes_is_rejected(tmp_path):
    write_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg", smooth_flow(48, 64))
    write_flow_jpg(tmp_path / "x2.jpg", tmp_path / "y2.jpg", smooth_flow(40, 64))
    with pytest.raises(FlowFileError, match="same size"):
        read_flow_jpg(tmp_path / "x.jpg", tmp_path / "y2.jpg")


def test_truncated_jpg_is_rejected(tmp_path):
    write_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg", random_flow(64, 64))
    data = (tmp_path / "y.jpg").read_bytes()
    (tmp_path / "y.jpg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FlowFileError, match="y.jpg"):
        read_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg")


def test_truncated_flo_names_the_file(tmp_path):
    write_flow(tmp_path / "f.flo", random_flow())
    data = (tmp_path / "f.flo").read_bytes()
    (tmp_path / "short.flo").write_bytes(data[:-4])
    with pytest.raises(FlowFileError, match=r"short\.flo.*truncated"):
        read_flow(tmp_path / "short.flo")
    (tmp_path / "header.flo").write_bytes(data[:7])
    with pytest.raises(FlowFileError, match=r"header\.flo.*truncated"):
        read_flow(tmp_path / "header.flo")


def test_flo_with_trailing_bytes_is_rejected(tmp_path):
    write_flow(tmp_path / "f.flo", random_flow())
    (tmp_path / "long.flo").write_bytes((tmp_path / "f.flo").read_bytes() + b"\0" * 8)
    with pytest.raises(FlowFileError, match="wrong size"):
        read_flow(tmp_path / "long.flo")


def test_bad_magic_names_the_file(tmp_path):
    write_flow(tmp_path / "f.flo", random_flow())
    data = bytearray((tmp_path / "f.flo").read_bytes())
    data[:4] = np.array([FLO_MAGIC + 1], "<f4").tobytes()
    (tmp_path / "bad.flo").write_bytes(bytes(data))
    with pytest.raises(FlowFileError, match=r"bad\.flo.*magic"):
        read_flow(tmp_path / "bad.flo")


def test_big_endian_flo_is_rejected_by_its_magic(tmp_path):
    header = np.array([FLO_MAGIC], ">f4").tobytes() + np.array([2, 2], ">i4").tobytes()
    (tmp_path / "be.flo").write_bytes(header + b"\0" * 32)
    with pytest.raises(FlowFileError, match="magic"):
        read_flow(tmp_path / "be.flo")


@pytest.mark.parametrize("name", ["missing.flo", "missing.png", "missing.npy", "missing.npz"])
def test_missing_file_names_the_file(tmp_path, name):
    with pytest.raises(FlowFileError, match=name.replace(".", r"\.")):
        read_flow(tmp_path / name)


def test_missing_jpg_names_the_file(tmp_path):
    with pytest.raises(FlowFileError, match=r"nope_x\.jpg"):
        read_flow_jpg(tmp_path / "nope_x.jpg", tmp_path / "nope_y.jpg")


@pytest.mark.parametrize("suffix", [".png", ".npy", ".npz"])
def test_damaged_files_raise_flow_file_error(tmp_path, suffix):
    write_flow(tmp_path / f"f{suffix}", random_flow())
    data = (tmp_path / f"f{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(FlowFileError, match="cut"):
        read_flow(tmp_path / f"cut{suffix}")


def test_npy_of_wrong_shape_is_rejected(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 5, 7), np.float32))
    with pytest.raises(FlowFileError, match=r"\(H, W, 2\)"):
        read_flow(tmp_path / "f.npy")


def test_npz_without_flow_key_is_rejected(tmp_path):
    np.savez(tmp_path / "f.npz", other=np.zeros((3, 3, 2)))
    with pytest.raises(FlowFileError, match="'flow'"):
        read_flow(tmp_path / "f.npz")


def test_8bit_png_is_not_a_kitti_flow(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "f.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FlowFileError, match="KITTI"):
        read_flow(tmp_path / "f.png")


def test_unknown_extension_is_rejected(tmp_path):
    with pytest.raises(FlowFileError, match=r"\.flo"):
        read_flow(tmp_path / "f.txt")
    with pytest.raises(FlowFileError, match="read_flow_jpg"):
        read_flow(tmp_path / "f.jpg")
    with pytest.raises(FlowFileError, match=r"\.txt"):
        write_flow(tmp_path / "f.txt", random_flow())


def test_writing_a_wrong_shape_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"f\.flo"):
        write_flow(tmp_path / "f.flo", np.zeros((2, 4, 4), np.float32))
    assert not (tmp_path / "f.flo").exists()


def test_write_replaces_atomically_and_leaves_no_temporary(tmp_path):
    write_flow(tmp_path / "f.flo", random_flow(seed=1))
    write_flow(tmp_path / "f.flo", random_flow(seed=2))
    assert np.array_equal(read_flow(tmp_path / "f.flo"), random_flow(seed=2))
    assert [p.name for p in tmp_path.iterdir()] == ["f.flo"]


def test_reads_real_sintel_flow(shared_data):
    flow = read_flow(shared_data / SINTEL_FLO)
    assert flow.shape == (436, 1024, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    magnitude = np.linalg.norm(flow, axis=-1)
    assert 1.0 < magnitude.mean() < 10.0  # "easy" alley_1: about 3 px on average
    assert 1.0 < magnitude.max() < 50.0
    assert flow.std(axis=(0, 1)).min() > 0.1  # both components vary: x and y are not swapped in for zeros


def test_real_sintel_flow_round_trips_bit_exactly(shared_data, tmp_path):
    source = shared_data / SINTEL_FLO
    flow = read_flow(source)
    write_flow(tmp_path / "copy.flo", flow)
    assert (tmp_path / "copy.flo").read_bytes() == source.read_bytes()


def test_real_sintel_flow_through_the_jpg_pair(shared_data, tmp_path):
    flow = read_flow(shared_data / SINTEL_FLO)
    write_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg", flow)
    back = read_flow_jpg(tmp_path / "x.jpg", tmp_path / "y.jpg")
    error = np.abs(back - flow)
    assert error.mean() < 0.25  # quantization (0.2 px at most) plus JPEG; larger only at motion edges
    assert np.percentile(error, 99) < 1.0
