"""Start a training run from a trained image encoder (``train.image_encoder_init``).

The original release's ``pretrained_image_encoder`` fetched ImageNet weights from the internet; here
the weights come from a file the user has: anything ``motionprop transfer`` reads as ENCODER (a
motionprop checkpoint, an ``export-encoder`` file in either format, e.g. a torchvision ResNet's
state dict, a converted original release). Every layer of the run's image encoder up to its CMP
projection must be in the file with the same shape; the projection (``conv5`` of a ResNet,
``conv8`` of an AlexNet) is taken when its shape fits and otherwise keeps its fresh init; layers of
the file the run's encoder lacks (``layer4`` for a ``resnet18_l3`` run) are left out.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, MotionpropError

def init_image_encoder(encoder: nn.Module, path: str | Path, mean: tuple = (), std: tuple = ()) -> str:
    """Load the trained encoder at ``path`` into ``encoder`` (the run's ``model.image_encoder``); a log line.

    ``mean`` / ``std``: the run's input normalization, compared with the file's (a warning in the
    line when they differ). Raises :class:`ConfigError` naming the option when the file cannot be
    read or does not fit.
    """
    from ..checkpoint import _listing
    from ..evaluation.encoders import read_image_encoder

    where = f"train.image_encoder_init {path}"
    if not Path(path).exists():
        raise ConfigError(f"{where}: no such file or folder")
    try:
        module, arch, file_mean, file_std, _ = read_image_encoder(Path(path))
    except MotionpropError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    source = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    own = encoder.state_dict()
    projection_prefix = f"{encoder.PROJECTION}."  # conv5 of a ResNet, conv8 of an AlexNet (whose conv5 is body)
    body = [k for k in own if not k.startswith(projection_prefix) and not k.endswith("num_batches_tracked")]
    missing = [k for k in body if k not in source]
    mismatched = [f"{k} {tuple(source[k].shape)} vs {tuple(own[k].shape)}" for k in body
                  if k in source and source[k].shape != own[k].shape]
    problems = ([f"missing {_listing(missing)}"] if missing else []) + (
        [f"shapes differ: {_listing(mismatched)}"] if mismatched else [])
    if problems:
        raise ConfigError(f"{where}: its {arch} encoder does not fit this run's image encoder ("
                          f"{'; '.join(problems)})")
    projection = [k for k in own if k.startswith(projection_prefix)]
    take_projection = all(k in source and source[k].shape == own[k].shape for k in projection)
    chosen = body + (projection if take_projection else [])
    with torch.no_grad():
        for key in chosen:
            own[key].copy_(source[key])
    left_out = sorted({k.split(".")[0] for k in source if k not in own})
    notes = ["the projection from the file" if take_projection else "a fresh projection"]
    if left_out:
        notes.append(f"left out of the file: {', '.join(left_out)}")
    if (mean and tuple(mean) != tuple(file_mean)) or (std and tuple(std) != tuple(file_std)):
        notes.append(f"warning: the file's encoder saw images normalized with mean {list(file_mean)} std "
                     f"{list(file_std)}, this run uses {list(mean)} {list(std)}")
    return f"image encoder initialized from {path} ({arch}, {len(chosen)} tensors; {'; '.join(notes)})"
