"""What did a pretrained encoder learn? Probes on its frozen features.

:func:`extract_features` runs the frozen encoder once over a loader; :func:`knn_accuracy`
(cosine kNN, as DINO) and :func:`linear_probe_accuracy` (logistic regression) score the
features. Neither changes the encoder.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidlab.train.evaluation import AMP_DTYPES

__all__ = ["extract_features", "knn_accuracy", "linear_probe_accuracy", "pooled_features"]


def pooled_features(encoder: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """The feature a classifier head sees: ``(B, C, T, H, W)`` -> ``(B, D)`` (tokens pooled and
    normalised by ``forward_head(..., pre_logits=True)`` when the encoder has it, else mean-pooled)."""
    tokens = encoder.forward_features(clips)
    if hasattr(encoder, "forward_head"):
        return encoder.forward_head(tokens, pre_logits=True)
    return tokens.mean(dim=1)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    loader: Iterable,
    device: str | torch.device = "cpu",
    *,
    amp: bool = False,
    amp_dtype: str = "bfloat16",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (:func:`pooled_features`) -> ``(feats (N, D) float32 CPU, labels (N,))``.

    Batches are dicts with ``video`` ``(B, C, T, H, W)`` and ``label``; multi-view batches
    ``(B, V, C, T, H, W)`` are averaged over the views. ``amp`` / ``amp_dtype`` as in
    :class:`vidlab.train.TrainConfig`.
    """
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype={amp_dtype!r}; choose one of {sorted(AMP_DTYPES)}")
    device = torch.device(device)
    was_training = encoder.training
    encoder.to(device).eval()
    feats, labels = [], []
    try:
        for batch in loader:
            video = batch["video"].to(device)
            views = video.shape[1] if video.ndim == 6 else 1
            flat = video.flatten(0, 1) if video.ndim == 6 else video
            with torch.autocast(device.type, dtype=AMP_DTYPES[amp_dtype], enabled=amp):
                f = pooled_features(encoder, flat).float()
            feats.append(f.view(-1, views, f.shape[-1]).mean(dim=1).cpu())
            labels.append(batch["label"].cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Cosine kNN (weighted vote ``exp(sim / temperature)``, as in DINO); returns top-1 accuracy in [0, 1]."""
    if len(train_feats) == 0 or len(test_feats) == 0:
        raise ValueError("knn_accuracy needs non-empty train and test features")
    k = min(k, len(train_feats))
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    tr = F.normalize(train_feats.float(), dim=1)
    te = F.normalize(test_feats.float(), dim=1)
    sim, idx = (te @ tr.t()).topk(k, dim=1)
    votes = torch.zeros(len(te), num_classes)
    votes.scatter_add_(1, train_labels[idx].long(), (sim / temperature).exp())
    return float((votes.argmax(1) == test_labels).float().mean())


def linear_probe_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    steps: int = 200,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Multinomial logistic regression on frozen, standardised features (full-batch L-BFGS,
    L2 penalty ``weight_decay``); returns test top-1 accuracy in [0, 1]."""
    mean = train_feats.float().mean(0, keepdim=True)
    std = train_feats.float().std(0, keepdim=True).clamp_min(1e-6) if len(train_feats) > 1 else 1.0
    xtr = (train_feats.float() - mean) / std
    xte = (test_feats.float() - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    clf = nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        clf.weight.copy_(torch.randn(clf.weight.shape, generator=gen) * 0.01)
        clf.bias.zero_()
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")
    ytr = train_labels.long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(clf(xtr), ytr) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((clf(xte).argmax(1) == test_labels).float().mean())
