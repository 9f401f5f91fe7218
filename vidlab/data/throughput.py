"""Loader throughput against raw PyAV decoding of the same frames.

Both measurements walk the same items of a :class:`~vidlab.data.VideoDataset` with the same
sampler; the raw one only decodes (one process, no transform, no batching), the loader one
runs the whole pipeline (decode + transform + collate) in ``num_workers`` processes. The
ratio says how much of the decoder's speed survives the pipeline.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vidlab.data.datasets import VideoDataset, collate_videos, make_loader
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


def measure_stages(dataset: VideoDataset, num_clips: int, *, batch_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Where a 0-worker loader spends its time: milliseconds per clip in decoding, the
    transform and collation, measured stage by stage over the same items in this process.

    Also ``transform_all_threads_ms``: the same transform run on all torch threads (without
    the one-thread guard of :class:`~vidlab.data.transforms.VideoTransform`), when it has one.
    """
    g = torch.Generator().manual_seed(seed)
    indices = _indices(dataset, num_clips)
    decoded = []
    t0 = time.perf_counter()
    for i in indices:
        decoded.append(decode_frames(dataset.video_path(i), np.concatenate(dataset.clip_times(i, g))))
    decode_s = time.perf_counter() - t0
    transform = dataset.transform or (lambda f: f.permute(3, 0, 1, 2).float().div_(255))
    t0 = time.perf_counter()
    items = [{"video": transform(f), "label": 0, "path": "", "index": k} for k, f in enumerate(decoded)]
    transform_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(0, len(items), batch_size):
        collate_videos(items[k:k + batch_size])
    collate_s = time.perf_counter() - t0
    out = {"decode_ms": 1e3 * decode_s / num_clips, "transform_ms": 1e3 * transform_s / num_clips,
           "collate_ms": 1e3 * collate_s / num_clips}
    raw_apply = getattr(dataset.transform, "_apply", None)
    if raw_apply is not None and torch.get_num_threads() > 1:
        t0 = time.perf_counter()
        for f in decoded:
            raw_apply(f)
        out["transform_all_threads_ms"] = 1e3 * (time.perf_counter() - t0) / num_clips
    return out
