"""Decode once, train many times: an in-memory cache of decoded (and downsized) videos.

Small-clip experiments on a CPU spend most of their time decoding the same files every
epoch. :class:`DecodedVideos` decodes each video of a split **once** with PyAV (in parallel),
resizes it so its short side is ``size``, and keeps the uint8 frames in memory (optionally
on disk as a weights-only ``.pt`` file, keyed by the manifest's contents).
:class:`CachedClipDataset` then serves clips exactly like :class:`~vidlab.data.VideoDataset`
(same samplers, same transforms, same item dicts) without touching the decoder.

Layouts: ``DecodedVideos.frames[i]`` is ``(T_i, H, W, C)`` uint8; items are dicts with
``video`` ``(C, T, H, W)`` float (or ``(V, C, T, H, W)``), ``label``, ``path``, ``index``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vidlab.data.io import VideoDecodeError, decode_all
from vidlab.data.manifest import ManifestRow, class_names, manifest_path, read_manifest
from vidlab.data.samplers import ClipSampler, make_sampler
from vidlab.data.datasets import Skip, SkipReport, subsample_per_class
from vidlab.data.workers import process_pool
from vidlab.utils import atomic_torch_save, load_checkpoint


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 -> short side ``size`` (antialiased bilinear), same layout."""
    t, h, w, c = frames.shape
    if min(h, w) == size:
        return frames
    scale = size / min(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _decode_one(args: tuple[str, int]) -> tuple[torch.Tensor | None, np.ndarray | None, str]:
    path, size = args
    try:
        frames, pts = decode_all(path)
    except VideoDecodeError as exc:
        return None, None, f"{exc.stage}: {exc.reason}"
    return resize_frames(frames, size), pts, ""


class DecodedVideos:
    """Every video of ``split`` decoded once, short side resized to ``size``, kept in memory.

    Args:
        manifest: ``manifest.csv`` or its folder.
        split: split name(s) to load.
        size: short side after resizing (e.g. 40 for 32-px random crops).
        max_per_class: keep at most this many videos per class (deterministic by ``seed``).
        cache_dir: folder for a ``.pt`` copy of the decoded frames, reused by later runs; a
            relative path is taken inside the dataset folder (default ``.cache``, i.e.
            ``<dataset>/.cache``); ``None``: keep nothing on disk.
        workers: decoding processes.

    Attributes: ``rows`` (manifest rows), ``frames`` (list of ``(T, H, W, C)`` uint8),
    ``pts`` (list of ``(T,)`` float64 seconds), ``labels`` (``(N,)`` long), ``classes``,
    ``report`` (videos that could not be decoded are skipped and listed, never replaced).
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        split: str | Sequence[str],
        *,
        size: int = 40,
        max_per_class: int | None = None,
        labeled_only: bool = False,
        seed: int = 0,
        workers: int = 2,
        cache_dir: str | os.PathLike | None = ".cache",
        progress: bool = True,
    ) -> None:
        self.manifest = manifest_path(manifest)
        self.root = self.manifest.parent
        all_rows = read_manifest(self.manifest)
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in all_rows if r.split in wanted and (r.label >= 0 or not labeled_only)]
        if max_per_class is not None:
            rows = subsample_per_class(rows, max_per_class, seed=seed)
        if not rows:
            raise ValueError(f"{self.manifest}: no rows for split {split!r}")
        self.classes = class_names(all_rows)
        self.size = size
        self.report = SkipReport()
        cache_file = self._cache_file(rows, size, cache_dir)
        if cache_file is not None and cache_file.exists():
            blob = load_checkpoint(cache_file)
            keep = set(blob["paths"])
            self.rows = [r for r in rows if r.path in keep]
            self.frames, self.pts = blob["frames"], [p.numpy() for p in blob["pts"]]
            self.report.seen = len(rows)
            self.report.skipped = [Skip(p, s, r) for p, s, r in blob["skipped"]]
        else:
            self._decode(rows, workers, progress)
            if cache_file is not None:
                atomic_torch_save(
                    {
                        "paths": [r.path for r in self.rows],
                        "frames": self.frames,
                        "pts": [torch.from_numpy(p) for p in self.pts],
                        "skipped": [[s.path, s.stage, s.reason] for s in self.report.skipped],
                    },
                    cache_file,
                )
        self.labels = torch.tensor([r.label for r in self.rows], dtype=torch.long)

    def _cache_file(self, rows: Sequence[ManifestRow], size: int, cache_dir: str | os.PathLike | None) -> Path | None:
        if cache_dir is None:
            return None
        folder = self.root / Path(cache_dir).expanduser()  # an absolute cache_dir replaces the root
        key = hashlib.sha1(repr((size, [(r.path, r.num_frames, r.width, r.height, r.duration) for r in rows])).encode()).hexdigest()[:16]
        stat = self.manifest.stat()
        key += f"-{int(stat.st_mtime)}"
        return folder / f"decoded-{size}px-{key}.pt"

    def _decode(self, rows: Sequence[ManifestRow], workers: int, progress: bool) -> None:
        jobs = [(str(self.root / r.path), self.size) for r in rows]
        if workers > 1:
            with process_pool(workers) as pool:
                results = list(tqdm(pool.map(_decode_one, jobs, chunksize=16), total=len(jobs), desc="decoding into memory", disable=not progress))
        else:
            results = [_decode_one(j) for j in tqdm(jobs, desc="decoding into memory", disable=not progress)]
        self.rows, self.frames, self.pts = [], [], []
        self.report.seen = len(rows)
        for row, (frames, pts, error) in zip(rows, results):
            if frames is None:
                stage, _, reason = error.partition(": ")
                self.report.skipped.append(Skip(str(self.root / row.path), stage, reason))
                continue
            self.rows.append(row)
            self.frames.append(frames)
            self.pts.append(pts)

    def __len__(self) -> int:
        return len(self.rows)

    def nbytes(self) -> int:
        return sum(f.numel() for f in self.frames)


class CachedClipDataset(Dataset):
    """Clips from :class:`DecodedVideos`, sampled and transformed like ``VideoDataset``.

    The sampler's timestamps are mapped to the cached frames by presentation time (the last
    frame shown at or before each timestamp), exactly as the decoder would pick them.
    """

    def __init__(
        self,
        videos: DecodedVideos,
        *,
        num_frames: int = 8,
        stride: int = 1,
        fps: float | None = None,
        sampler: str | ClipSampler = "random",
        num_clips: int = 1,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.videos = videos
        self.indices = list(range(len(videos))) if indices is None else list(indices)
        self.sampler = sampler if isinstance(sampler, ClipSampler) else make_sampler(
            sampler, num_frames=num_frames, stride=stride, fps=fps, num_clips=num_clips
        )
        self.transform = transform
        self.classes = videos.classes

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[int]:
        return [self.videos.rows[i].label for i in self.indices]

    def clip_frames(self, index: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """The raw ``(T, H, W, C)`` uint8 frames of each sampled clip of item ``index``."""
        vid = self.indices[index]
        row = self.videos.rows[vid]
        frames, pts = self.videos.frames[vid], self.videos.pts[vid]
        out = []
        for times in self.sampler(row.duration, row.fps, generator):
            idx = np.searchsorted(pts, times + 1e-6, side="right") - 1
            if times.max() > pts[-1] + 1.5 / row.fps:
                raise VideoDecodeError(self.videos.root / row.path, "decode",
                                       f"clip needs {times.max():.2f} s but the video ends at {pts[-1]:.2f} s")
            out.append(frames[torch.from_numpy(np.clip(idx, 0, len(pts) - 1))])
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        vid = self.indices[index]
        clips = self.clip_frames(index)
        views = [self.transform(c) if self.transform else c.permute(3, 0, 1, 2).float().div(255) for c in clips]
        video = views[0] if len(views) == 1 else torch.cat([v if v.ndim == 5 else v[None] for v in views])
        row = self.videos.rows[vid]
        return {"video": video, "label": row.label, "path": str(self.videos.root / row.path), "index": index}


def cached_loader(
    dataset: CachedClipDataset,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A seeded ``DataLoader`` over cached clips (no decoding, so 0 workers is usually fastest)."""
    from vidlab.utils import seeded_loader

    return seeded_loader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers,
                         drop_last=drop_last)
