"""Throughput of one training sample: motionprop's ImageFlowDataset against a port of the original's.

The REFERENCE below follows the original ``dataset.py`` step by step (PIL
decoding and bicubic resizing, the 8-bit JPEG flow pair, PIL crop, the
original's flow sampler from ``bench_guidance.py``, normalization with torch);
motionprop's dataset does the same work with OpenCV and the fast sampler. Both
read the same files, at the paper's AlexNet setting (short side 416, crop 384,
grid + watershed, nms 41, at most 150 guidance points), on one core.

    python benchmarks/bench_dataset.py             # makes 24 synthetic 640x360 pairs in a temp folder
    python benchmarks/bench_dataset.py --list data/mine/lists/train.txt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_guidance import reference_flow_sampler, use_one_core  # noqa: E402

from motionprop.config import DataConfig  # noqa: E402
from motionprop.data.dataset import ImageFlowDataset, read_pair_list  # noqa: E402


class ReferenceDataset:
    """REFERENCE: the original ``ImageFlowDataset.__getitem__`` (train phase, no augmentation)."""

    def __init__(self, list_file: Path, cfg: DataConfig, seed: int = 0):
        self.records = read_pair_list(list_file)
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, ...]:
        from PIL import Image, ImageOps

        record = self.records[idx]
        if len(record.flow) == 2:
            fx = np.array(Image.open(record.flow[0])).astype(np.float32) / 255 * 100 - 50
            fy = np.array(Image.open(record.flow[1])).astype(np.float32) / 255 * 100 - 50
            flow = np.concatenate((fx[:, :, None], fy[:, :, None]), axis=2)
        else:
            from motionprop.data.flow_io import read_flow_with_valid

            flow = read_flow_with_valid(record.flow[0])[0]
        with Image.open(record.image1) as im:
            img1 = im.convert("RGB")
        with Image.open(record.image2) as im:
            img2 = im.convert("RGB")
        # resize by the short side (original image_flow_resize)
        import cv2

        w, h = img1.width, img1.height
        short = self.cfg.short_size
        neww, newh = (short, int(short / w * h)) if w < h else (int(short / h * w), short)
        img1 = img1.resize((neww, newh), Image.BICUBIC)
        img2 = img2.resize((neww, newh), Image.BICUBIC)
        flow = cv2.resize(flow.copy(), (neww, newh), interpolation=cv2.INTER_LINEAR) * (newh / h)
        # random crop with zero padding (original image_flow_crop)
        ch, cw = self.cfg.crop_size
        pad_h, pad_w = max(ch - img1.height, 0), max(cw - img1.width, 0)
        if pad_h or pad_w:
            border = (pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2)
            expanded = np.zeros((img1.height + pad_h, img1.width + pad_w, 2), np.float32)
            expanded[pad_h // 2:pad_h // 2 + img1.height, pad_w // 2:pad_w // 2 + img1.width] = flow
            flow = expanded
            img1 = ImageOps.expand(img1, border=border, fill=(0, 0, 0))
            img2 = ImageOps.expand(img2, border=border, fill=(0, 0, 0))
        hoff = int(self.rng.random() * (img1.height - ch))
        woff = int(self.rng.random() * (img1.width - cw))
        img1 = img1.crop((woff, hoff, woff + cw, hoff + ch))
        img2 = img2.crop((woff, hoff, woff + cw, hoff + ch))
        flow = flow[hoff:hoff + ch, woff:woff + cw]
        # to tensors and normalize (torchvision Normalize)
        t1 = (torch.from_numpy(np.array(img1).astype(np.float32).transpose(2, 0, 1)) - self.mean) / self.std
        t2 = (torch.from_numpy(np.array(img2).astype(np.float32).transpose(2, 0, 1)) - self.mean) / self.std
        sparse, mask = reference_flow_sampler(flow, self.cfg.sample_strategy, self.cfg.bg_ratio, self.cfg.nms_ks,
                                              self.cfg.max_num_guide, rng=self.rng)
        return (t1, torch.from_numpy(sparse.transpose(2, 0, 1)),
                torch.from_numpy(mask.transpose(2, 0, 1).astype(np.float32)),
                torch.from_numpy(flow.transpose(2, 0, 1).copy()), t2)


def make_data(root: Path, pairs: int) -> Path:
    from motionprop.data.synth import SynthConfig, generate

    summary = generate(root, SynthConfig(height=360, width=640, num_pairs=pairs, val_fraction=0.0,
                                         flow_format="jpg", frames_per_clip=4), progress=False)
    return Path(summary.train_list)


def time_per_sample(get, n: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per sample over ``n`` samples."""
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            get(i)
        results.append((time.perf_counter() - t0) / n)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", type=Path, help="a list file to read (default: synthetic 640x360 jpg-flow pairs)")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    use_one_core()
    torch.set_num_threads(1)
    cfg = DataConfig(short_size=416, crop_size=(384, 384), bg_ratio=0.00015625, nms_ks=41, max_num_guide=150)
    with tempfile.TemporaryDirectory() as tmp:
        list_file = args.list or make_data(Path(tmp) / "data", args.pairs)
        ours = ImageFlowDataset([list_file], cfg, train=True)
        ref = ReferenceDataset(list_file, cfg)
        n = min(len(ours), args.pairs)
        ref_s = time_per_sample(lambda i: ref[i], n, args.rounds)
        ours_s = time_per_sample(lambda i: ours[(i, 0)], n, args.rounds)
    print(f"{n} samples, short side 416, crop 384, grid+watershed, one core")
    print(f"  original pipeline (port): {ref_s * 1000:7.1f} ms/sample  {1 / ref_s:6.1f} samples/s")
    print(f"  motionprop dataset:       {ours_s * 1000:7.1f} ms/sample  {1 / ours_s:6.1f} samples/s")
    print(f"  speed-up: {ref_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
