"""Build the ORIGINAL release's CMP network from a checkout of its code, for side-by-side checks.

Nothing of the original is shipped here: pass the folder of a checkout of
github.com/XiaohangZhan/conditional-motion-propagation (``--original-repo``).
Its ``models`` package imports cv2, PIL and scipy, which motionprop's test
extras install.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
import yaml

ORIGINAL_EXPERIMENTS = {
    "alexnet_yfcc_voc_16gpu_70k": "experiments/rep_learning/alexnet_yfcc_voc_16gpu_70k/config.yaml",
    "alexnet_yfcc_voc_8gpu_140k": "experiments/rep_learning/alexnet_yfcc_voc_8gpu_140k/config.yaml",
    "alexnet_yfcc+youtube_voc_16gpu_140k": "experiments/rep_learning/alexnet_yfcc+youtube_voc_16gpu_140k/config.yaml",
    "resnet50_yfcc_voc_16gpu_42k": "experiments/rep_learning/resnet50_yfcc_voc_16gpu_42k/config.yaml",
    "resnet50_yfcc_coco_16gpu_42k": "experiments/rep_learning/resnet50_yfcc_coco_16gpu_42k/config.yaml",
    "resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k":
        "experiments/rep_learning/resnet50_yfcc+youtube+vip+mpii_lip_16gpu_70k/config.yaml",
    "resnet50_vip+mpii_liteflow": "experiments/semiauto_annot/resnet50_vip+mpii_liteflow/config.yaml",
}


def import_original(repo: str | Path):
    """The original's top-level ``models`` and ``utils`` modules, imported from ``repo``."""
    repo = str(Path(repo).resolve())
    if not Path(repo, "models", "modules", "cmp.py").is_file():
        raise SystemExit(f"{repo} is not a checkout of the original CMP code (models/modules/cmp.py missing)")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    return importlib.import_module("models"), importlib.import_module("utils")


def original_config(repo: str | Path, preset: str) -> tuple[Path, dict]:
    path = Path(repo) / ORIGINAL_EXPERIMENTS[preset]
    return path, yaml.safe_load(path.read_text())


def build_original(repo: str | Path, preset: str) -> torch.nn.Module:
    """The original CMP network of ``preset``, initialized as the original trainer did."""
    models, utils = import_original(repo)
    _, raw = original_config(repo, preset)
    net = models.modules.CMP(raw["model"]["module"])
    utils.init_weights(net, init_type="xavier")
    return net


def randomize_like_trained(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every weight and BatchNorm statistic a trained-like scale, so outputs are far from zero.

    The original init (Xavier, gain 0.02) makes logits ~1e-10 in eval mode: a
    comparison at that scale would prove nothing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
    return net


def original_checkpoint(net: torch.nn.Module, path: str | Path, step: int = 42000) -> Path:
    """Save ``net`` exactly as the original trainer did: 'module.' keys, step and optimizer state."""
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    optim = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    torch.save({"step": step, "state_dict": state, "optimizer": optim.state_dict()}, str(path))
    return Path(path)
