"""Shared fixtures: the real test data beside the checkout, seeded torch, the scripts of benchmarks/."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``$MOTIONPROP_SHARED_DATA``."""
    return Path(os.environ.get("MOTIONPROP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real frames and flows of ``../shared/data``; tests using it skip when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Commands that keep results between runs (``transfer``'s random init) keep them in a test's own folder."""
    monkeypatch.setenv("MOTIONPROP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def load_benchmark():
    """``load_benchmark("bench_x")`` -> the module ``benchmarks/bench_x.py`` (registered in sys.modules while
    the test runs, as its dataclasses need)."""
    loaded = []

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
