"""Labelled clips decoded once: train / val / test clip datasets of one domain (:class:`ClipData`).

:func:`load_clip_data` decodes the splits once into memory (:class:`~vidlab.data.cache.DecodedVideos`)
and wraps them with the usual samplers and transforms: a random clip with augmentation for
training, the centre clip for validation, several evenly spaced clips per test video.
:meth:`ClipData.with_train_budget` keeps a few labelled videos per class (label-efficiency runs).

Layouts: training items ``(C, T, H, W)``; test items ``(V, C, T, H, W)`` (V views).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from vidlab.data.cache import CachedClipDataset, DecodedVideos
from vidlab.data.transforms import eval_transform, train_transform

__all__ = ["ClipData", "load_clip_data", "repeat_dataset"]


@dataclass
class ClipData:
    """Train / val / test clip datasets over decoded videos of one domain."""

    train: CachedClipDataset
    val: CachedClipDataset
    test: CachedClipDataset
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_train_budget(self, per_class: int, *, seed: int = 0, repeat_to: int | None = None) -> "ClipData":
        """The same data with at most ``per_class`` training videos per class (val/test unchanged).

        ``repeat_to`` lists the chosen videos over and over (:func:`repeat_dataset`; each pass
        draws new random clips) until an epoch holds that many items, so a tiny budget still
        gets enough optimizer steps per epoch to be compared fairly with a large one.
        """
        from vidlab.data.datasets import subsample_indices_per_class

        chosen = subsample_indices_per_class(self.train.labels, per_class, seed=seed)
        train = CachedClipDataset(self.train.videos, sampler=self.train.sampler, transform=self.train.transform,
                                  indices=[self.train.indices[j] for j in chosen])
        if repeat_to and len(train):
            train = repeat_dataset(train, repeat_to, seed=seed)
        return ClipData(train, self.val, self.test, self.classes)


def repeat_dataset(dataset: CachedClipDataset, num_clips: int, *, seed: int = 0) -> CachedClipDataset:
    """The same videos listed over and over (shuffled each round) until exactly ``num_clips`` items.

    Every video appears ``num_clips // len(dataset)`` or one more times, so a tiny labelled set
    gives a loader of a chosen length (a fixed number of optimizer steps per run).
    """
    if len(dataset) == 0:
        raise ValueError("repeat_dataset: the dataset is empty")
    if num_clips < 1:
        raise ValueError(f"repeat_dataset: num_clips must be >= 1, got {num_clips}")
    g = torch.Generator().manual_seed(seed)
    rounds = math.ceil(num_clips / len(dataset))
    order = torch.cat([torch.randperm(len(dataset), generator=g) for _ in range(rounds)])[:num_clips]
    indices = [dataset.indices[int(i)] for i in order]
    return CachedClipDataset(dataset.videos, sampler=dataset.sampler, transform=dataset.transform, indices=indices)


def load_clip_data(
    data_dir: str | os.PathLike,
    *,
    splits: Sequence[str] = ("train", "val", "test"),
    num_frames: int = 8,
    stride: int = 2,
    size: int = 32,
    cache_size: int | None = None,
    test_views: int = 3,
    hflip: bool = False,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    color_jitter: float = 0.2,
    workers: int = 2,
    progress: bool = True,
) -> ClipData:
    """Decode ``splits`` (train, val, test names) once and wrap them as clip datasets.

    Training clips: a random clip, random resized crop to ``size`` keeping ``crop_scale`` of
    the area (no flip by default: the synthetic labels are directions), colour jitter of
    strength ``color_jitter`` (0: none; on a 2-core CPU the jitter costs about as much as a
    small model's training step). Validation: the centre clip. Test: ``test_views`` evenly
    spaced clips per video (video-level accuracy averages them).
    Videos are cached with short side ``cache_size`` (default ``size * 5 // 4``).
    """
    cache_size = cache_size or size * 5 // 4
    train_split, val_split, test_split = splits
    decoded = {
        name: DecodedVideos(data_dir, name, size=cache_size, workers=workers, progress=progress, labeled_only=True)
        for name in (train_split, val_split, test_split)
    }
    common = {"num_frames": num_frames, "stride": stride}
    augment = train_transform(size=size, scale=crop_scale, hflip=hflip, color_jitter=color_jitter)
    train = CachedClipDataset(decoded[train_split], sampler="random", transform=augment, **common)
    evaluation = eval_transform(size=size, resize=size)
    val = CachedClipDataset(decoded[val_split], sampler="center", transform=evaluation, **common)
    test = CachedClipDataset(decoded[test_split], sampler="multi", num_clips=test_views, transform=evaluation, **common)
    return ClipData(train, val, test, decoded[train_split].classes)
