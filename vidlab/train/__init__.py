"""Training: the one loop (``fit`` by epochs, ``fit_steps`` by optimizer steps, both over
``train_one_epoch``; ``evaluate``), optimizers and schedules, metrics, resumable weights-only
checkpoints, parameter-efficient fine-tuning (``vidlab.train.peft``) and self-supervised
objectives (``vidlab.train.ssl``).
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
    AMP_DTYPES,
    History,
    StepContext,
    StepOutput,
    TrainConfig,
    default_step,
    epoch_seed,
    evaluate,
    fit,
    make_scaler,
    seed_loader_for_epoch,
    train_one_epoch,
)
from vidlab.train.metrics import aggregate_views, confusion_matrix, per_class_accuracy, topk_accuracy
from vidlab.train.optim import (
    build_optimizer,
    build_scheduler,
    cosine_with_warmup,
    param_groups_layer_decay,
    param_groups_weight_decay,
)
from vidlab.train.steps import fit_steps

__all__ = [
    "AMP_DTYPES",
    "History",
    "StepContext",
    "StepOutput",
    "TrainConfig",
    "aggregate_views",
    "build_optimizer",
    "build_scheduler",
    "capture_rng_state",
    "confusion_matrix",
    "cosine_with_warmup",
    "default_step",
    "epoch_seed",
    "evaluate",
    "fit",
    "fit_steps",
    "make_scaler",
    "load_checkpoint_into",
    "param_groups_layer_decay",
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
