"""Checkpoints: motionprop's own format, the original release's files, conversion and encoder export.

motionprop's format is a folder::

    model.safetensors   weights; its metadata holds the format name and version,
                        the kind ("cmp" or "image_encoder") and the config as JSON
    config.yaml         the same config, for people to read
    train_state.pt      (training checkpoints only) optimizer, scheduler, step, RNG states

``load_model`` also takes the ``model.safetensors`` file itself. The original
release's files are torch pickles ``{'step', 'state_dict', 'optimizer'}`` whose
keys start with ``module.``; they carry no config, so the original YAML is
given (or found as ``config.yaml`` beside the file or in its parent folder, the
original's experiment layout).
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .config import Config, ModelConfig, apply_overrides, config_from_dict
from .errors import CheckpointError, ConfigError
from .fileio import atomic_dir, atomic_path, remove_stale_temporaries
from .models.cmp import CMP
from .models.factory import resolve_config

FORMAT_NAME = "motionprop"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TRAIN_STATE_FILE = "train_state.pt"
_MAX_LISTED = 12


# --------------------------------------------------------------------------- writing


def _metadata(config: Config, kind: str, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(config.to_dict()),
    }
    for key, value in (extra or {}).items():
        meta[key] = json.dumps(value)
    return meta


def _contiguous_state(module: nn.Module, prefix_to_strip: str = "") -> dict[str, torch.Tensor]:
    state = {}
    for key, value in module.state_dict().items():
        state[key[len(prefix_to_strip):] if key.startswith(prefix_to_strip) else key] = (
            value.detach().to("cpu").contiguous())
    return state


def save_weights(path: str | Path, model: CMP, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and config to one self-describing ``.safetensors`` file (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_contiguous_state(unwrap_model(model)), str(tmp), metadata=_metadata(model.config, "cmp", extra))
    return path


def save_model(directory: str | Path, model: CMP, extra: Mapping[str, Any] | None = None,
               overwrite: bool = False) -> Path:
    """Write a motionprop checkpoint folder (weights + config.yaml); the folder appears whole or not at all.

    A replacement that ``kill -9`` cut between its two renames left the old
    folder under a temporary name: it is put back first (and leftovers deleted).
    """
    directory = Path(directory)
    remove_stale_temporaries(directory.parent, target=directory.name)
    if directory.exists():
        if not overwrite:
            raise CheckpointError(f"output folder already exists: {directory} (choose another or remove it)")
        if not directory.is_dir():
            raise CheckpointError(f"output {directory} is a file, not a checkpoint folder")
    with atomic_dir(directory, replace=overwrite) as tmp:  # the old folder stays until the new one is whole
        write_model_files(tmp, model, extra)
    return directory


def write_model_files(folder: Path, model: CMP, extra: Mapping[str, Any] | None = None) -> None:
    """The files every motionprop checkpoint folder holds: weights (with config) and config.yaml."""
    model = unwrap_model(model)
    save_weights(folder / WEIGHTS_FILE, model, extra)
    (folder / CONFIG_FILE).write_text(model.config.to_yaml())


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


# --------------------------------------------------------------------------- reading


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def read_torch_file(path: Path) -> Any:
    """A ``torch.save`` file read weights-only (tensors and plain values; a file cannot run code); a file that is
    not one, or holds more, is a :class:`CheckpointError` naming it and why."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError,
            TypeError, struct.error, UnicodeDecodeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({load_failure(exc, path)})") from None


def load_failure(exc: BaseException, path: Path) -> str:
    """Why a weights-only ``torch.load`` failed, in one line, without torch's advice to load the file unsafely."""
    text = str(exc).strip()
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return f"it holds Python objects ({unsafe.group(1)}) that a safe, weights-only load refuses"
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        head = b""
    if head and head != b"PK" and head[:1] != b"\x80":
        return "neither a zip archive nor a pickle"
    if "WeightsUnpickler error:" in text:
        return text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0]


def _find_original_config(path: Path) -> Path | None:
    """The original experiment layout keeps config.yaml in the folder above checkpoints/."""
    for folder in (path.parent, path.parent.parent):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model``; raise one error listing missing, unexpected and mis-shaped keys.

    BatchNorm ``num_batches_tracked`` counters (absent from checkpoints of old
    PyTorch versions, and unused by inference) are the only keys allowed to be
    missing.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (checkpoint vs network): {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the network built from its config; " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / WEIGHTS_FILE
        if not candidate.is_file():
            raise CheckpointError(f"{path} is a folder without {WEIGHTS_FILE}: not a motionprop checkpoint")
        return candidate
    return path


def read_checkpoint(path: str | Path, config: str | Path | Config | ModelConfig | None = None
                    ) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, CMP state dict (keys without ``module.``) and extra metadata of any supported checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    path = _weights_file(path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
        if meta.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{path}: safetensors file without motionprop metadata (not written by motionprop)")
        version = int(meta.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: format version {version} is newer than this motionprop "
                                  f"({FORMAT_VERSION}); upgrade motionprop")
        if meta.get("kind", "cmp") != "cmp":
            raise CheckpointError(f"{path}: holds an exported {meta.get('kind')}, not a full CMP network")
        if config is None:
            try:
                cfg = config_from_dict(json.loads(meta["config"]))
            except ConfigError as exc:   # settings this version does not know: another motionprop wrote it
                raise CheckpointError(f"{path}: its saved config does not fit this motionprop ({exc}); was it "
                                      "written by another version of motionprop? Read it with that version") from None
        else:
            cfg = resolve_config(config)
        extra = {k: json.loads(v) for k, v in meta.items()
                 if k not in ("format", "format_version", "kind", "config")}
        return cfg, state, extra
    return _read_original(path, config)


def _read_original(path: Path, config: str | Path | Config | ModelConfig | None
                   ) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """The original release's pickle: {'step', 'state_dict', 'optimizer'} with 'module.' keys."""
    payload = read_torch_file(path)
    if isinstance(payload, Mapping) and "state_dict" in payload:
        state, extra = payload["state_dict"], {"step": payload.get("step")}
    elif isinstance(payload, Mapping) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state, extra = payload, {}
    else:
        raise CheckpointError(f"{path}: a PyTorch file, but neither a CMP checkpoint nor a state dict")
    if config is None:
        found = _find_original_config(path)
        if found is None:
            raise CheckpointError(
                f"{path}: original-format checkpoints carry no config; give the experiment's config.yaml "
                f"(--config / config=) or a preset name")
        config = found
    try:
        cfg = resolve_config(config)
    except ConfigError as exc:
        raise CheckpointError(f"config for {path}: {exc}") from None
    state = _strip_prefix(state)
    if any(k.startswith(("conv1.", "layer1.")) for k in state) and not any(k.startswith("image_encoder.") for k in state):
        raise CheckpointError(f"{path}: holds an image encoder alone (an export), not a full CMP network")
    return cfg, state, extra


def load_model(path: str | Path, config: str | Path | Config | ModelConfig | None = None,
               device: str | torch.device = "cpu", overrides: Sequence[str] = ()) -> CMP:
    """Load a CMP network in eval mode from a motionprop checkpoint or an original release file.

    ``config`` is needed only for original files whose folder holds no
    ``config.yaml``: a YAML path (the original's works), a preset name or a
    config object. ``overrides`` (``section.key=value``) change the config
    before the network is built, e.g. ``model.guidance_radius=32``; one that
    changes the weights' shapes fails as a mismatch. Every mismatch between file
    and network is an error; a missing file never falls back to random weights.
    """
    cfg, state, _ = read_checkpoint(path, config)
    if overrides:
        cfg = apply_overrides(cfg, list(overrides))
    model = CMP(cfg)
    try:
        load_state_strict(model, state, path)
    except CheckpointError as exc:
        if not overrides:
            raise
        raise CheckpointError(f"{exc} (after the config changes {', '.join(overrides)}: "
                              "those that change the network's weights cannot be applied to a trained one)") from None
    return model.to(device).eval()


# --------------------------------------------------------------------------- conversion and export


def convert_original(src: str | Path, config: str | Path | Config | ModelConfig | None, out_dir: str | Path,
                     overwrite: bool = False) -> Path:
    """Original release file -> motionprop checkpoint folder; returns the folder.

    ``overwrite`` replaces an existing folder, but never one that holds an input
    (the source or its config; a config found beside the source is inside any
    folder that holds the source).
    """
    from .fileio import is_within

    for what, path in (("source", src), ("config", config)):
        if isinstance(path, (str, Path)) and Path(path).exists() and is_within(path, out_dir):
            raise CheckpointError(f"output folder {out_dir} holds the {what} {path}: choose another output "
                                  "folder (it would be replaced)")
    cfg, state, extra = read_checkpoint(src, config)
    model = CMP(cfg)
    load_state_strict(model, state, src)
    extra = {k: v for k, v in extra.items() if v is not None}
    extra["converted_from"] = Path(src).name
    return save_model(out_dir, model, extra=extra, overwrite=overwrite)


# torchvision has no AlexNet with BatchNorm; this map names our AlexNet-BN encoder's layers
# in the flat style of torchvision's `features` / `classifier` Sequentials (documented in docs/checkpoints.md).
ALEXNET_NAME_MAP: dict[str, str] = {
    "conv1.0": "features.0", "conv1.1": "features.1",
    "conv2.0": "features.4", "conv2.1": "features.5",
    "conv3.0": "features.8", "conv3.1": "features.9",
    "conv4.0": "features.11", "conv4.1": "features.12",
    "conv5.0": "features.14", "conv5.1": "features.15",
    "fc6.0": "classifier.0", "fc6.1": "classifier.1",
    "fc7.0": "classifier.4", "fc7.1": "classifier.5",
}


def encoder_state(model: CMP, fmt: str = "motionprop") -> dict[str, torch.Tensor]:
    """The image encoder's weights, named for ``fmt``.

    ``motionprop``: our own names (``conv1.weight``, ..., ``conv5.*`` or ``conv8.*``),
    loadable by ``IMAGE_ENCODERS[name](dim, norm)``. ``torchvision``: for ResNet,
    torchvision's resnet names with the CMP-only ``conv5`` projection left out,
    so ``torchvision.models.resnet50().load_state_dict(sd, strict=False)``
    (only ``fc.*`` missing), mmsegmentation and detectron2 converters take it;
    for AlexNet-BN, :data:`ALEXNET_NAME_MAP` (``conv8`` left out).
    """
    state = _contiguous_state(model.image_encoder)
    if fmt == "motionprop":
        return state
    if fmt != "torchvision":
        raise CheckpointError(f"unknown export format {fmt!r}; choose motionprop or torchvision")
    name = model.config.model.image_encoder
    if name.startswith("resnet"):
        projection = f"{model.image_encoder.PROJECTION}."
        return {k: v for k, v in state.items() if not k.startswith(projection)}
    renamed = {}
    for key, value in state.items():
        layer, leaf = key.rsplit(".", 1)
        if layer in ALEXNET_NAME_MAP:
            renamed[f"{ALEXNET_NAME_MAP[layer]}.{leaf}"] = value
    return renamed


def export_encoder(checkpoint: str | Path, out: str | Path, fmt: str = "motionprop",
                   config: str | Path | Config | ModelConfig | None = None, overwrite: bool = False) -> Path:
    """Write the image encoder of a checkpoint alone, for fine-tuning on downstream tasks (atomically).

    ``motionprop`` format writes a ``.safetensors`` with the encoder name and
    width in its metadata; ``torchvision`` format writes a ``.pth`` state dict
    (``torch.load`` it and ``load_state_dict(..., strict=False)``). An existing
    ``out`` is replaced only with ``overwrite``, and never when it is an input.
    """
    from .fileio import same_file

    inputs = [Path(checkpoint)]
    if Path(checkpoint).is_dir():
        inputs += [Path(checkpoint) / WEIGHTS_FILE, Path(checkpoint) / CONFIG_FILE]
    if isinstance(config, (str, Path)):
        inputs.append(Path(config))
    for path in inputs:
        if same_file(out, path):
            raise CheckpointError(f"output {out} is the input {path}: choose another output file")
    if Path(out).is_dir():
        raise CheckpointError(f"output {out} is a folder: give a file name")
    if Path(out).exists() and not overwrite:
        raise CheckpointError(f"output file already exists: {out} (choose another name or use --force)")
    model = load_model(checkpoint, config)
    state = encoder_state(model, fmt)
    out = Path(out)
    with atomic_path(out) as tmp:
        if fmt == "motionprop":
            meta = _metadata(model.config, "image_encoder", {
                "image_encoder": model.config.model.image_encoder,
                "img_enc_dim": model.config.model.img_enc_dim,
            })
            save_file(state, str(tmp), metadata=meta)
        else:
            torch.save(state, str(tmp))
    return out
