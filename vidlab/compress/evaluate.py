"""Accuracy of any callable (eager, compiled, quantized, exported) on clips held in memory, and the
accuracy / latency / size Pareto front.

Compiled models are specialised to a batch shape, so :func:`predict_logits` always feeds
batches of exactly ``batch_size`` clips (the last one padded) and every variant is scored on the
same tensors.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class EvalSet:
    """Clips ``(N * V, C, T, H, W)`` (the ``V`` views of each video consecutive) and labels ``(N,)``."""

    clips: torch.Tensor
    labels: torch.Tensor
    views: int

    def __len__(self) -> int:
        return int(self.labels.numel())


def stack_clips(dataset: Any, *, limit: int | None = None) -> EvalSet:
    """Materialise a clip dataset (items ``{"video": (C, T, H, W) or (V, C, T, H, W), "label"}``)
    into one :class:`EvalSet`; ``limit`` keeps the first videos."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    videos, labels = [], []
    for i in range(count):
        item = dataset[i]
        video = item["video"]
        videos.append(video if video.ndim == 5 else video.unsqueeze(0))
        labels.append(int(item["label"]))
    if not videos:
        raise ValueError("stack_clips: the dataset is empty")
    return EvalSet(torch.cat(videos), torch.tensor(labels), videos[0].shape[0])


def predict_logits(fn: Callable[[torch.Tensor], torch.Tensor], clips: torch.Tensor, *, batch_size: int = 8,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits ``(M, K)`` of ``fn`` on ``clips`` ``(M, C, T, H, W)`` in batches of exactly ``batch_size``
    (the last batch padded by repeating its first clip, the padding dropped)."""
    out = []
    with torch.inference_mode():
        for start in range(0, clips.shape[0], batch_size):
            x = clips[start:start + batch_size]
            n = x.shape[0]
            if n < batch_size:
                x = torch.cat([x, x[:1].expand(batch_size - n, *x.shape[1:])])
            out.append(fn(x.to(device))[:n].float().cpu())
    return torch.cat(out)


def video_top1(logits: torch.Tensor, labels: torch.Tensor, views: int = 1) -> float:
    """Video-level top-1: softmax averaged over each video's ``views`` consecutive rows of ``logits``."""
    probs = logits.softmax(-1).reshape(labels.numel(), views, -1).mean(1)
    return float((probs.argmax(-1) == labels).float().mean())


def top1(fn: Callable[[torch.Tensor], torch.Tensor], data: EvalSet, *, batch_size: int = 8,
         device: torch.device | str = "cpu") -> float:
    """Video-level top-1 of ``fn`` on ``data``."""
    return video_top1(predict_logits(fn, data.clips, batch_size=batch_size, device=device), data.labels, data.views)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of rows where two logit tensors ``(M, K)`` pick the same class."""
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[bool]:
    """``True`` for each point no other point beats: none at most as slow and at least as accurate,
    better in one of the two."""
    points = list(zip(latency, accuracy))
    return [
        not any((lo <= l and ao >= a) and (lo < l or ao > a) for lo, ao in points)
        for l, a in points
    ]


def plot_pareto(rows: Sequence[dict[str, Any]], *, x: str = "latency_b1_ms", y: str = "top1",
                size: str = "bytes", label: str = "variant", ax: Any = None) -> Any:
    """Scatter of ``rows`` (dicts) as ``y`` against ``x``, marker area proportional to ``size``,
    the Pareto front drawn as a line and its points outlined. Returns the figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = [float(r[x]) for r in rows]
    ys = [float(r[y]) for r in rows]
    sizes = [float(r[size]) for r in rows]
    front = pareto_front(xs, ys)
    scale = 900.0 / max(sizes)
    for r, xv, yv, s, on in zip(rows, xs, ys, sizes, front):
        ax.scatter(xv, yv, s=max(s * scale, 12), alpha=0.55, color="tab:red" if on else "tab:blue",
                   edgecolors="black" if on else "none", linewidths=1.5)
        ax.annotate(str(r[label]), (xv, yv), fontsize=8, xytext=(4, 4), textcoords="offset points")
    pts = sorted((xv, yv) for xv, yv, on in zip(xs, ys, front) if on)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:red", lw=1.2, ls="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(f"{x} (log scale)")
    ax.set_ylabel(y)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return ax.figure
