"""Loader throughput against raw PyAV decoding of the same frames.

Both measurements walk the same items of a :class:`~vidlab.data.VideoDataset` with the same
sampler; the raw one only decodes (one process, no transform, no batching), the loader one
runs the whole pipeline (decode + transform + collate) in ``num_workers`` processes. The
ratio says how much of the decoder's speed survives the pipeline.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from vidlab.data.datasets import VideoDataset, make_loader
from vidlab.data.io import decode_frames


def _indices(dataset: VideoDataset, num_clips: int) -> list[int]:
    return [i % len(dataset) for i in range(num_clips)]


def measure_decode(dataset: VideoDataset, num_clips: int, *, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Raw decoding: ``decode_frames`` of each item's sampled timestamps, in this process."""
    g = torch.Generator().manual_seed(seed)
    frames = 0
    t0 = time.perf_counter()
    for i in tqdm(_indices(dataset, num_clips), desc="raw decode", disable=not progress, leave=False):
        times = [t for clip in dataset.clip_times(i, g) for t in clip]
        frames += decode_frames(dataset.video_path(i), times).shape[0]
    seconds = time.perf_counter() - t0
    return {"clips": num_clips, "frames": frames, "seconds": seconds, "clips_per_s": num_clips / seconds}


def measure_loader(
    dataset: VideoDataset,
    num_clips: int,
    *,
    batch_size: int = 16,
    num_workers: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The DataLoader pipeline over the same items; the first batch (worker start-up) is not timed."""
    loader = make_loader(dataset, batch_size=batch_size, num_workers=num_workers, seed=seed, indices=_indices(dataset, num_clips))
    clips, t0 = 0, None
    timed = 0
    for batch in tqdm(loader, desc=f"loader ({num_workers} workers)", disable=not progress, leave=False):
        n = batch["video"].shape[0]
        if t0 is None:
            t0 = time.perf_counter()
        else:
            timed += n
        clips += n
    seconds = time.perf_counter() - t0 if t0 is not None else float("nan")
    return {"clips": clips, "timed_clips": timed, "seconds": seconds, "clips_per_s": timed / seconds if timed else float("nan"), "num_workers": num_workers, "batch_size": batch_size}
