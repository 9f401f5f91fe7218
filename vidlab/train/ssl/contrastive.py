"""Contrastive video pretraining (SimCLR-style): two clips of one video are positives.

Two clips of the same video (other time window, own augmentation) are positives, every other
clip in the batch a negative (NT-Xent / InfoNCE). Batches hold two views per video,
``video`` ``(B, 2, C, T, H, W)`` (:class:`TwoViews` makes them from a random-clip dataset).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SimCLRVideo", "TwoViews", "nt_xent_loss"]


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, negatives: torch.Tensor | None = None
) -> torch.Tensor:
    """NT-Xent (SimCLR InfoNCE) for ``(B, d)`` embeddings of two views; row i of z1 and z2 are positives.

    Each of the 2B embeddings is classified against the other 2B-1 by cosine similarity /
    temperature; ``negatives`` ``(M, d)`` (e.g. time-reversed clips) are extra candidates that
    are never the answer.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    candidates = z if negatives is None else torch.cat([z, F.normalize(negatives.float(), dim=1)])
    sim = z @ candidates.t() / temperature  # (2B, 2B + M)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[:, : 2 * b] = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, targets)


class SimCLRVideo(nn.Module):
    """Contrastive pretraining: two clips of the same video (other time window, own augmentation)
    are positives; the encoder's mean-pooled tokens go through an MLP projector into NT-Xent.

    With ``reverse_negatives`` the time-reversed first view of every video is added as a
    negative: it has the same appearance as the positives and the opposite motion, so the
    encoder can only tell them apart by the direction of motion (appearance alone no longer
    solves the task).

    ``forward(views (B, 2, C, T, H, W)) -> loss``; ``forward(view1, view2)`` works too.
    """

    def __init__(
        self,
        encoder: nn.Module,
        proj_dim: int = 128,
        temperature: float = 0.1,
        hidden_dim: int | None = None,
        reverse_negatives: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.temperature = float(temperature)
        self.reverse_negatives = reverse_negatives
        d = int(encoder.embed_dim)
        hidden = hidden_dim or 2 * d
        self.projector = nn.Sequential(
            nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim)
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projected embedding ``(B, proj_dim)`` of a clip batch ``(B, C, T, H, W)``."""
        return self.projector(self.encoder.forward_features(x).mean(dim=1))

    def forward(self, views: torch.Tensor, view2: torch.Tensor | None = None) -> torch.Tensor:
        if view2 is None:
            if views.ndim != 6 or views.shape[1] < 2:
                raise ValueError(f"SimCLRVideo expects views (B, 2, C, T, H, W), got {tuple(views.shape)}")
            v1, v2 = views[:, 0], views[:, 1]
        else:
            v1, v2 = views, view2
        b = v1.shape[0]
        clips = [v1, v2] + ([v1.flip(2)] if self.reverse_negatives else [])
        z = self.embed(torch.cat(clips))  # one pass: BatchNorm sees all clips
        negatives = z[2 * b:] if self.reverse_negatives else None
        return nt_xent_loss(z[:b], z[b : 2 * b], self.temperature, negatives)


class TwoViews(torch.utils.data.Dataset):
    """Wrap a dataset whose items are random (random time window + random augmentation) so each
    item holds two independent draws: ``video`` becomes ``(2, C, T, H, W)``; other keys of the
    first draw are kept."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        first = self.dataset[index]
        if not isinstance(first, dict):  # a skipped item (vidlab.data.datasets.Skip) passes through
            return first
        second = self.dataset[index]
        if not isinstance(second, dict):
            return second
        item = dict(first)
        item["video"] = torch.stack([first["video"], second["video"]])
        return item
