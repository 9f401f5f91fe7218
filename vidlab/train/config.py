"""What the training loop is told and what it hands around: :class:`TrainConfig` (one run's
recipe), the step-function contract (:class:`StepContext` in, :class:`StepOutput` out,
:func:`default_step` the plain cross-entropy step) and :class:`History` (what a run records).

The loop itself is :mod:`vidlab.train.engine`, which re-exports these names.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vidlab.train.evaluation import AMP_DTYPES

__all__ = ["TrainConfig", "StepOutput", "StepContext", "StepFn", "default_step", "History"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored inside checkpoints as a dict of primitives)."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # "adamw" | "sgd"
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    scheduler: str = "cosine"  # "cosine" (warmup + cosine, per step) | "constant" (warmup then flat)
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None
    accum_steps: int = 1
    amp: bool = False
    amp_dtype: str = "bfloat16"  # "bfloat16" | "float16" (float16 also turns on a GradScaler)
    early_stopping_patience: int | None = None  # epochs without improvement before stopping
    early_stopping_metric: str = "val_top1"  # a History field; "...loss" metrics are minimised
    early_stopping_min_delta: float = 0.0
    log_every: int = 10  # progress-bar postfix refresh, in batches
    seed: int = 0
    checkpoint_every_epochs: int = 1

    def __post_init__(self) -> None:
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"TrainConfig.amp_dtype={self.amp_dtype!r}; choose one of {sorted(AMP_DTYPES)}")
        if self.optimizer.lower() not in ("adamw", "sgd"):
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}; choose 'adamw' or 'sgd'")
        if self.scheduler not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.scheduler={self.scheduler!r}; choose 'cosine' or 'constant'")
        if self.accum_steps < 1:
            raise ValueError(f"TrainConfig.accum_steps must be >= 1, got {self.accum_steps}")
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"TrainConfig.early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}"
            )
        if self.checkpoint_every_epochs < 1:
            raise ValueError(f"TrainConfig.checkpoint_every_epochs must be >= 1, got {self.checkpoint_every_epochs}")
        self.betas = tuple(self.betas)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild from :func:`dataclasses.asdict` output (e.g. ``checkpoint["config"]``); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"TrainConfig.from_dict: unknown keys {sorted(unknown)}")
        return cls(**dict(values))


@dataclass
class StepOutput:
    """What a step function returns: the scalar ``loss`` to back-propagate and the ``logits`` ``(B, K)``
    (``None`` for objectives without classes, e.g. self-supervised pretraining: no accuracy is kept)."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass
class StepContext:
    """Handed to a step function: where and how to compute one micro-batch."""

    device: torch.device
    cfg: TrainConfig
    epoch: int
    step: int  # batch index within the epoch
    global_step: int  # optimizer steps done before this batch (all epochs)
    criterion: nn.Module  # cross entropy with cfg.label_smoothing
    amp_enabled: bool
    amp_dtype: torch.dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this device with the configured dtype (a no-op when AMP is off)."""
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp_enabled)


StepFn = Callable[[nn.Module, Mapping[str, Any], StepContext], StepOutput]


def default_step(model: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> StepOutput:
    """Forward ``batch["video"]`` ``(B, C, T, H, W)`` under autocast and take the cross entropy."""
    video = batch["video"].to(ctx.device, non_blocking=True)
    label = batch["label"].to(ctx.device, non_blocking=True)
    with ctx.autocast():
        logits = model(video)
    loss = ctx.criterion(logits.float(), label)
    return StepOutput(loss=loss, logits=logits)


@dataclass
class History:
    """Per-epoch training record (one entry per finished epoch in every list)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_top1: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_top1: list[float] = field(default_factory=list)
    val_top5: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of lists and primitives (JSON- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "History":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in values.items() if k in known})

    def __len__(self) -> int:
        return len(self.epoch)
