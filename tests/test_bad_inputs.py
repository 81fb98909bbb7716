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
    (root / "empty.png").write_bytes(b"")
    (root / "huge.png").write_bytes(_png_header(50000, 50000))
    cv2.imwrite(str(root / "thin.png"), np.zeros((4, 2000, 3), np.uint8))
    (root / "list.txt").write_text("a.jpg b.jpg c.flo\n")
    (root / "text.pth.tar").write_text("not a checkpoint, just text\n")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    clip = root / "clip"  # a folder of frames: an input of 'prepare'
    clip.mkdir()
    for index in range(3):
        cv2.imwrite(str(clip / f"{index}.png"), np.random.default_rng(index).integers(0, 256, (48, 64, 3), np.uint8))
    return {"root": root, "ckpt": ckpt, "weights": ckpt / "model.safetensors", "image": image,
            "experiment": experiment, "original": original, "encoder": encoder, "guidance": guidance}


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


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
SYNTH = ["synth", "--num-pairs", "2", "--size", "32x32"]
PREPARE = ["prepare", "{root}/clip", "--short-size", "32"]
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
    "propagate --out-vis under a file": (PROPAGATE + ["--out-vis", "{image}/vis.png"], ("--out-vis", "is a file")),
    "propagate --out-flow onto a device": (PROPAGATE + ["--out-flow", "/dev/full"], ("--out-flow", "/dev/full")),
    # one line instead of a traceback (item 10) and arguments out of range (items 9, 13)
    "propagate an empty image file": (["propagate", "--checkpoint", "{ckpt}", "--image", "{root}/empty.png",
                                       "--arrow", "1,1,1,1", "--out-vis", "{root}/v.png"], ("empty", "empty.png")),
    "propagate a folder as --image": (["propagate", "--checkpoint", "{ckpt}", "--image", "{root}",
                                       "--arrow", "1,1,1,1", "--out-vis", "{root}/v.png"], ("{root}", "folder")),
    "propagate a huge arrow": (["propagate", "--checkpoint", "{ckpt}", "--image", "{image}", "--arrow",
                                "10,10,1e38,1", "--out-vis", "{root}/v.png"], ("arrow 10,10,1e+38,1", "range")),
    "propagate a PNG declaring 50000x50000": (["propagate", "--checkpoint", "{ckpt}", "--image", "{root}/huge.png",
                                               "--arrow", "1,1,1,1", "--out-vis", "{root}/v.png"],
                                              ("huge.png", "MOTIONPROP_MAX_IMAGE_PIXELS")),
    "propagate a 2000x4 image": (["propagate", "--checkpoint", "{ckpt}", "--image", "{root}/thin.png",
                                  "--arrow", "1,1,1,1", "--out-vis", "{root}/v.png"], ("2000x4", "aspect ratio")),
    "propagate --max-flow nan": (PROPAGATE + ["--out-vis", "{root}/v.png", "--max-flow", "nan"], ("--max-flow",)),
    "propagate a guidance file nested 100k deep": (
        PROPAGATE + ["--guidance", "{root}/deep.json", "--out-vis", "{root}/v.png"], ("deep.json", "nested")),
    "animate --fps nan": (["animate", "--checkpoint", "{ckpt}", "--image", "{image}", "--arrow", "10,10,3,1",
                           "--out", "{root}/a.gif", "--fps", "nan"], ("--fps",)),
    "animate --fps inf": (["animate", "--checkpoint", "{ckpt}", "--image", "{image}", "--arrow", "10,10,3,1",
                           "--out", "{root}/a.gif", "--fps", "inf"], ("--fps",)),
    "annotate --zoom 1": (ANNOTATE + ["--out", "{root}/m.png", "--zoom", "1"], ("--zoom",)),
    "annotate --zoom nan": (ANNOTATE + ["--out", "{root}/m.png", "--zoom", "nan"], ("--zoom",)),
    "annotate --velocity nan": (ANNOTATE + ["--out", "{root}/m.png", "--velocity", "nan"], ("--velocity",)),
    "convert a text file as .pth.tar": (["convert", "{root}/text.pth.tar", "--config", "resnet50_yfcc_voc_16gpu_42k",
                                         "--out", "{root}/converted"], ("text.pth.tar", "not a readable")),
    "train data.short_size=0": (["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                                 "data.short_size=0"], ("data.short_size",)),
    "train train.lr=-1": (["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                           "train.lr=-1"], ("train.lr",)),
    "train data.mean=[1,2]": (["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                               "data.mean=[1,2]"], ("data.mean",)),
    "train --device bogus": (["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                              "--device", "bogus", "data.train_source=[{root}/list.txt]"], ("--device", "bogus")),
    "train --time-limit 0": (["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                              "--time-limit", "0"], ("--time-limit",)),
    "train --time-limit 0h": (["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                               "--time-limit", "0h"], ("--time-limit",)),
    "evaluate --device bogus": (["evaluate", "{ckpt}", "{root}/list.txt", "--device", "bogus"], ("--device",)),
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
    # the data commands and quickstart: bad folders, sizes, counts, shards and limits (item 13)
    "synth --out a file": (SYNTH + ["--out", "{image}"], ("{image}", "not a folder")),
    "synth --out under a file": (SYNTH + ["--out", "{image}/set"], ("{image}",)),
    "synth --size 10x10": (SYNTH + ["--out", "{root}/set", "--size", "10x10"], ("--size", "32x32")),
    "synth --size axb": (SYNTH + ["--out", "{root}/set", "--size", "axb"], ("--size", "axb")),
    "synth --size 0x0": (SYNTH + ["--out", "{root}/set", "--size", "0x0"], ("--size",)),
    "synth --num-pairs -3": (SYNTH + ["--out", "{root}/set", "--num-pairs", "-3"], ("--num-pairs", "-3")),
    "synth --num-pairs 0": (SYNTH + ["--out", "{root}/set", "--num-pairs", "0"], ("--num-pairs",)),
    "synth --frames-per-clip 1": (SYNTH + ["--out", "{root}/set", "--frames-per-clip", "1"], ("--frames-per-clip",)),
    "synth --val-fraction nan": (SYNTH + ["--out", "{root}/set", "--val-fraction", "nan"], ("--val-fraction",)),
    "synth --val-fraction 1": (SYNTH + ["--out", "{root}/set", "--val-fraction", "1"], ("--val-fraction",)),
    "synth --objects 5,2": (SYNTH + ["--out", "{root}/set", "--objects", "5,2"], ("--objects", "5,2")),
    "synth --objects -1": (SYNTH + ["--out", "{root}/set", "--objects", "-1"], ("--objects", "-1")),
    "synth --max-flow nan": (SYNTH + ["--out", "{root}/set", "--max-flow", "nan"], ("--max-flow",)),
    "synth --max-flow inf": (SYNTH + ["--out", "{root}/set", "--max-flow", "inf"], ("--max-flow",)),
    "synth --flow-format exr": (SYNTH + ["--out", "{root}/set", "--flow-format", "exr"], ("--flow-format", "exr")),
    "synth --seed -1": (SYNTH + ["--out", "{root}/set", "--seed", "-1"], ("--seed",)),
    "synth --list-prefix with a space": (SYNTH + ["--out", "{root}/set", "--list-prefix", "a b"], ("whitespace",)),
    "synth into a folder of other files": (SYNTH + ["--out", "{experiment}"], ("{experiment}", "not empty")),
    "prepare a missing input": (["prepare", "{root}/nope", "--out", "{root}/set"], ("{root}/nope", "not found")),
    "prepare a folder without clips": (["prepare", "{experiment}", "--out", "{root}/set"], ("{experiment}",)),
    "prepare --out a file": (PREPARE + ["--out", "{image}"], ("{image}", "not a folder")),
    "prepare --out the input folder": (PREPARE + ["--out", "{root}/clip"], ("{root}/clip",)),
    "prepare --shard 3/2": (PREPARE + ["--out", "{root}/set", "--shard", "3/2"], ("--shard", "3/2")),
    "prepare --shard x/2": (PREPARE + ["--out", "{root}/set", "--shard", "x/2"], ("--shard", "x/2")),
    "prepare --shard 0/0": (PREPARE + ["--out", "{root}/set", "--shard", "0/0"], ("--shard", "0/0")),
    "prepare --short-size 0": (PREPARE + ["--out", "{root}/set", "--short-size", "0"], ("--short-size",)),
    "prepare --long-size 1e9": (["prepare", "{root}/clip", "--out", "{root}/set", "--long-size", "1e9"],
                                ("--long-size", "1e9")),
    "prepare --gap 0": (PREPARE + ["--out", "{root}/set", "--gap", "0"], ("--gap", "0")),
    "prepare --stride -1": (PREPARE + ["--out", "{root}/set", "--stride", "-1"], ("--stride", "-1")),
    "prepare --max-pairs 0": (PREPARE + ["--out", "{root}/set", "--max-pairs", "0"], ("--max-pairs", "0")),
    "prepare --cut-threshold nan": (PREPARE + ["--out", "{root}/set", "--cut-threshold", "nan"],
                                    ("--cut-threshold",)),
    "prepare --min-motion -1": (PREPARE + ["--out", "{root}/set", "--min-motion", "-1"], ("--min-motion",)),
    "prepare --min-motion nan": (PREPARE + ["--out", "{root}/set", "--min-motion", "nan"], ("--min-motion",)),
    "prepare --min-motion inf": (PREPARE + ["--out", "{root}/set", "--min-motion", "inf"], ("--min-motion",)),
    "prepare --motion-percentile 101": (PREPARE + ["--out", "{root}/set", "--motion-percentile", "101"],
                                        ("--motion-percentile",)),
    "prepare --val-fraction nan": (PREPARE + ["--out", "{root}/set", "--val-fraction", "nan"], ("--val-fraction",)),
    "prepare --workers 0": (PREPARE + ["--out", "{root}/set", "--workers", "0"], ("--workers", "0")),
    "prepare --estimator bogus": (PREPARE + ["--out", "{root}/set", "--estimator", "bogus"], ("bogus",)),
    "prepare --dis-preset bogus": (PREPARE + ["--out", "{root}/set", "--dis-preset", "bogus"], ("bogus",)),
    "prepare --flow-format exr": (PREPARE + ["--out", "{root}/set", "--flow-format", "exr"], ("--flow-format",)),
    "prepare --lists-only without a data set": (PREPARE + ["--out", "{root}/set", "--lists-only"],
                                                ("{root}/set", "prepare.json")),
    "samples an unknown name": (["samples", "bogus", "--out", "{root}/s"], ("bogus",)),
    "samples a name without --out": (["samples", "motorcycle"], ("--out",)),
    "samples --out a file": (["samples", "motorcycle", "--out", "{image}"], ("{image}", "not a folder")),
    "samples --flow-format jpg for the stereo pair": (["samples", "motorcycle", "--out", "{root}/s",
                                                       "--flow-format", "jpg"], ("jpg",)),
    "samples --flow-format exr": (["samples", "motorcycle", "--out", "{root}/s", "--flow-format", "exr"],
                                  ("--flow-format", "exr")),
    "quickstart --out a file": (["quickstart", "--out", "{image}"], ("{image}",)),
    "quickstart --out under a file": (["quickstart", "--out", "{image}/qs"], ("{image}",)),
    "quickstart --time-limit 0": (["quickstart", "--out", "{root}/qs", "--time-limit", "0"], ("--time-limit",)),
    "quickstart --time-limit 0h0m": (["quickstart", "--out", "{root}/qs", "--time-limit", "0h0m"], ("--time-limit",)),
    # text that is no duration (nan, -5, 80x) stops in argparse, naming --time-limit: test_train
    "quickstart a bad override": (["quickstart", "--out", "{root}/qs", "train.lr=-1"], ("train.lr",)),
    "quickstart an unknown override": (["quickstart", "--out", "{root}/qs", "train.bogus=1"], ("train", "bogus")),
    "quickstart an override without =": (["quickstart", "--out", "{root}/qs", "train.lr"], ("train.lr",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, files, capsys):
    argv, needles = CASES[case]
    run_bad(argv, needles, files, capsys)


NO_CUDA_CASES = {
    "propagate --device cuda": PROPAGATE + ["--out-vis", "{root}/v.png", "--device", "cuda"],
    "train --device cuda:1": ["train", "--config", "resnet50_yfcc_voc_16gpu_42k", "--out", "{root}/run",
                              "--device", "cuda:1", "data.train_source=[{root}/list.txt]"],
    "evaluate --device cuda": ["evaluate", "{ckpt}", "{root}/list.txt", "--device", "cuda"],
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
@pytest.mark.parametrize("case", list(NO_CUDA_CASES))
def test_cuda_asked_for_without_cuda_is_one_message_before_any_work(case, files, capsys):
    run_bad(NO_CUDA_CASES[case], ("--device cuda", "no CUDA"), files, capsys)


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


def test_kitti_png_refuses_flow_beyond_its_range_and_writes_nothing(tmp_path):
    from motionprop.data.flow_io import read_flow_with_valid, write_flow
    from motionprop.errors import FlowFileError

    flow = np.zeros((4, 5, 2), np.float32)
    flow[1, 2] = (600.0, -3.0)
    with pytest.raises(FlowFileError, match="does not fit a KITTI PNG"):
        write_flow(tmp_path / "f.png", flow)
    assert list(tmp_path.iterdir()) == []
    flow[1, 2] = (511.0, -512.0)  # the edges of the range still round-trip
    write_flow(tmp_path / "f.png", flow)
    back, valid = read_flow_with_valid(tmp_path / "f.png")
    assert valid.all() and np.array_equal(back, flow)


def test_load_image_converts_uint16_and_refuses_float_0_to_1():
    from motionprop.apps.propagate import load_image
    from motionprop.errors import InputError

    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), np.uint8)
    assert np.array_equal(load_image(rgb.astype(np.uint16) * 257), rgb)
    assert np.array_equal(load_image(rgb.astype(np.float64)), rgb)
    with pytest.raises(InputError, match="0..1"):
        load_image(rgb / 255.0)
    with pytest.raises(InputError, match="non-finite"):
        load_image(np.full((2, 2, 3), np.nan))


@pytest.mark.parametrize("command", [["presets", "--json"], ["samples"]])
@pytest.mark.parametrize("read_lines", [0, 1])
def test_a_closed_pipe_ends_quietly(command, read_lines):
    """'motionprop presets --json | head -1': no traceback, no "Exception ignored" at exit; status 0 or 141.

    Without PYTHONUNBUFFERED (as a user's shell has it) stdout is block-buffered,
    so the write that meets the closed pipe is often the interpreter's final flush.
    """
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "motionprop", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    for _ in range(read_lines):  # as 'head -1' does: one line, then it exits
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert err == "", err
    assert code == 141 if read_lines == 0 else code in (0, 141)
