"""Step-budgeted training with the one loop: ``fit_steps`` runs :func:`~vidlab.train.train_one_epoch`
over a loader cycled to exactly ``steps`` optimizer steps.

Pretraining and few-label comparisons are budgeted in optimizer steps, not epochs (a tiny labelled
set would otherwise get a handful of steps). ``fit_steps`` builds the optimizer (or takes yours),
the schedule of ``cfg.scheduler`` over exactly ``steps`` steps, the fp16 loss scaler, then hands
everything to the same ``train_one_epoch`` that :func:`~vidlab.train.fit` uses: backward, gradient
accumulation, AMP, clipping, skipping non-finite steps.

Unlike ``fit`` it does not reseed anything: build the model and a seeded loader after
``vl.set_seed``, and the run is reproducible.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from vidlab.train.engine import StepFn, TrainConfig, make_scaler, train_one_epoch
from vidlab.train.optim import build_optimizer, build_scheduler
from vidlab.utils import get_device

__all__ = ["CycledLoader", "fit_steps"]


class CycledLoader:
    """Exactly ``num_batches`` batches from ``loader``, starting it again whenever it runs out
    (a shuffling loader draws a new order each pass). Has a length, so progress bars and the
    engine's accumulation windows know where it ends."""

    def __init__(self, loader: Iterable[Mapping[str, Any]], num_batches: int) -> None:
        if num_batches < 1:
            raise ValueError(f"CycledLoader: num_batches must be >= 1, got {num_batches}")
        self.loader = loader
        self.num_batches = int(num_batches)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        count = 0
        while True:
            got = False
            for batch in self.loader:
                got = True
                yield batch
                count += 1
                if count == self.num_batches:
                    return
            if not got:
                raise ValueError("fit_steps: the loader yielded no batches")


def fit_steps(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    cfg: TrainConfig,
    *,
    steps: int,
    device: torch.device | str = "auto",
    step_fn: StepFn | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    desc: str = "training",
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for exactly ``steps`` optimizer steps of ``cfg.accum_steps`` batches each.

    ``cfg`` gives the optimizer (unless ``optimizer`` is passed, e.g. with per-group learning
    rates), the schedule (``cfg.scheduler`` over ``steps`` steps, ``cfg.warmup_steps`` of warmup;
    ``cfg.epochs`` / ``warmup_epochs`` are not used), AMP (``cfg.amp`` / ``cfg.amp_dtype``),
    clipping and label smoothing. ``step_fn`` as in :func:`~vidlab.train.fit`; it may return no
    logits (self-supervised objectives). Returns ``train_one_epoch``'s dict (``step_losses``:
    loss of each applied step; ``skipped_steps``: steps with a non-finite loss or gradient, not
    applied) plus ``history`` (= ``step_losses``) and ``seconds``. The model is left in eval mode.
    """
    if steps < 1:
        raise ValueError(f"fit_steps: steps must be >= 1, got {steps}")
    device = get_device(device) if isinstance(device, (str, type(None))) else device
    model.to(device)
    if optimizer is None:
        optimizer = build_optimizer(model, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, betas=cfg.betas)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else 0
    scheduler = build_scheduler(optimizer, cfg.scheduler, warmup_steps=warmup, total_steps=steps,
                                min_lr_ratio=cfg.min_lr_ratio)
    start = time.perf_counter()
    out = train_one_epoch(
        model, CycledLoader(loader, steps * cfg.accum_steps), optimizer, scheduler, cfg=cfg, device=device,
        epoch=0, scaler=make_scaler(cfg, device), step_fn=step_fn, progress=progress, on_step=on_step, desc=desc,
    )
    model.eval()
    return {**out, "history": out["step_losses"], "seconds": time.perf_counter() - start}
