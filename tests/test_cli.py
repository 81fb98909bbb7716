"""The command line: presets listing, help, errors."""

from __future__ import annotations

import subprocess
import sys

import yaml

import motionprop
from motionprop.cli import main
from motionprop.config import config_from_dict


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in motionprop.available_presets():
        assert name in out


def test_preset_yaml_loads_back_to_the_same_config(capsys):
    assert main(["presets", "resnet50_vip+mpii_liteflow"]) == 0
    cfg = config_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert cfg.model == motionprop.get_preset("resnet50_vip+mpii_liteflow").model


def test_unknown_preset_exit_2(capsys):
    assert main(["presets", "nope"]) == 2
    assert "available presets" in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "motionprop", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("presets", "convert", "export-encoder"):
        assert command in result.stdout
