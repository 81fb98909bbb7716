"""Property tests (Hypothesis): any input to the guidance JSON reader, the override parser and the flow readers
gives a value or the package's named error, never another exception."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from motionprop.apps.guidance_file import Guidance, guidance_from_dict, read_guidance  # noqa: E402
from motionprop.config import Config, apply_overrides  # noqa: E402
from motionprop.data.flow_io import read_flow_with_valid  # noqa: E402
from motionprop.errors import ConfigError, FlowFileError, InputError  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 1e308, 2**63]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)
points = st.lists(st.dictionaries(st.sampled_from(["x", "y", "dx", "dy", "z"]), json_values, max_size=5),
                  max_size=4)
guidance_like = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from(["motionprop.guidance", "other"]) | json_values,
    "version": st.sampled_from([1, 2, 0, True, 1.0]) | json_values,
    "image_size": st.fixed_dictionaries({}, optional={"width": numbers | json_values,
                                                      "height": numbers | json_values}) | json_values,
    "arrows": points | json_values, "still_points": points | json_values, "image": json_values})


@SETTINGS
@given(st.one_of(json_values, guidance_like))
def test_guidance_reader_gives_guidance_or_an_input_error(raw):
    try:
        guidance, (width, height), name = guidance_from_dict(raw, "g.json")
    except InputError as exc:
        assert "g.json" in str(exc)
        return
    assert isinstance(guidance, Guidance) and width > 0 and height > 0
    assert np.isfinite(guidance.arrows).all() and np.isfinite(guidance.still_points).all()
    assert name is None or isinstance(name, str)


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_guidance_file_of_any_bytes_gives_guidance_or_an_input_error(tmp_path, data):
    path = tmp_path / "g.json"
    path.write_bytes(data)
    try:
        read_guidance(path, image_size=(64, 48))
    except InputError as exc:
        assert str(path) in str(exc)


FIELDS = {"model": ["image_encoder", "nbins", "fmax", "decoder_combo", "img_enc_dim"],
          "data": ["short_size", "long_size", "crop_size", "mean", "std", "workers", "sample_strategy",
                   "batch_size", "skip_bad", "nms_ks"],
          "train": ["lr", "total_iter", "lr_steps", "lr_mults", "optimizer", "grad_accum", "seed", "amp"]}
yaml_values = st.one_of(st.sampled_from(["0", "-1", "1e-4", "nan", ".inf", "[1, 2]", "[1, 2, 3]", "[]", "{}",
                                         "null", "true", "'x'", "[[1]]", "{a: 1}", "1.5", "100000000000000000000",
                                         "[64, 64]", "[0, 64]", "resnet18", "sgd", "!!binary aGk=", "[", "&a *a"]),
                        st.text(max_size=12))


@SETTINGS
@given(st.lists(st.one_of(
    st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(sorted(FIELDS)),
              st.sampled_from(sorted({k for keys in FIELDS.values() for k in keys}) + ["nope"]), yaml_values),
    st.text(max_size=20)), min_size=1, max_size=3))
def test_overrides_give_a_config_or_a_config_error(overrides):
    try:
        cfg = apply_overrides(Config(), overrides)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(cfg, Config)
    cfg.validate()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


small_arrays = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                         st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
                         st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.bool_, np.complex64]))
flo_headers = st.builds(lambda w, h, rest: struct.pack("<fii", 202021.25, w, h) + rest,
                        st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1), st.binary(max_size=64))
flow_files = st.one_of(
    st.tuples(st.just(".flo"), st.binary(max_size=80) | flo_headers),
    st.tuples(st.just(".png"), st.binary(max_size=80)),
    st.tuples(st.just(".npy"), st.binary(max_size=80) | small_arrays.map(_npy_bytes)),
    st.tuples(st.just(".npz"), st.binary(max_size=80)
              | st.dictionaries(st.sampled_from(["flow", "valid", "x"]), small_arrays, max_size=2).map(_npz_bytes)),
)


@SETTINGS
@given(flow_files)
def test_flow_readers_give_flow_or_a_flow_file_error(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    try:
        flow, valid = read_flow_with_valid(path)
    except FlowFileError as exc:
        assert str(path) in str(exc)
        return
    assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2
    assert valid.shape == flow.shape[:2] and valid.dtype == bool
