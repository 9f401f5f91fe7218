"""Classification metrics: top-k accuracy, confusion matrix, per-class accuracy, view averaging.

Accuracies are fractions in ``[0, 1]`` (not percent).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose target is among the ``k`` highest scores, for each ``k`` in ``ks``.

    ``logits``: ``(N, K)`` scores (logits or probabilities); ``target``: ``(N,)`` class indices.
    A ``k`` larger than ``K`` is clipped to ``K`` (so top-5 with 3 classes is 1.0).
    Returns ``{k: accuracy}``; with ``N == 0`` every accuracy is ``nan``.
    """
    if logits.ndim != 2:
        raise ValueError(f"topk_accuracy: logits must be (N, K), got shape {tuple(logits.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"topk_accuracy: target must be (N,) with N={logits.shape[0]}, got shape {tuple(target.shape)}"
        )
    n, num_classes = logits.shape
    if n == 0:
        return {int(k): float("nan") for k in ks}
    max_k = min(max(ks), num_classes)
    top = logits.topk(max_k, dim=1).indices  # (N, max_k)
    hits = top.eq(target.to(top.device).view(-1, 1))  # (N, max_k)
    return {int(k): hits[:, : min(k, num_classes)].any(dim=1).float().mean().item() for k in ks}


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class.

    ``preds`` and ``target``: ``(N,)`` class indices in ``[0, num_classes)``.
    """
    preds = preds.reshape(-1).long().cpu()
    target = target.reshape(-1).long().cpu()
    if preds.shape != target.shape:
        raise ValueError(f"confusion_matrix: preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
    for name, values in (("preds", preds), ("target", target)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"confusion_matrix: {name} has values outside [0, {num_classes}): "
                f"min {values.min().item()}, max {values.max().item()}"
            )
    flat = target * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Recall of each class from a confusion matrix ``(K, K)`` -> ``(K,)`` float; ``nan`` for unseen classes."""
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"per_class_accuracy: cm must be square (K, K), got {tuple(cm.shape)}")
    cm = cm.double()
    support = cm.sum(dim=1)
    correct = cm.diagonal()
    acc = torch.full_like(support, float("nan"))
    seen = support > 0
    acc[seen] = correct[seen] / support[seen]
    return acc.float()


def aggregate_views(logits: torch.Tensor) -> torch.Tensor:
    """Video-level scores from per-view logits: mean of the softmax over views.

    ``logits``: ``(B, V, K)`` -> probabilities ``(B, K)`` (rows sum to 1). A ``(B, K)`` input is
    treated as one view per video.
    """
    if logits.ndim == 2:
        logits = logits.unsqueeze(1)
    if logits.ndim != 3:
        raise ValueError(f"aggregate_views: logits must be (B, V, K), got shape {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)
