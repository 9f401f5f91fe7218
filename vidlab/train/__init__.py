"""Training: the loop (``fit``, ``train_one_epoch``, ``evaluate``), optimizers and schedules,
metrics, resumable weights-only checkpoints and parameter-efficient fine-tuning (``vidlab.train.peft``).
"""
from __future__ import annotations

from vidlab.train import peft
from vidlab.train.checkpoint import (
    capture_rng_state,
    load_checkpoint_into,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from vidlab.train.engine import (
    History,
    StepContext,
    StepOutput,
    TrainConfig,
    default_step,
    epoch_seed,
    evaluate,
    fit,
    seed_loader_for_epoch,
    train_one_epoch,
)
from vidlab.train.metrics import aggregate_views, confusion_matrix, per_class_accuracy, topk_accuracy
from vidlab.train.optim import build_optimizer, cosine_with_warmup, param_groups_weight_decay

__all__ = [
    "History",
    "StepContext",
    "StepOutput",
    "TrainConfig",
    "aggregate_views",
    "build_optimizer",
    "capture_rng_state",
    "confusion_matrix",
    "cosine_with_warmup",
    "default_step",
    "epoch_seed",
    "evaluate",
    "fit",
    "load_checkpoint_into",
    "param_groups_weight_decay",
    "peft",
    "per_class_accuracy",
    "restore_rng_state",
    "save_checkpoint",
    "seed_loader_for_epoch",
    "topk_accuracy",
    "train_one_epoch",
    "unwrap_model",
]
