"""The training run behind ``python -m vidlab train``: model, sharded data, DDP, ``fit``, gathered test.

:func:`train` runs in every process (one, or each of torchrun's workers) after the settings
were checked (:func:`vidlab.dist.cli.validate`) and the process group joined. Only rank 0
writes files: ``checkpoint.pt`` (through ``fit``), ``model.pt``, ``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vidlab.dist.comm import ddp_bucket_sizes, gradient_bytes
from vidlab.dist.env import DistEnv
from vidlab.dist.evaluate import sharded_evaluate
from vidlab.dist.sampling import DistributedItemSampler, SeededItems, ShardSampler
from vidlab.utils import atomic_path, set_seed

log = logging.getLogger("vidlab.train")


class SettingsError(ValueError):
    """A setting of ``python -m vidlab train`` that cannot work (found before any training starts)."""


def build_model(args: argparse.Namespace, settings: dict[str, Any]) -> tuple[nn.Module, int, int]:
    """The model (seeded by ``--seed``, so every process builds the same weights) and its clip geometry."""
    from vidlab.models import create_model

    kwargs = dict(settings["model_kwargs"])
    for name in ("num_frames", "img_size"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    set_seed(args.seed)
    try:
        model = create_model(args.model, num_classes=len(settings["classes"]), **kwargs)
    except TypeError as exc:
        raise SettingsError(f"--model {args.model} does not take these arguments {sorted(kwargs)}: {exc}") from None
    cfg = getattr(model, "default_cfg", {}) or {}
    num_frames = args.num_frames or cfg.get("num_frames")
    img_size = args.img_size or cfg.get("img_size")
    if isinstance(img_size, (tuple, list)):
        img_size = int(img_size[-1])
    if not num_frames or not img_size:
        raise SettingsError(f"--model {args.model} does not say its clip size; pass --num-frames and --img-size")
    return model, int(num_frames), int(img_size)


def build_loaders(args: argparse.Namespace, settings: dict[str, Any], env: DistEnv, num_frames: int,
                  img_size: int) -> tuple[Any, Any, Any]:
    """Training loader (``DistributedItemSampler``, seeded items) and sharded val / test loaders."""
    from vidlab.data.datasets import VideoDataset, VideoLoader, collate_videos
    from vidlab.data.transforms import eval_transform, train_transform
    from vidlab.utils import seed_worker

    common = dict(num_frames=num_frames, stride=args.stride, labeled_only=True, max_per_class=args.max_per_class,
                  seed=args.seed)
    train_ds = VideoDataset(settings["manifest"], split=args.train_split, sampler="random",
                            transform=train_transform(size=img_size, scale=(args.crop_scale_min, 1.0), hflip=args.hflip,
                                                      color_jitter=args.color_jitter), **common)
    items = SeededItems(train_ds, seed=args.seed)
    sampler = DistributedItemSampler(items, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=args.seed)
    b = settings["batch_size"]
    train_loader = VideoLoader(items, batch_size=b, sampler=sampler, num_workers=args.workers,
                               collate_fn=collate_videos, worker_init_fn=seed_worker,
                               pin_memory=env.device.type == "cuda")
    evaluation = eval_transform(size=img_size, resize=img_size)

    def sharded(split: str, **kw: Any):
        if not split:
            return None
        ds = VideoDataset(settings["manifest"], split=split, transform=evaluation, **common, **kw)
        shard = ShardSampler(len(ds), num_replicas=env.world_size, rank=env.rank)
        return VideoLoader(ds, batch_size=b, sampler=shard, num_workers=args.workers, collate_fn=collate_videos,
                           worker_init_fn=seed_worker)

    val_loader = sharded(args.val_split, sampler="center")
    test_loader = sharded(args.test_split, sampler="multi", num_clips=args.test_views)
    return train_loader, val_loader, test_loader


def wrap_model(model: nn.Module, env: DistEnv, args: argparse.Namespace) -> tuple[nn.Module, str]:
    """DDP around the model when there are several processes; BatchNorm handled per device.

    ``SyncBatchNorm`` only runs on GPUs: on CUDA BatchNorm layers are converted (batch
    statistics over all processes); on CPU each process normalises with its own batch.
    """
    model.to(env.device)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    note = ""
    if not env.distributed:
        return model, note
    if has_bn and env.device.type == "cuda" and not args.no_sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        note = "BatchNorm -> SyncBatchNorm: batch statistics over all processes"
    elif has_bn:
        note = ("BatchNorm keeps per-process batch statistics (SyncBatchNorm needs CUDA); running statistics "
                "follow rank 0, which DDP broadcasts before every forward")
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[env.device.index] if env.device.type == "cuda" else None, bucket_cap_mb=args.bucket_cap_mb)
    return ddp, note


def _crash_step(epoch: int, rank: int, env: DistEnv):
    from vidlab.train.engine import default_step

    def step(model, batch, ctx):
        if ctx.epoch == epoch and ctx.step == 1 and env.rank == rank and env.restart_count == 0:
            log.error("fault drill: rank %d kills itself (SIGKILL) in epoch %d, step %d", rank, epoch, ctx.step)
            for handler in logging.getLogger().handlers + log.handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return default_step(model, batch, ctx)

    return step


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` written atomically (readers never see half a file)."""
    with atomic_path(path, fsync=False) as tmp:
        tmp.write_text(json.dumps(_jsonable(metrics), indent=1), encoding="utf-8")


def _eval_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("top1", "top5", "clip_top1", "loss", "num_videos", "num_clips",
                                   "confusion_matrix", "shard_sizes") if k in result}


def train(args: argparse.Namespace, env: DistEnv, settings: dict[str, Any]) -> dict[str, Any]:
    """Train, validate and test with the settings from :func:`validate`; returns the metrics (all ranks)."""
    from vidlab.models import save_model
    from vidlab.train.engine import History, TrainConfig, fit
    from vidlab.train.optim import build_optimizer

    out: Path = settings["output_dir"]
    model, num_frames, img_size = build_model(args, settings)
    num_classes = len(settings["classes"])
    train_loader, val_loader, test_loader = build_loaders(args, settings, env, num_frames, img_size)
    model, bn_note = wrap_model(model, env, args)
    if bn_note:
        log.info(bn_note)
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    optimizer = build_optimizer(plain, name=args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer,
                      warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                      clip_grad_norm=args.clip_grad_norm, amp=args.amp, amp_dtype=args.amp_dtype, seed=args.seed)

    checkpoint: Path = settings["checkpoint"]
    have = checkpoint.is_file() and (args.resume or env.restart_count > 0)
    if env.distributed:  # every process must resume from the same file, or none
        seen: list[Any] = [None] * env.world_size
        dist.all_gather_object(seen, bool(have))
        if any(seen) and not all(seen):
            missing = [r for r, s in enumerate(seen) if not s]
            raise RuntimeError(f"ranks {missing} cannot see {checkpoint}; with several machines --output-dir must "
                               "be a folder every machine reads (a shared file system)")
    samples_per_epoch = len(train_loader.sampler) * env.world_size  # type: ignore[arg-type]
    log.info("%s: %d process(es) on %s (backend %s, %d node(s)), batch %d per process = %d global, "
             "%d training clips per epoch, %d steps per epoch, %d torch threads per process%s",
             args.model, env.world_size, env.device, env.backend or "none", env.num_nodes, settings["batch_size"],
             settings["batch_size"] * env.world_size, samples_per_epoch, len(train_loader), torch.get_num_threads(),
             f"; resuming from {checkpoint}" if have else "")

    metrics: dict[str, Any] = {
        "model": args.model, "model_kwargs": settings["model_kwargs"], "world_size": env.world_size,
        "num_nodes": env.num_nodes, "backend": env.backend, "device": str(env.device),
        "batch_size_per_process": settings["batch_size"], "global_batch_size": settings["batch_size"] * env.world_size,
        "num_frames": num_frames, "img_size": img_size, "stride": args.stride, "epochs": args.epochs,
        "steps_per_epoch": len(train_loader), "train_clips_per_epoch": samples_per_epoch,
        "threads_per_process": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "restart_count": env.restart_count, "resumed": bool(have), "gradient_bytes": gradient_bytes(plain),
        "classes": settings["classes"], "batchnorm_note": bn_note,
    }

    def on_epoch_end(epoch: int, history: History) -> None:
        seconds = history.epoch_seconds[-1]
        clips_per_s = samples_per_epoch / seconds if seconds > 0 else float("nan")
        # the history holds this process's training loss / top-1; every shard has as many samples,
        # so the mean over processes is the loss / top-1 over all training clips of the epoch
        train_stats = torch.tensor([history.train_loss[-1], history.train_top1[-1]], dtype=torch.float64)
        if env.distributed:
            train_stats = train_stats.to(env.device)
            dist.all_reduce(train_stats)
            train_stats = train_stats.cpu() / env.world_size
        loss, top1 = (float(v) for v in train_stats)
        for key, value in (("clips_per_s_per_epoch", clips_per_s), ("train_loss", loss), ("train_top1", top1)):
            metrics.setdefault(key, []).append(value)
        metrics.update(history=history.as_dict(), clips_per_s=clips_per_s)
        log.info("epoch %d: train loss %.4f top1 %.3f | val loss %.4f top1 %.3f | lr %.2e | %.1f s, %.1f clips/s",
                 epoch, loss, top1, history.val_loss[-1], history.val_top1[-1], history.lr[-1], seconds, clips_per_s)
        if env.is_main:
            write_metrics(out / "metrics.json", metrics)

    step_fn = _crash_step(args.crash_at_epoch, args.crash_rank, env) if args.crash_at_epoch is not None else None
    t0 = time.perf_counter()
    history = fit(model, train_loader, val_loader, cfg, device=env.device, step_fn=step_fn, checkpoint_path=checkpoint,
                  resume=have, progress=args.progress and env.is_main, num_classes=num_classes, optimizer=optimizer,
                  on_epoch_end=on_epoch_end, evaluate_fn=sharded_evaluate, is_main=env.is_main)
    metrics["train_seconds"] = time.perf_counter() - t0
    metrics["history"] = history.as_dict()
    metrics["bucket_sizes"] = ddp_bucket_sizes(model) if env.distributed else []
    if history.val_top1:
        metrics["val_top1"] = history.val_top1[-1]
    if test_loader is not None:
        test = sharded_evaluate(model, test_loader, device=env.device, num_classes=num_classes, amp=args.amp,
                                amp_dtype=args.amp_dtype)
        metrics["test"] = _eval_summary(test)
        metrics["test_top1"] = test["top1"]
        log.info("test: top1 %.4f over %d videos (%d views each), shards %s", test["top1"], test["num_videos"],
                 args.test_views, test.get("shard_sizes", [test["num_videos"]]))
    if env.is_main:
        from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD

        save_model(plain, out / "model.pt", class_names=settings["classes"], mean=DEFAULT_MEAN, std=DEFAULT_STD,
                   num_frames=num_frames, img_size=img_size, frame_stride=args.stride,
                   meta={"trained_by": "python -m vidlab train", "world_size": env.world_size,
                         "test_top1": metrics.get("test_top1")})
        write_metrics(out / "metrics.json", metrics)
        log.info("wrote %s, %s and %s", out / "checkpoint.pt", out / "model.pt", out / "metrics.json")
    return metrics
