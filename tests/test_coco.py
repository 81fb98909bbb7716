"""COCO RLE (compressed and uncompressed, column-major) and the COCO-style JSON, cross-checked with pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from motionprop.apps.coco import (CocoWriter, counts_to_string, decode_rle, encode_rle, mask_bbox, mask_to_counts,
                                  string_to_counts)
from motionprop.errors import InputError


def random_masks(count: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        if k % 3 == 0:  # long runs: counts above 32 need several 5-bit groups, differences go negative
            yield (np.cumsum(rng.random((h, w)) < 0.03, axis=1) % 2).astype(bool)
        else:
            yield rng.random((h, w)) < rng.random()


def test_known_encodings_from_pycocotools():
    # Values produced by pycocotools.mask.encode on the same masks.
    small = np.array([[0, 1], [1, 1], [0, 0]], bool)
    assert mask_to_counts(small) == [1, 1, 1, 2, 1]  # column-major: 0 | 1 | 0 | 1 1 | 0
    assert encode_rle(small) == {"size": [3, 2], "counts": "11110"}
    box = np.zeros((40, 30), bool)
    box[5:35, 3:20] = True
    box[0, 0] = True
    assert encode_rle(box)["counts"] == "01l3m0^L0000000000000000000000000000000[<"
    assert mask_to_counts(np.ones((2, 2), bool)) == [0, 4]  # starts with an empty run of zeros


def test_round_trips():
    for mask in random_masks():
        compressed, plain = encode_rle(mask), encode_rle(mask, compressed=False)
        assert isinstance(compressed["counts"], str) and isinstance(plain["counts"], list)
        assert sum(plain["counts"]) == mask.size
        assert np.array_equal(decode_rle(compressed), mask)
        assert np.array_equal(decode_rle(plain), mask)
        assert string_to_counts(counts_to_string(plain["counts"])) == plain["counts"]
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": b"6"}), np.zeros((2, 3), bool))
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": b"06"}), np.ones((2, 3), bool))


def test_bad_rles_are_errors():
    with pytest.raises(InputError, match="sum to"):
        decode_rle({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(InputError, match="truncated"):
        decode_rle({"size": [2, 2], "counts": "1o"})  # 'o' = 0x3f: a continuation group, then nothing
    with pytest.raises(InputError, match="size"):
        decode_rle({"counts": "1"})


def test_bbox():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 7:11] = True
    assert mask_bbox(mask) == [7, 2, 4, 3]
    assert mask_bbox(np.zeros((3, 3), bool)) == [0, 0, 0, 0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2's copy keyword
def test_matches_pycocotools():
    coco_mask = pytest.importorskip("pycocotools.mask")
    for mask in random_masks(seed=1):
        reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = encode_rle(mask)
        assert ours["counts"] == reference["counts"].decode("ascii")
        assert ours["size"] == list(reference["size"])
        assert np.array_equal(coco_mask.decode(ours).astype(bool), mask)
        uncompressed = coco_mask.frPyObjects(encode_rle(mask, compressed=False), *mask.shape)
        assert np.array_equal(coco_mask.decode(uncompressed).astype(bool), mask)
        assert list(coco_mask.toBbox(reference)) == mask_bbox(mask)
        assert int(coco_mask.area(reference)) == int(mask.sum())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_file_loads_in_pycocotools(tmp_path):
    writer = CocoWriter()
    masks = list(random_masks(3, seed=2))
    image_ids = [writer.add_image(f"im{k}.jpg", m.shape[1], m.shape[0]) for k, m in enumerate(masks)]
    for image_id, mask, category in zip(image_ids, masks, ["cat", "dog", "cat"]):
        writer.add_mask(image_id, mask, category)
    path = writer.write(tmp_path / "masks.json")
    raw = json.loads(path.read_text())
    assert [c["name"] for c in raw["categories"]] == ["cat", "dog"]
    assert [a["category_id"] for a in raw["annotations"]] == [1, 2, 1]
    coco_api = pytest.importorskip("pycocotools.coco")
    coco = coco_api.COCO(str(path))
    for annotation, mask in zip(coco.loadAnns(coco.getAnnIds()), masks):
        assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
