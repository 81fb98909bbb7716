"""Named checkpoints: the paper's released weights, downloaded once, checked, converted and cached.

``motionprop download annotation`` fetches the original release's annotation
network (skip-layer ResNet-50 trained on VIP + MPII, the one MOFA-Video and
others embed) from its public mirror on the Hugging Face Hub, checks its size
and sha256, converts it to motionprop's format with the preset's config
(:func:`motionprop.convert_original`) and caches the folder. Every
``--checkpoint`` option then accepts the name ``annotation``.

The cache is ``$MOTIONPROP_CACHE`` or ``$XDG_CACHE_HOME/motionprop`` (default
``~/.cache/motionprop``). The download goes through ``huggingface_hub`` (the
optional extra ``download``), whose own cache and ``HF_HUB_OFFLINE=1`` apply.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import CheckpointError, InputError


@dataclass(frozen=True)
class NamedCheckpoint:
    """Where a released checkpoint lives, what it must be, and the config it was trained with."""

    repo_id: str
    filename: str
    size: int
    sha256: str
    config: Any  # a preset name or a Config
    description: str


NAMED: dict[str, NamedCheckpoint] = {
    "annotation": NamedCheckpoint(
        repo_id="MyNiuuu/MOFA-Video-Traj",
        filename="models/cmp/experiments/semiauto_annot/resnet50_vip+mpii_liteflow/checkpoints/"
                 "ckpt_iter_42000.pth.tar",
        size=228_465_722,
        sha256="cd3a385e227c29f89b5c7c6f4c89d356f6022fa7fcfc71ab1bd40e9833048dd6",
        config="resnet50_vip+mpii_liteflow",
        description="the original release's annotation network: skip-layer ResNet-50, VIP + MPII, 42k iterations"),
}


def cache_dir() -> Path:
    """Where converted named checkpoints are kept."""
    if os.environ.get("MOTIONPROP_CACHE"):
        return Path(os.environ["MOTIONPROP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "motionprop"


def _spec(name: str) -> NamedCheckpoint:
    if name not in NAMED:
        raise InputError(f"unknown checkpoint name {name!r}; known: {', '.join(NAMED)}")
    return NAMED[name]


def resolve_checkpoint(value: str) -> str:
    """A ``--checkpoint`` value as a path: a named checkpoint's cached folder, or ``value`` itself.

    An existing file or folder of that name wins over the name.
    """
    if value not in NAMED or Path(value).exists():
        return value
    folder = cache_dir() / value
    if not (folder / "model.safetensors").is_file():
        raise InputError(f"checkpoint {value!r} is not downloaded yet: run 'motionprop download {value}' "
                         f"(it would be cached in {folder})")
    return str(folder)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_original(spec: NamedCheckpoint) -> Path:
    """The original file from the Hub (or its local cache); ``HF_HUB_OFFLINE=1`` means the cache only."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise InputError("downloading needs huggingface_hub: pip install 'motionprop[download]'") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        path = hf_hub_download(spec.repo_id, spec.filename, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                               local_files_only=offline)
    except Exception as exc:  # network, missing file, offline cache miss: one line for the user
        raise CheckpointError(f"cannot get {spec.filename} from {spec.repo_id}"
                              f"{' (HF_HUB_OFFLINE is set: local cache only)' if offline else ''}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return Path(path)


def verify(path: Path, spec: NamedCheckpoint, allow_unverified: bool = False,
           say: Callable[[str], None] = print) -> str:
    """Check size and sha256 of the downloaded file; a mismatch is an error unless ``allow_unverified``."""
    size = path.stat().st_size
    digest = file_sha256(path)
    if size == spec.size and digest == spec.sha256:
        return digest
    message = (f"{path}: {size} bytes, sha256 {digest}; expected {spec.size} bytes, sha256 {spec.sha256}")
    if not allow_unverified:
        raise CheckpointError(message + " (a corrupt or changed file; --allow-unverified uses it anyway)")
    say(f"warning: unverified checkpoint: {message}")
    return digest


def download(name: str, out: str | os.PathLike | None = None, allow_unverified: bool = False, force: bool = False,
             say: Callable[[str], None] = print) -> Path:
    """Fetch, verify, convert and cache the named checkpoint; returns the motionprop checkpoint folder."""
    from .checkpoint import convert_original

    spec = _spec(name)
    target = Path(out) if out is not None else cache_dir() / name
    if (target / "model.safetensors").is_file() and not force:
        say(f"{name}: already converted in {target}")
        return target
    if target.exists() and not force:
        raise InputError(f"{target} exists but holds no model.safetensors; remove it or use --force")
    original = fetch_original(spec)
    verify(original, spec, allow_unverified, say)
    convert_original(original, spec.config, target, overwrite=force or target.exists())
    say(f"{name}: {spec.description}\nconverted to {target}")
    return target
