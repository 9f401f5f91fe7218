"""Notebook 02's measurements of a pretrained encoder: frozen-feature probes and the few-label
fine-tune that compares it with the same architecture trained from scratch.

* :func:`probe_encoder`: kNN and linear-probe top-1 of frozen features (all labelled train videos);
* :func:`fewshot`: fine-tune on a few labelled videos per class with one recipe (AdamW with the
  head at ``fewshot_lr`` and the backbone scaled, optional layer-wise decay, warmup + cosine, label
  smoothing, clipping) for a fixed number of optimizer steps, pretrained or scratch, then test.

Layouts: clips ``(C, T, H, W)``; multi-view test items ``(V, C, T, H, W)``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn

from vidlab.data.cache import CachedClipDataset, cached_loader
from vidlab.data.clips import ClipData, load_clip_data
from vidlab.data.transforms import eval_transform
from vidlab.recipes.pretraining import PretrainSettings, build_encoder
from vidlab.train import TrainConfig, evaluate, fit_steps, param_groups_layer_decay, ssl

__all__ = ["fewshot", "fewshot_finetune", "frozen_features", "labelled_data", "probe_encoder"]


def labelled_data(data_dir: str | os.PathLike, settings: PretrainSettings, *, progress: bool = True) -> ClipData:
    """train / val / test clip datasets at the preset's geometry (decoded once)."""
    return load_clip_data(data_dir, num_frames=settings.num_frames, stride=settings.stride, size=settings.img_size,
                          cache_size=settings.cache_size, test_views=settings.test_views, workers=settings.workers,
                          progress=progress)


def _eval_view(data: ClipData, split: str, settings: PretrainSettings, indices: Sequence[int] | None = None) -> CachedClipDataset:
    base = getattr(data, split)
    views = settings.test_views if split == "test" else 1
    return CachedClipDataset(
        base.videos, num_frames=settings.num_frames, stride=settings.stride,
        sampler="multi" if views > 1 else "center", num_clips=views,
        transform=eval_transform(size=settings.img_size, resize=settings.img_size),
        indices=base.indices if indices is None else indices,
    )


def frozen_features(encoder: nn.Module, data: ClipData, settings: PretrainSettings, *,
                    device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Pooled frozen features (:func:`vidlab.train.ssl.pooled_features`) of every train (centre clip)
    and test (multi-view) video: ``train_x (N, D)``, ``train_y``, ``test_x``, ``test_y``."""
    train = cached_loader(_eval_view(data, "train", settings), batch_size=64)
    test = cached_loader(_eval_view(data, "test", settings), batch_size=32)
    trx, try_ = ssl.extract_features(encoder, train, device)
    tex, tey = ssl.extract_features(encoder, test, device)
    return {"train_x": trx, "train_y": try_, "test_x": tex, "test_y": tey}


def probe_encoder(encoder: nn.Module, data: ClipData, settings: PretrainSettings, *,
                  device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float]:
    """kNN and linear-probe top-1 (in [0, 1]) of frozen features, all labelled train videos."""
    f = frozen_features(encoder, data, settings, device=device)
    knn = ssl.knn_accuracy(f["train_x"], f["train_y"], f["test_x"], f["test_y"], k=settings.knn_k)
    probe = ssl.linear_probe_accuracy(f["train_x"], f["train_y"], f["test_x"], f["test_y"], seed=seed)
    return {"knn_top1": knn, "probe_top1": probe}


def fewshot_finetune(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    cfg: TrainConfig,
    *,
    steps: int,
    num_classes: int,
    backbone_lr_scale: float = 1.0,
    layer_decay: float | None = None,
    freeze_steps: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` (its classifier already sized for ``num_classes``) for ``steps`` optimizer
    steps with :func:`vidlab.train.fit_steps`, then test with :func:`vidlab.train.evaluate`.

    The head (``head`` and ``fc_norm``) trains at ``cfg.lr``, the backbone at
    ``cfg.lr * backbone_lr_scale`` (with ``layer_decay``: timm's layer-wise decay on top, see
    :func:`vidlab.train.param_groups_layer_decay`). With ``freeze_steps > 0`` the first steps
    train the head alone (a linear probe, its own warmup + cosine; ``probe_acc`` is its test
    top-1), then the rest trains everything. Returns ``test_acc`` (video level), ``probe_acc``
    (or None), ``history`` (loss per step), ``skipped_steps``, ``seconds`` and ``model``.
    """
    device = torch.device(device)
    model.to(device)
    start = time.perf_counter()
    history: list[float] = []
    skipped = 0
    probe_acc = None

    def test() -> float:
        return float(evaluate(model, test_loader, device=device, num_classes=num_classes, amp=cfg.amp,
                              amp_dtype=cfg.amp_dtype, progress=False)["top1"])

    if freeze_steps > 0:
        head = [p for name, p in model.named_parameters() if name.startswith(("head.", "fc_norm."))]
        frozen = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
        for p in frozen:
            p.requires_grad_(False)
        try:
            probe_steps = min(freeze_steps, steps)
            probe_cfg = dataclasses.replace(cfg, warmup_steps=max(1, int(round(0.1 * probe_steps))))
            out = fit_steps(model, train_loader, probe_cfg, steps=probe_steps, device=device, progress=progress,
                            desc="few-shot fine-tune (head only)")
        finally:
            for p in frozen:
                p.requires_grad_(True)
        history += out["history"]
        skipped += out["skipped_steps"]
        probe_acc = test()
    if steps > freeze_steps:
        groups = param_groups_layer_decay(model, cfg.weight_decay, lr=cfg.lr, backbone_lr_scale=backbone_lr_scale,
                                          layer_decay=layer_decay)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        out = fit_steps(model, train_loader, cfg, steps=steps - freeze_steps, device=device, optimizer=optimizer,
                        progress=progress, desc="few-shot fine-tune")
        history += out["history"]
        skipped += out["skipped_steps"]
    test_acc = probe_acc if steps <= freeze_steps else test()
    return {"test_acc": test_acc, "probe_acc": probe_acc, "history": history, "skipped_steps": skipped,
            "seconds": time.perf_counter() - start, "model": model}


def fewshot(
    encoder: nn.Module | None,
    data: ClipData,
    settings: PretrainSettings,
    *,
    per_class: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` (``None``: a fresh encoder of the same architecture, from
    scratch) on ``per_class`` labelled videos per class with the preset's few-shot recipe; the
    recipe, the budget, the seed and the batches are identical for both. Returns
    :func:`fewshot_finetune`'s dict (without the model) plus ``per_class`` and ``train_videos``."""
    per_class = per_class or settings.fewshot_per_class
    budget = data.with_train_budget(per_class, seed=seed)
    batch = min(settings.fewshot_batch_size, len(budget.train))
    train_loader = cached_loader(budget.train, batch_size=batch, shuffle=True, seed=seed, drop_last=True)
    test_loader = cached_loader(_eval_view(data, "test", settings), batch_size=32)
    torch.manual_seed(seed)
    if encoder is None:
        model = build_encoder(settings, data.num_classes)
    else:
        model = copy.deepcopy(encoder)
        model.reset_classifier(data.num_classes)
    steps = settings.fewshot_steps
    cfg = TrainConfig(lr=settings.fewshot_lr, weight_decay=0.05, label_smoothing=0.1, clip_grad_norm=1.0,
                      warmup_steps=max(1, int(round(0.1 * (steps - settings.fewshot_freeze_steps)))),
                      amp=settings.amp, amp_dtype=settings.amp_dtype, seed=seed)
    out = fewshot_finetune(model, train_loader, test_loader, cfg, steps=steps, num_classes=data.num_classes,
                           backbone_lr_scale=settings.fewshot_backbone_lr_scale,
                           freeze_steps=settings.fewshot_freeze_steps, device=device, progress=progress)
    out.pop("model", None)
    return {**out, "per_class": per_class, "train_videos": len(budget.train)}
