"""What data parallelism sends over the wire: ring all-reduce and DDP's gradient buckets.

After every backward pass each of the N processes holds its own gradient ``g_r``; DDP
replaces every one with the average ``(1/N) * sum_r g_r`` by an all-reduce. A *ring*
all-reduce cuts the G gradient bytes into N chunks and passes them around a ring twice:
``N-1`` reduce-scatter steps (each process ends up owning the full sum of one chunk) then
``N-1`` all-gather steps (the sums travel round). Every process sends ``2 (N-1) G / N`` bytes,
close to ``2 G`` however many processes there are, which is why the ring scales.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def ring_allreduce_bytes(nbytes: int | float, world_size: int) -> float:
    """Bytes each process sends in a ring all-reduce of ``nbytes``: ``2 (N - 1) / N * nbytes``."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return 2.0 * (world_size - 1) / world_size * float(nbytes)


def ring_allreduce(tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
    """Simulate a ring all-reduce (sum) of one 1-d tensor per process, step by step.

    Returns every process's result (all equal to the sum) and the bytes each process sent.
    Process ``r`` sends only to ``r + 1`` (mod N), one chunk per step.
    """
    n = len(tensors)
    if n == 0:
        raise ValueError("ring_allreduce: no tensors")
    if any(t.shape != tensors[0].shape or t.ndim != 1 for t in tensors):
        raise ValueError("ring_allreduce: expects 1-d tensors of one shape")
    chunks = [[c.clone() for c in torch.tensor_split(t, n)] for t in tensors]
    sent = [0] * n
    for step in range(n - 1):  # reduce-scatter: after it, rank r owns the sum of chunk (r + 1) % n
        outgoing = [(r, (r - step) % n, chunks[r][(r - step) % n].clone()) for r in range(n)]
        for r, c, data in outgoing:
            chunks[(r + 1) % n][c] += data
            sent[r] += data.numel() * data.element_size()
    for step in range(n - 1):  # all-gather: pass the finished sums round the ring
        outgoing = [(r, (r + 1 - step) % n, chunks[r][(r + 1 - step) % n].clone()) for r in range(n)]
        for r, c, data in outgoing:
            chunks[(r + 1) % n][c] = data
            sent[r] += data.numel() * data.element_size()
    return [torch.cat(c) for c in chunks], sent


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of one full gradient: the trainable parameters' sizes (what DDP all-reduces per step)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def ddp_bucket_sizes(ddp_model: nn.Module) -> list[int]:
    """Bytes of each gradient bucket of a ``DistributedDataParallel`` model (DDP's own logging data).

    DDP groups gradients into buckets of at most ``bucket_cap_mb`` (25 MiB by default; the
    first, filled by the last layers, is kept small so its all-reduce starts early) and
    all-reduces a bucket as soon as all its gradients are ready, overlapping with backward.
    Returns ``[]`` when this torch build does not expose the figures.
    """
    getter = getattr(ddp_model, "_get_ddp_logging_data", None)
    if getter is None:
        return []
    try:
        text = str(getter().get("bucket_sizes", ""))
    except Exception:  # a prototype interface: absent figures are not an error
        return []
    return [int(v) for v in text.replace(" ", "").split(",") if v.strip().isdigit()]
