"""Atomic writes and the package's import cost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

import motionprop.fileio
from motionprop.errors import InputError
from motionprop.fileio import atomic_dir, atomic_path


def test_atomic_path_renames_on_success_with_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".txt" and tmp != target
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_appears_whole(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("x")
            raise KeyboardInterrupt
    assert not target.exists() and not list(tmp_path.iterdir())
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("x")
    assert (target / "a").read_text() == "x"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask


def test_import_motionprop_does_not_load_torch():
    code = "import sys, motionprop; motionprop.get_preset('resnet50_yfcc_voc_16gpu_42k'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_atomic_dir_replace_keeps_the_old_folder_until_the_new_one_is_whole(tmp_path):
    from motionprop.fileio import atomic_dir

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, replace=True) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("writer failed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def dead_pid() -> int:
    """The PID of a process that has finished (and been reaped): no process has it now."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_names_hold_the_writer_and_are_recognised(tmp_path):
    from motionprop.fileio import temp_prefix

    with atomic_path(tmp_path / "out.png") as tmp:
        assert tmp.name.startswith(temp_prefix("out.png")) and tmp.suffix == ".png"
        assert f".tmp{os.getpid()}-" in tmp.name
    with atomic_dir(tmp_path / "ckpt") as tmp:
        assert tmp.name.startswith(temp_prefix("ckpt"))


def test_remove_stale_temporaries_keeps_live_writers_and_other_hosts(tmp_path):
    from motionprop.fileio import remove_stale_temporaries, temp_prefix

    dead = dead_pid()
    sub = tmp_path / "frames" / "clip"
    sub.mkdir(parents=True)
    stale = [tmp_path / (temp_prefix("a.txt", pid=dead) + "abcd1234.txt"),
             sub / (temp_prefix("0.jpg", pid=dead) + "x_y12345.jpg")]
    stale_dir = tmp_path / (temp_prefix("iter_1", pid=dead) + "zzzzzzzz")
    live = tmp_path / (temp_prefix("b.txt") + "abcd1234.txt")  # this very process: alive
    other_host = tmp_path / f".c.txt.tmp{dead}-00000000-new-abcd1234.txt"
    unrelated = [tmp_path / ".hidden", tmp_path / ".d.txt.abcd1234.txt", tmp_path / "a.txt"]
    for path in [*stale, live, other_host, *unrelated]:
        path.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_text("half")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([stale[0], stale_dir])  # not recursive
    assert stale[1].exists()
    assert remove_stale_temporaries(tmp_path, recursive=True) == [stale[1]]
    assert all(p.exists() for p in [live, other_host, *unrelated])


def test_a_stale_old_folder_whose_target_is_missing_is_put_back(tmp_path):
    """Killed between the two renames of atomic_dir(replace=True): the moved-aside folder is the only copy."""
    from motionprop.fileio import remove_stale_temporaries, temp_prefix

    dead = dead_pid()
    old = tmp_path / (temp_prefix("out", "old", pid=dead) + "abcdefgh")
    old.mkdir()
    (old / "weights").write_text("the complete old version")
    new = tmp_path / (temp_prefix("out", pid=dead) + "hgfedcba")
    new.mkdir()
    assert remove_stale_temporaries(tmp_path) == [new]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "weights").read_text() == "the complete old version"


def test_save_model_puts_back_a_folder_a_killed_replacement_left_aside(tmp_path):
    """convert --force killed between the renames: the next save_model finds the old checkpoint in place."""
    import motionprop
    from motionprop.fileio import temp_prefix
    from motionprop.models import create_model

    cfg = motionprop.Config(model=motionprop.ModelConfig(image_encoder="resnet18", img_enc_dim=16, nbins=5))
    model = create_model(cfg)
    motionprop.save_model(tmp_path / "ckpt", model)
    dead = dead_pid()
    os.replace(tmp_path / "ckpt", tmp_path / (temp_prefix("ckpt", "old", pid=dead) + "abcdefgh"))
    (tmp_path / (temp_prefix("ckpt", pid=dead) + "hgfedcba")).mkdir()  # the new one, half written
    (tmp_path / (temp_prefix("other", pid=dead) + "hgfedcba")).mkdir()  # not this target's: left alone
    with pytest.raises(motionprop.CheckpointError, match="already exists"):
        motionprop.save_model(tmp_path / "ckpt", model)
    motionprop.load_model(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt", temp_prefix("other", pid=dead) + "hgfedcba"])


def test_a_write_that_fails_on_a_full_disk_says_so_and_names_the_output(tmp_path, monkeypatch):
    target = tmp_path / "weights.safetensors"
    target.write_text("old")
    monkeypatch.setattr(motionprop.fileio, "free_bytes", lambda path: 5 * 2**20)
    with pytest.raises(OSError) as info:       # a serializer's own words for a short write (torch.save)
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 25880320 vs 25880216")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "5 MB free" in info.value.strerror
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["weights.safetensors"]
    with pytest.raises(OSError) as info:       # a plain ENOSPC without a file name gets the output's
        with atomic_dir(tmp_path / "iter_0000004"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "iter_0000004")
    assert os.listdir(tmp_path) == ["weights.safetensors"]
    with pytest.raises(InputError):            # the user's own errors are never taken for a full disk
        with atomic_path(tmp_path / "x.txt"):
            raise InputError("bad point")


def test_other_write_failures_pass_through_when_the_disk_has_room(tmp_path, monkeypatch):
    monkeypatch.setattr(motionprop.fileio, "free_bytes", lambda path: 10 * 2**30)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        with atomic_path(tmp_path / "a.pt"):
            raise RuntimeError("unexpected pos 1 vs 2")
    with pytest.raises(PermissionError):
        with atomic_dir(tmp_path / "d"):
            raise PermissionError(errno.EACCES, "Permission denied", "x")
