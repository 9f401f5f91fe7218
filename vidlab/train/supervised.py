"""One supervised experiment in a few lines: cached clips in, trained model and test metrics out.

The notebooks compare many training runs (fine-tuning methods, label budgets, TSN vs TSM vs
3D, domains). Each run is the same recipe: decode the splits once into memory
(:class:`~vidlab.data.cache.DecodedVideos`), sample clips with the usual samplers and
transforms, ``fit`` on train with validation, then a multi-view test. This module is that
recipe, so a notebook cell can say *what* differs between runs.

Layouts: training batches ``(B, C, T, H, W)``; test batches ``(B, V, C, T, H, W)`` (V views).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from vidlab.data.cache import CachedClipDataset, DecodedVideos, cached_loader
from vidlab.data.transforms import eval_transform, train_transform
from vidlab.train.engine import History, TrainConfig, evaluate, fit
from vidlab.train.peft import trainable_parameters


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


def train_and_test(
    model: nn.Module,
    data: ClipData,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    step_fn: Any = None,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``fit`` on ``data.train`` (validating on ``data.val``), then test on ``data.test``.

    Returns ``history`` (:class:`~vidlab.train.History`), ``test`` (the ``evaluate`` dict:
    ``top1`` video-level, ``clip_top1``, confusion matrix, per-class accuracy, predictions),
    ``test_top1``, ``train_seconds``, ``trainable_params``, ``total_params`` and
    ``peak_memory_mb`` (CUDA only; ``nan`` on CPU).
    """
    device = torch.device(device)
    train_loader = cached_loader(data.train, batch_size=batch_size, shuffle=True, seed=cfg.seed, num_workers=workers, drop_last=len(data.train) > batch_size)
    val_loader = cached_loader(data.val, batch_size=batch_size * 2, num_workers=workers)
    test_loader = cached_loader(data.test, batch_size=batch_size, num_workers=workers)
    trainable, total = trainable_parameters(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    history: History = fit(model, train_loader, val_loader, cfg, device=device, step_fn=step_fn,
                           checkpoint_path=checkpoint_path, progress=progress, num_classes=data.num_classes)
    seconds = time.perf_counter() - t0
    test = evaluate(model, test_loader, device=device, num_classes=data.num_classes, amp=cfg.amp, amp_dtype=cfg.amp_dtype, progress=False)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {
        "history": history,
        "test": test,
        "test_top1": float(test["top1"]),
        "train_seconds": seconds,
        "trainable_params": trainable,
        "total_params": total,
        "peak_memory_mb": peak,
    }
