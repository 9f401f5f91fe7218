"""One supervised experiment in a few lines: cached clips in, trained model and test metrics out.

The notebooks compare many training runs (fine-tuning methods, label budgets, TSN vs TSM vs
3D, domains). Each run is the same recipe: clips decoded once (:class:`~vidlab.data.clips.ClipData`),
``fit`` on train with validation, then a multi-view test. :func:`train_and_test` is that
recipe, so a notebook cell can say *what* differs between runs.

Layouts: training batches ``(B, C, T, H, W)``; test batches ``(B, V, C, T, H, W)`` (V views).
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

from vidlab.data.cache import cached_loader
from vidlab.data.clips import ClipData
from vidlab.train.engine import History, TrainConfig, evaluate, fit
from vidlab.train.peft import trainable_parameters


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
