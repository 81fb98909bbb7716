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


def original_checkpoint(net: torch.nn.Module, path: str | Path, step: int = 42000) -> Path:
    """Save ``net`` exactly as the original trainer did: 'module.' keys, step and optimizer state."""
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    optim = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    torch.save({"step": step, "state_dict": state, "optimizer": optim.state_dict()}, str(path))
    return Path(path)


def dump_state_layout(repo: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the original checkpoints' key names and shapes (one JSON per architecture) for the tests."""
    import json

    written = []
    for preset in ("alexnet_yfcc_voc_16gpu_70k", "resnet50_yfcc_voc_16gpu_42k", "resnet50_vip+mpii_liteflow"):
        net = build_original(repo, preset)
        layout = [[f"module.{k}", list(v.shape)] for k, v in net.state_dict().items()]
        path = Path(out_dir) / f"{preset}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[\n" + ",\n".join(json.dumps(item) for item in layout) + "\n]\n")
        written.append(path)
    return written


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Dump the original checkpoints' key layout for tests/data.")
    parser.add_argument("--original-repo", required=True)
    parser.add_argument("--out", default="tests/data/original_keys")
    args = parser.parse_args()
    for p in dump_state_layout(args.original_repo, args.out):
        print("wrote", p)
