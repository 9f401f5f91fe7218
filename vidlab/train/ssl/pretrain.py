"""Self-supervised pretraining with the one training loop: a step function for any objective
whose ``forward(video)`` returns its loss, run for a budget of optimizer steps.

:class:`~vidlab.train.ssl.VideoMAE` returns ``(loss, pred, mask)`` and
:class:`~vidlab.train.ssl.SimCLRVideo` returns ``loss``; :func:`ssl_step` takes either, and
:func:`pretrain` runs it with :func:`vidlab.train.fit_steps` (AdamW, warmup + cosine, AMP,
accumulation, clipping, non-finite steps skipped and counted).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from vidlab.train.engine import StepContext, StepOutput, TrainConfig
from vidlab.train.memory import PeakMemory
from vidlab.train.steps import fit_steps
from vidlab.utils import get_device

__all__ = ["pretrain", "ssl_step"]


def ssl_step(model: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> StepOutput:
    """Forward ``batch["video"]`` (``(B, C, T, H, W)``, or ``(B, 2, C, T, H, W)`` for two views)
    under autocast; the model's output is the loss, or a tuple whose first item is the loss.
    Labels, if any, are ignored."""
    video = batch["video"].to(ctx.device, non_blocking=True)
    with ctx.autocast():
        out = model(video)
    loss = out[0] if isinstance(out, (tuple, list)) else out
    return StepOutput(loss=loss.float())


def pretrain(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    cfg: TrainConfig,
    *,
    steps: int,
    device: torch.device | str = "auto",
    progress: bool = True,
    desc: str = "pretraining",
) -> dict[str, Any]:
    """Pretrain ``model`` (a VideoMAE or SimCLRVideo wrapper) for ``steps`` optimizer steps of
    ``cfg.accum_steps`` batches, cycling ``loader``.

    Returns :func:`~vidlab.train.fit_steps`'s dict: ``history`` (loss per applied step),
    ``seconds``, ``steps``, ``skipped_steps`` (non-finite loss or gradient: not applied, training
    goes on), ``grad_scale`` (fp16), plus ``peak_memory_bytes`` (``torch.cuda.max_memory_allocated``
    on a GPU, the largest process RSS sampled after each step on a CPU).
    """
    device = get_device(device) if isinstance(device, (str, type(None))) else device
    peak = PeakMemory(device)
    out = fit_steps(model, loader, cfg, steps=steps, device=device, step_fn=ssl_step, progress=progress,
                    desc=desc, on_step=peak.sample)
    return {**out, "peak_memory_bytes": peak.bytes}
