"""DataLoader throughput against raw PyAV decoding of the same frames (target: >= 0.7x at 2 workers).

    .venv/bin/python benchmarks/data_loading.py [--data DIR] [--preset cpu] [--clips 512]

Prints where a 0-worker loader spends its time (decode, transform, collate: ms per clip,
and the transform on all torch threads for comparison), then one table: clips/s for raw
decoding (one process, no transform) and for the full loader pipeline (decode + augmentation
+ collate) with 0, 1 and 2 workers, over the same items, and each one's ratio to raw
decoding. All figures come from this one run.
"""
from __future__ import annotations

import argparse
import os
import platform

import torch

from vidlab.data.datasets import VideoDataset
from vidlab.data.synthetic import ensure_dataset
from vidlab.data.throughput import measure_decode, measure_loader, measure_stages
from vidlab.data.transforms import train_transform
from vidlab.notebook import default_data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder (default: the synthetic dataset of --preset)")
    ap.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    args = ap.parse_args()

    data = args.data or default_data_dir(args.preset)
    if not args.data:
        ensure_dataset(data, preset={"gpu": "full"}.get(args.preset, args.preset))
    ds = VideoDataset(data, split="train", num_frames=args.num_frames, stride=args.stride,
                      transform=train_transform(size=args.size, hflip=False))
    print(f"# data loading: {data}, split train ({len(ds)} videos), {args.clips} clips of "
          f"{args.num_frames} frames (stride {args.stride}) -> {args.size}x{args.size}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    stages = measure_stages(ds, args.clips, batch_size=args.batch_size)
    print("# 0-worker breakdown, ms per clip: " + ", ".join(f"{k[:-3]} {v:.2f}" for k, v in stages.items()))
    measure_decode(ds, min(args.clips, 32), progress=False)  # warm the page cache and the decoder
    raw = measure_decode(ds, args.clips, progress=False)
    rows = [("raw PyAV decode", raw["clips_per_s"])]
    for w in [int(x) for x in args.workers.split(",")]:
        res = measure_loader(ds, args.clips, batch_size=args.batch_size, num_workers=w, progress=False)
        rows.append((f"DataLoader, {w} workers", res["clips_per_s"]))
    print(f"{'pipeline':<24} {'clips/s':>9} {'frames/s':>9} {'vs raw':>7}")
    for name, rate in rows:
        print(f"{name:<24} {rate:9.1f} {rate * args.num_frames:9.0f} {rate / raw['clips_per_s']:7.2f}")


if __name__ == "__main__":
    main()
