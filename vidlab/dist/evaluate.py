"""Sharded evaluation: every process scores its shard, the results are gathered and merged.

Each process runs the engine's :func:`~vidlab.train.evaluate` on its own shard
(:class:`~vidlab.dist.sampling.ShardSampler`: every sample in exactly one shard), then
``all_gather_object`` hands every process all shards' predictions and counts. The merged
result has the same keys as ``evaluate`` and the same accuracy and confusion matrix as one
process scoring the whole set: counts are summed, video-level metrics are recomputed on
the concatenated predictions.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vidlab.dist.env import is_distributed
from vidlab.train.checkpoint import unwrap_model
from vidlab.train.evaluation import evaluate, video_metrics


def _shard_summary(result: Mapping[str, Any] | None, rank: int) -> dict[str, Any]:
    """What one process sends: exact counts and its predictions (CPU tensors)."""
    if result is None:  # an empty shard (fewer samples than processes)
        return {"rank": rank, "num_clips": 0, "loss_sum": 0.0, "clip_correct": {1: 0, 5: 0}, "predictions": None}
    n = int(result["num_clips"])
    return {
        "rank": rank,
        "num_clips": n,
        "loss_sum": float(result["loss"]) * n,
        "clip_correct": {1: round(result["clip_top1"] * n), 5: round(result["clip_top5"] * n)},
        "predictions": {k: (v.cpu() if isinstance(v, torch.Tensor) else list(v))
                        for k, v in result["predictions"].items()},
    }


def merge_evaluations(shards: Sequence[Mapping[str, Any]], num_classes: int) -> dict[str, Any]:
    """Merge per-shard summaries (as gathered by :func:`sharded_evaluate`) into one ``evaluate`` dict.

    Predictions are interleaved back into dataset order (shard ``r``'s ``k``-th item is sample
    ``k*N + r``) when every shard kept all its items; clip counts and losses are summed.
    """
    shards = sorted(shards, key=lambda s: s["rank"])
    num_clips = sum(s["num_clips"] for s in shards)
    if num_clips == 0:
        raise ValueError("sharded evaluation: no process scored any sample")
    world = len(shards)
    # interleave: position k of rank r -> k * world + r (dataset order for ShardSampler shards)
    keyed = []
    for s in shards:
        p = s["predictions"]
        if p is None:
            continue
        for k in range(len(p["label"])):
            keyed.append((k * world + s["rank"], s["rank"], k))
    keyed.sort()
    by_rank = {s["rank"]: s["predictions"] for s in shards if s["predictions"] is not None}
    prob = torch.stack([by_rank[r]["prob"][k] for _, r, k in keyed])
    target = torch.stack([by_rank[r]["label"][k] for _, r, k in keyed])
    paths = [by_rank[r]["path"][k] for _, r, k in keyed]
    clip_correct = {k: sum(s["clip_correct"][k] for s in shards) for k in (1, 5)}
    merged = video_metrics(prob, target, paths, num_classes=num_classes, loss_sum=sum(s["loss_sum"] for s in shards),
                           clip_correct=clip_correct, num_clips=num_clips)
    merged["shard_sizes"] = [int(len(s["predictions"]["label"])) if s["predictions"] is not None else 0 for s in shards]
    return merged



def sharded_evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    device: torch.device | str,
    num_classes: int,
    amp: bool = False,
    amp_dtype: str = "bfloat16",
    progress: bool = False,
) -> dict[str, Any]:
    """``evaluate`` on this process's shard (``loader`` should use a :class:`ShardSampler`), gathered.

    Same signature and keys as :func:`vidlab.train.evaluate` (plus ``shard_sizes``), so it can
    be passed to ``fit(evaluate_fn=...)``. Every process returns the same merged result.
    Without a process group it is plain ``evaluate``. The model is unwrapped first (scoring
    needs no gradient synchronisation).
    """
    kwargs = dict(device=device, num_classes=num_classes, amp=amp, amp_dtype=amp_dtype, progress=progress)
    if not is_distributed():
        return evaluate(model, loader, **kwargs)
    rank, world = dist.get_rank(), dist.get_world_size()
    empty = hasattr(loader, "__len__") and len(loader) == 0  # type: ignore[arg-type]
    local = None if empty else evaluate(unwrap_model(model), loader, **kwargs)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, _shard_summary(local, rank))
    return merge_evaluations(gathered, num_classes)
