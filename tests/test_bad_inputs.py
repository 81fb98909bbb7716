"""Every command's bad inputs: exit code 2, one line on stderr naming the file or argument, no traceback,
inputs unchanged (checksums before and after) and nothing written, not even a temporary file.

Each case is ``(argv, words the error line must contain)``; ``{name}`` in an
argument is replaced by the path of the fixture file ``name`` (see
:func:`files`). A case runs ``motionprop.cli.main`` in this process: an
exception other than the one-line error fails the test with its traceback.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import motionprop
from motionprop.apps.guidance_file import Guidance, write_guidance
from motionprop.cli import main


def _tiny_config() -> motionprop.Config:
    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=32, nbins=15,
                                                         fmax=20.0))
    cfg.data.crop_size = (64, 64)
    cfg.data.short_size = 64
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny checkpoint (motionprop's and the original's format), images, and folders that hold inputs."""
    from motionprop.models import create_model

    root = tmp_path_factory.mktemp("inputs")
    model = create_model(_tiny_config()).eval()
    ckpt = motionprop.save_model(root / "ckpt", model)
    image = root / "image.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
    experiment = root / "experiment"  # the original release's layout: config.yaml beside the checkpoint
    experiment.mkdir()
    original = experiment / "ckpt_iter_10.pth.tar"
    torch.save({"step": 10, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, original)
    (experiment / "config.yaml").write_text(model.config.to_yaml())
    (experiment / "README.txt").write_text("notes of the experiment\n")
    encoder = root / "encoder.safetensors"
    encoder.write_bytes(b"an earlier export")
    guidance = root / "guidance.json"
    write_guidance(guidance, Guidance([[5, 5, 2, 0]]), (64, 48))
    return {"root": root, "ckpt": ckpt, "weights": ckpt / "model.safetensors", "image": image,
            "experiment": experiment, "original": original, "encoder": encoder, "guidance": guidance}


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _expand(argv: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]


def run_bad(argv: list[str], needles: tuple[str, ...], files: dict[str, Path], capsys) -> str:
    """Run a bad command; assert exit 2, one stderr line holding ``needles``, and no file changed or added."""
    root = files["root"]
    before = _checksums(root)
    capsys.readouterr()
    code = main(_expand(argv, files))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle.format(**{k: str(v) for k, v in files.items()}) in lines[0], lines[0]
    assert _checksums(root) == before, "a bad command changed or added files"
    return lines[0]


PROPAGATE = ["propagate", "--checkpoint", "{ckpt}", "--image", "{image}", "--arrow", "10,10,3,1"]
ANNOTATE = ["annotate", "--checkpoint", "{ckpt}", "--image", "{image}", "--positive", "10,10"]

CASES = {
    # outputs that are inputs, or the same file twice (issue 13, item 2)
    "propagate --out-vis onto the image": (PROPAGATE + ["--out-vis", "{image}"], ("--out-vis", "{image}")),
    "propagate --out-confidence onto the image": (PROPAGATE + ["--out-confidence", "{image}"],
                                                 ("--out-confidence", "input")),
    "propagate --out-flow and --out-vis the same file": (
        PROPAGATE + ["--out-flow", "{root}/same.png", "--out-vis", "{root}/same.png"], ("--out-vis", "--out-flow")),
    "propagate --out-guidance onto --guidance": (
        PROPAGATE + ["--guidance", "{guidance}", "--out-guidance", "{guidance}"], ("--out-guidance", "input")),
    "annotate --out onto the image": (ANNOTATE + ["--out", "{image}"], ("--out", "{image}")),
    "annotate --overlay onto --out": (ANNOTATE + ["--out", "{root}/m.png", "--overlay", "{root}/m.png"],
                                      ("--overlay", "--out")),
    "animate --out twice": (["animate", "--checkpoint", "{ckpt}", "--image", "{image}", "--arrow", "10,10,3,1",
                             "--out", "{root}/a.gif", "--out", "{root}/a.gif"], ("--out", "a.gif")),
    # export-encoder onto its checkpoint, or over a file without --force (item 3)
    "export-encoder into its own checkpoint": (
        ["export-encoder", "{ckpt}", "--out", "{ckpt}/model.safetensors"], ("model.safetensors", "input")),
    "export-encoder over an existing file": (["export-encoder", "{ckpt}", "--out", "{encoder}"],
                                             ("{encoder}", "--force")),
    # convert --force into a folder holding its source (item 4)
    "convert --force into the source's folder": (
        ["convert", "{original}", "--out", "{experiment}", "--force"], ("{experiment}", "source")),
    "convert --force a checkpoint onto itself": (["convert", "{ckpt}", "--out", "{ckpt}", "--force"],
                                                 ("{ckpt}", "source")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, files, capsys):
    argv, needles = CASES[case]
    run_bad(argv, needles, files, capsys)


def test_export_encoder_force_replaces_an_output_that_is_not_an_input(files, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "encoder.safetensors"
    out.write_bytes(b"old")
    assert main(["export-encoder", str(files["ckpt"]), "--out", str(out), "--force"]) == 0
    assert "conv1.weight" in load_file(out)


def test_convert_force_replaces_a_folder_that_holds_no_input(files, tmp_path, capsys):
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "stale.txt").write_text("from an earlier conversion")
    assert main(["convert", str(files["original"]), "--out", str(folder), "--force"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # no temporaries left beside it
    motionprop.load_model(folder)
