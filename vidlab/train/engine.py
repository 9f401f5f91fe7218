"""The training loop, torchvision-references style: ``train_one_epoch`` and ``fit`` (``evaluate``
lives in :mod:`vidlab.train.evaluation`; ``fit_steps``, the step-budgeted entry, in :mod:`vidlab.train.steps`;
``TrainConfig``, the step contract and ``History`` in :mod:`vidlab.train.config`, re-exported here).

Batches are dicts: ``batch["video"]`` float ``(B, C, T, H, W)`` (or ``(B, V, C, T, H, W)`` for
multi-view evaluation), ``batch["label"]`` long ``(B,)``, ``batch["path"]`` list of str.
Models map ``(B, C, T, H, W)`` to logits ``(B, num_classes)``.

A custom step plugs in without forking the loop::

    def step_fn(model, batch, ctx: StepContext) -> StepOutput:
        video = batch["video"].to(ctx.device); label = batch["label"].to(ctx.device)
        with ctx.autocast():
            logits = model(video)
            loss = ctx.criterion(logits, label)
        return StepOutput(loss=loss, logits=logits)

The loop does backward, gradient accumulation, (un)scaling, clipping, the non-finite check
(a step with a NaN/inf loss or gradient is skipped and counted, never applied), the optimizer
and scheduler steps.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vidlab.train.checkpoint import load_checkpoint_into, save_checkpoint, to_primitives, unwrap_model
from vidlab.train.config import History, StepContext, StepFn, StepOutput, TrainConfig, default_step
from vidlab.train.evaluation import AMP_DTYPES, evaluate
from vidlab.train.metrics import topk_accuracy
from vidlab.train.optim import build_optimizer, build_scheduler
from vidlab.utils import get_device, set_seed

__all__ = [
    "AMP_DTYPES", "History", "StepContext", "StepFn", "StepOutput", "TrainConfig", "default_step", "epoch_seed",
    "evaluate", "fit", "make_scaler", "seed_loader_for_epoch", "train_one_epoch",
]


def _is_finite(value: torch.Tensor) -> bool:
    return bool(torch.isfinite(value).all().item())


def _batch_size(batch: Mapping[str, Any]) -> int:
    if "label" in batch:
        return int(batch["label"].shape[0])
    return int(batch["video"].shape[0])


def make_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """The fp16 loss scaler (enabled only for ``cfg.amp`` with ``cfg.amp_dtype == "float16"``)."""
    return torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "float16")


def _warn_free_scheduler_step(scheduler: Any) -> None:
    """Step the scheduler even after a skipped optimizer step (keeps lr a function of the step count)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        scheduler.step()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    *,
    cfg: TrainConfig,
    device: torch.device | str,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    step_fn: StepFn | None = None,
    progress: bool = True,
    global_step: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    desc: str | None = None,
) -> dict[str, Any]:
    """One pass over ``loader``; returns ``{"loss", "top1", "lr", "seconds", "steps", "skipped_steps",
    "nonfinite_losses", "samples", "samples_per_s", "grad_scale", "step_losses"}`` (``grad_scale``:
    the fp16 GradScaler's scale after the epoch, ``None`` without one; ``step_losses``: the mean
    loss of every applied optimizer step, in order).

    ``lr`` is the learning rate of the epoch's last optimizer step (first param group).
    ``loss``/``top1`` average over micro-batches with a finite loss (weighted by batch size).
    Gradients are accumulated over ``cfg.accum_steps`` batches (the loss is divided by the number
    of batches in the window). Before each optimizer step the gradients are unscaled (fp16),
    their total norm is computed (and clipped to ``cfg.clip_grad_norm``); a window with a
    non-finite loss or gradient norm is skipped: gradients are dropped, nothing is applied,
    ``skipped_steps`` counts it. The scheduler steps once per optimizer step (skipped or not).
    ``top1`` is ``nan`` when the step function returns no logits (or batches hold no labels).
    ``on_step(global_step, loss)`` is called after every applied optimizer step.
    """
    device = get_device(device) if isinstance(device, str) else device
    step_fn = step_fn or default_step
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    use_scaler = scaler is not None and scaler.is_enabled()
    amp_dtype = AMP_DTYPES[cfg.amp_dtype]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    num_batches = len(loader) if hasattr(loader, "__len__") else None

    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = correct_sum = 0.0
    seen = 0
    steps = skipped = nonfinite_losses = 0
    scored = 0  # samples with logits and labels (the accuracy's denominator)
    step_losses: list[float] = []
    window = {"ok": True, "has_grad": False, "pending": False, "loss": 0.0}
    last_lr = float(optimizer.param_groups[0]["lr"])
    start = time.perf_counter()

    def finish_window() -> None:
        """Apply (or skip) one optimizer step for the accumulated window, then step the scheduler."""
        nonlocal steps, skipped, last_lr
        last_lr = float(optimizer.param_groups[0]["lr"])
        applied = False
        if window["ok"] and window["has_grad"]:
            if use_scaler:
                scaler.unscale_(optimizer)
            grads = [p.grad for p in params if p.grad is not None]
            total_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            if _is_finite(total_norm):
                if cfg.clip_grad_norm is not None:
                    torch.nn.utils.clip_grads_with_norm_(params, cfg.clip_grad_norm, total_norm)
                if use_scaler:
                    scaler.step(optimizer)  # also checks for inf itself
                else:
                    optimizer.step()
                applied = True
            if use_scaler:
                scaler.update()  # shrinks the scale after an overflow
        if applied:
            step_losses.append(window["loss"])
            if on_step is not None:
                on_step(global_step + steps + 1, window["loss"])
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        window.update(ok=True, has_grad=False, pending=False, loss=0.0)
        steps += 1
        if scheduler is not None:
            _warn_free_scheduler_step(scheduler)

    bar = tqdm(loader, total=num_batches, desc=desc or f"epoch {epoch}", disable=not progress, leave=False)
    for batch_index, batch in enumerate(bar):
        window_start = (batch_index // cfg.accum_steps) * cfg.accum_steps
        window_size = cfg.accum_steps if num_batches is None else min(cfg.accum_steps, num_batches - window_start)
        ctx = StepContext(
            device=device,
            cfg=cfg,
            epoch=epoch,
            step=batch_index,
            global_step=global_step + steps,
            criterion=criterion,
            amp_enabled=cfg.amp,
            amp_dtype=amp_dtype,
        )
        out = step_fn(model, batch, ctx)
        loss = out.loss
        window["pending"] = True
        if _is_finite(loss.detach()):
            scaled = loss / window_size
            (scaler.scale(scaled) if use_scaler else scaled).backward()
            window["has_grad"] = True
            n = _batch_size(batch)
            value = loss.item()
            window["loss"] += value / window_size
            loss_sum += value * n
            if out.logits is not None and "label" in batch:
                label = batch["label"].to(out.logits.device)
                correct_sum += topk_accuracy(out.logits.detach().float(), label, ks=(1,))[1] * n
                scored += n
            seen += n
        else:  # no backward: the whole window is skipped anyway
            window["ok"] = False
            nonfinite_losses += 1

        if (batch_index + 1) % cfg.accum_steps == 0 or batch_index + 1 == num_batches:
            finish_window()
            if progress and (steps % max(1, cfg.log_every // cfg.accum_steps) == 0 or batch_index + 1 == num_batches):
                bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                skipped=skipped)
    if window["pending"]:  # a loader without len() ended inside a window
        finish_window()
    bar.close()

    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum / seen if seen else float("nan"),
        "top1": correct_sum / scored if scored else float("nan"),
        "lr": last_lr,
        "seconds": seconds,
        "steps": steps,
        "skipped_steps": skipped,
        "nonfinite_losses": nonfinite_losses,
        "samples": seen,
        "samples_per_s": seen / seconds if seconds > 0 else float("nan"),
        "grad_scale": float(scaler.get_scale()) if use_scaler else None,
        "step_losses": step_losses,
    }


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of ``epoch``: a fixed function of ``(seed, epoch)``."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % (2**63 - 1)


def seed_loader_for_epoch(loader: Any, seed: int, epoch: int) -> None:
    """Make ``loader``'s shuffling (and worker seeds) for ``epoch`` a function of ``(seed, epoch)``.

    Reseeds ``loader.generator`` (and the sampler's own generator, if different) and calls
    ``sampler.set_epoch(epoch)`` where it exists (DistributedSampler). A loader without a
    generator draws its order from the global torch RNG, which a checkpoint also restores.
    """
    value = epoch_seed(seed, epoch)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(value)
    sampler = getattr(loader, "sampler", None)
    sampler_generator = getattr(sampler, "generator", None)
    if isinstance(sampler_generator, torch.Generator) and sampler_generator is not generator:
        sampler_generator.manual_seed(value)
    for s in (sampler, getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if s is not None and hasattr(s, "set_epoch"):
            s.set_epoch(epoch)
            break


def _improved(metric: str, value: float, best: float | None, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    if "loss" in metric:
        return value < best - min_delta
    return value > best + min_delta


def fit(
    model: nn.Module,
    train_loader: Iterable[Mapping[str, Any]],
    val_loader: Iterable[Mapping[str, Any]] | None,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "auto",
    step_fn: StepFn | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    num_classes: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_epoch_end: Callable[[int, History], None] | None = None,
    evaluate_fn: Callable[..., dict[str, Any]] | None = None,
    is_main: bool = True,
) -> History:
    """Train for ``cfg.epochs`` epochs with validation, early stopping and checkpoints; returns the History.

    - Seeds everything with ``cfg.seed`` at the start of a fresh run; the training data order of
      each epoch is a function of ``(cfg.seed, epoch)`` (:func:`seed_loader_for_epoch`).
    - ``checkpoint_path``: a resumable checkpoint is written atomically after every
      ``cfg.checkpoint_every_epochs`` epochs (and after the last). With ``resume=True`` and an
      existing file, training continues after the saved epoch: on CPU the final weights equal
      those of an uninterrupted run.
    - Early stopping (``cfg.early_stopping_patience``) watches ``cfg.early_stopping_metric``
      and restores the best epoch's weights at the end.
    - ``num_classes`` for evaluation defaults to the model's ``num_classes`` attribute.
    - ``on_epoch_end(epoch, history)`` is called after each epoch (after its checkpoint).
    - Data parallel runs (:mod:`vidlab.dist`): ``evaluate_fn`` replaces :func:`evaluate` for
      validation (same arguments and result, e.g. a sharded evaluation gathered across
      processes); only the process with ``is_main=True`` writes checkpoints, and every process
      resumes from the same file.
    """
    device = get_device(device) if isinstance(device, (str, type(None))) else device
    model.to(device)
    if val_loader is None and cfg.early_stopping_patience is not None:
        raise ValueError("fit: early_stopping_patience is set but val_loader is None")
    if num_classes is None and val_loader is not None:
        num_classes = getattr(unwrap_model(model), "num_classes", None)
        if num_classes is None:
            raise ValueError(f"fit: pass num_classes=, {type(model).__name__} has no num_classes attribute")
    if not hasattr(train_loader, "__len__"):
        raise ValueError("fit: train_loader must have a length (the schedule needs the steps per epoch)")

    steps_per_epoch = math.ceil(len(train_loader) / cfg.accum_steps)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    resuming = bool(resume and checkpoint_path is not None and checkpoint_path.is_file())
    if not resuming:
        set_seed(cfg.seed)

    if optimizer is None:
        optimizer = build_optimizer(
            model, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
            betas=cfg.betas,
        )
    scheduler = build_scheduler(optimizer, cfg.scheduler, warmup_steps=warmup_steps, total_steps=total_steps,
                                min_lr_ratio=cfg.min_lr_ratio)
    scaler = make_scaler(cfg, device)

    history = History()
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    global_step = 0
    early = cfg.early_stopping_patience is not None
    if resuming:
        checkpoint = load_checkpoint_into(
            checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        saved_cfg = checkpoint.get("config") or {}
        current_cfg = to_primitives(cfg, where="config")
        changed = sorted(k for k in current_cfg if k in saved_cfg and saved_cfg[k] != current_cfg[k])
        if changed:
            warnings.warn(
                f"resuming {checkpoint_path} with a different TrainConfig ({', '.join(changed)}); "
                "the result will not match an uninterrupted run",
                stacklevel=2,
            )
        history = History.from_dict(checkpoint["history"] or {})
        start_epoch = checkpoint["epoch"] + 1
        global_step = checkpoint["step"]
        best_state = (checkpoint.get("extra") or {}).get("best_state")
        if progress:
            print(f"resumed from {checkpoint_path} after epoch {checkpoint['epoch']} ({global_step} steps)")

    def save(epoch: int) -> None:
        extra = {"best_state": best_state} if early and best_state is not None else {}
        save_checkpoint(
            checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
            epoch=epoch, step=global_step, config=cfg, history=history, extra=extra,
        )

    for epoch in range(start_epoch, cfg.epochs):
        if history.stopped_early:
            break
        seed_loader_for_epoch(train_loader, cfg.seed, epoch)
        train = train_one_epoch(
            model, train_loader, optimizer, scheduler, cfg=cfg, device=device, epoch=epoch, scaler=scaler,
            step_fn=step_fn, progress=progress, global_step=global_step,
        )
        global_step += train["steps"]
        if val_loader is not None:
            val = (evaluate_fn or evaluate)(
                model, val_loader, device=device, num_classes=num_classes, amp=cfg.amp, amp_dtype=cfg.amp_dtype,
                progress=progress,
            )
        else:
            val = {"loss": float("nan"), "top1": float("nan"), "top5": float("nan")}
        history.epoch.append(epoch)
        history.train_loss.append(train["loss"])
        history.train_top1.append(train["top1"])
        history.val_loss.append(val["loss"])
        history.val_top1.append(val["top1"])
        history.val_top5.append(val["top5"])
        history.lr.append(train["lr"])
        history.epoch_seconds.append(train["seconds"])
        history.skipped_steps.append(train["skipped_steps"])

        if early:
            metric = cfg.early_stopping_metric
            if not hasattr(history, metric) or not isinstance(getattr(history, metric), list):
                raise ValueError(f"TrainConfig.early_stopping_metric={metric!r} is not a History list field")
            value = float(getattr(history, metric)[-1])
            if _improved(metric, value, history.best_metric, cfg.early_stopping_min_delta):
                history.best_metric, history.best_epoch = value, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}
            elif history.best_epoch is not None and epoch - history.best_epoch >= cfg.early_stopping_patience:
                history.stopped_early = True
        if progress:
            print(
                f"epoch {epoch}: train loss {train['loss']:.4f} top1 {train['top1']:.3f} | "
                f"val loss {val['loss']:.4f} top1 {val['top1']:.3f} | lr {train['lr']:.2e} | "
                f"{train['seconds']:.1f}s" + (f" | skipped {train['skipped_steps']}" if train["skipped_steps"] else "")
            )
        last = epoch + 1 == cfg.epochs or history.stopped_early
        if is_main and checkpoint_path is not None and ((epoch + 1) % cfg.checkpoint_every_epochs == 0 or last):
            save(epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)

    if early and best_state is not None:
        unwrap_model(model).load_state_dict(best_state)
    if not early and val_loader is not None and history.epoch:
        watched = [(-math.inf if math.isnan(v) else v) for v in history.val_top1]
        best_index = max(range(len(watched)), key=watched.__getitem__)
        history.best_epoch, history.best_metric = history.epoch[best_index], history.val_top1[best_index]
    return history
