"""Evaluation: clip- and video-level metrics of a model over a loader (``evaluate``).

Batches are dicts: ``batch["video"]`` float ``(B, C, T, H, W)`` or ``(B, V, C, T, H, W)`` (V views
of each video), ``batch["label"]`` long ``(B,)``, optional ``batch["path"]``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vidlab.train.metrics import aggregate_views, confusion_matrix, per_class_accuracy, topk_accuracy
from vidlab.utils import get_device

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

__all__ = ["AMP_DTYPES", "evaluate", "video_metrics"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    device: torch.device | str,
    num_classes: int,
    amp: bool = False,
    amp_dtype: str = "bfloat16",
    progress: bool = True,
) -> dict[str, Any]:
    """Clip- and video-level metrics over ``loader``.

    Batches hold ``video`` ``(B, C, T, H, W)`` or ``(B, V, C, T, H, W)`` (V views per video).
    Clip level treats each view as its own sample; video level averages the softmax over the
    V views (:func:`aggregate_views`). Returns::

        {"loss": mean clip cross entropy, "clip_top1", "clip_top5", "video_top1", "video_top5",
         "top1", "top5" (= video level), "num_videos", "num_clips",
         "confusion_matrix": (K, K) int64 (video level), "per_class_accuracy": (K,) float,
         "predictions": {"path": [str], "label": (N,), "pred": (N,), "prob": (N, K)}}
    """
    device = get_device(device) if isinstance(device, str) else device
    model.eval()
    dtype = AMP_DTYPES[amp_dtype]
    loss_sum = 0.0
    clip_correct = {1: 0.0, 5: 0.0}
    num_clips = 0
    paths: list[Any] = []
    labels, probs = [], []
    bar = tqdm(loader, desc="eval", disable=not progress, leave=False)
    for batch in bar:
        video = batch["video"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        if video.ndim == 6:
            b, v = video.shape[:2]
            video = video.flatten(0, 1)
        elif video.ndim == 5:
            b, v = video.shape[0], 1
        else:
            raise ValueError(
                f"evaluate: batch['video'] must be (B, C, T, H, W) or (B, V, C, T, H, W), got {tuple(video.shape)}"
            )
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=amp):
            logits = model(video)
        logits = logits.float()
        if logits.ndim != 2 or logits.shape[1] != num_classes:
            raise ValueError(
                f"evaluate: the model returned logits {tuple(logits.shape)}, expected (N, num_classes={num_classes})"
            )
        clip_label = label.repeat_interleave(v)
        loss_sum += nn.functional.cross_entropy(logits, clip_label, reduction="sum").item()
        for k, acc in topk_accuracy(logits, clip_label, ks=(1, 5)).items():
            clip_correct[k] += acc * logits.shape[0]
        num_clips += logits.shape[0]
        probs.append(aggregate_views(logits.view(b, v, num_classes)).cpu())
        labels.append(label.cpu())
        batch_paths = batch.get("path") if isinstance(batch, Mapping) else None
        paths.extend(list(batch_paths) if batch_paths is not None else [None] * b)
    bar.close()

    if num_clips == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return video_metrics(torch.cat(probs), torch.cat(labels), paths, num_classes=num_classes, loss_sum=loss_sum,
                         clip_correct=clip_correct, num_clips=num_clips)


def video_metrics(prob: torch.Tensor, target: torch.Tensor, paths: list[Any], *, num_classes: int, loss_sum: float,
                  clip_correct: Mapping[int, float], num_clips: int) -> dict[str, Any]:
    """The :func:`evaluate` dict from video-level probabilities ``prob`` ``(N, K)``, labels ``(N,)``
    and clip-level sums (cross-entropy ``loss_sum``, ``clip_correct`` top-1 / top-5 counts over
    ``num_clips`` clips). Shared with sharded evaluation, which sums those counts over processes."""
    pred = prob.argmax(dim=1)
    video_acc = topk_accuracy(prob, target, ks=(1, 5))
    cm = confusion_matrix(pred, target, num_classes)
    return {
        "loss": loss_sum / num_clips,
        "clip_top1": clip_correct[1] / num_clips,
        "clip_top5": clip_correct[5] / num_clips,
        "video_top1": video_acc[1],
        "video_top5": video_acc[5],
        "top1": video_acc[1],
        "top5": video_acc[5],
        "num_videos": int(target.shape[0]),
        "num_clips": num_clips,
        "confusion_matrix": cm,
        "per_class_accuracy": per_class_accuracy(cm),
        "predictions": {"path": paths, "label": target, "pred": pred, "prob": prob},
    }
