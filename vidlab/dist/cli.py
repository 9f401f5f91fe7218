r"""``python -m vidlab train``: train a registered model on a manifest dataset, alone or under torchrun.

One process::

    python -m vidlab train --model vit_test --data-dir data/synthetic-smoke --epochs 2 \
        --batch-size 8 --output-dir runs/train

Two processes on one machine (DDP; gloo on CPU, nccl on GPUs; ``--batch-size`` is per process)::

    torchrun --nproc_per_node 2 -m vidlab train --model vit_test --data-dir data/synthetic-smoke \
        --batch-size 4 --output-dir runs/train_ddp

Two machines: the same line on each with ``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint
HOST:PORT --rdzv-id JOB`` (and an ``--output-dir`` both can read). With ``--max-restarts 3``
torchrun restarts the workers after one dies, and they continue from the last checkpoint;
``--resume`` does the same for a run started again by hand.

Writes to ``--output-dir``: ``checkpoint.pt`` (resumable, after every epoch, by rank 0, atomically),
``model.pt`` (:func:`vidlab.models.save_model`), ``metrics.json`` and ``train.log``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from vidlab.dist.comm import ddp_bucket_sizes, gradient_bytes
from vidlab.dist.env import DistEnv, init_distributed, read_env, shutdown
from vidlab.dist.evaluate import sharded_evaluate
from vidlab.dist.sampling import DistributedItemSampler, SeededItems, ShardSampler
from vidlab.utils import atomic_path, set_seed

log = logging.getLogger("vidlab.train")


class SettingsError(ValueError):
    """A setting of ``python -m vidlab train`` that cannot work (found before any training starts)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vidlab train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True, help="a registered model name (vidlab.models.list_models())")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor argument (Python literal), e.g. global_pool='max'; repeatable")
    g.add_argument("--data-dir", required=True, help="folder holding manifest.csv (or the manifest itself)")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val", help="validated after every epoch; '' for none")
    g.add_argument("--test-split", default="test", help="scored at the end (multi-view); '' for none")
    g.add_argument("--max-per-class", type=int, default=None, help="use at most this many videos per class and split")
    g.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the model's)")
    g.add_argument("--img-size", type=int, default=None, help="clip height and width (default: the model's)")
    g.add_argument("--stride", type=int, default=2, help="native frames between sampled frames")
    g.add_argument("--test-views", type=int, default=3, help="clips per test video (video-level accuracy)")
    g.add_argument("--crop-scale-min", type=float, default=0.8,
                   help="training crops keep this much of the area, or more")
    g.add_argument("--color-jitter", type=float, default=0.0)
    g.add_argument("--hflip", action="store_true", help="random horizontal flips (not for direction labels)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=10)
    b = t.add_mutually_exclusive_group()
    b.add_argument("--batch-size", type=int, default=None, help="clips per step PER PROCESS (default 8)")
    b.add_argument("--global-batch-size", type=int, default=None, help="clips per step over all processes")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    t.add_argument("--warmup-epochs", type=float, default=0.0)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--clip-grad-norm", type=float, default=None)
    t.add_argument("--amp", action="store_true", help="autocast (bfloat16 unless --amp-dtype float16)")
    t.add_argument("--amp-dtype", default="bfloat16", choices=("bfloat16", "float16"))
    t.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt if it exists")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda (each worker takes cuda:LOCAL_RANK)")
    r.add_argument("--threads", type=int, default=None, help="torch threads per process (default: OMP_NUM_THREADS)")
    r.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a collective waits for the other processes before failing")
    r.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP gradient bucket size")
    r.add_argument("--no-sync-bn", action="store_true", help="on CUDA, keep BatchNorm per process")
    r.add_argument("--progress", action="store_true", help="progress bars (rank 0)")
    r.add_argument("--crash-at-epoch", type=int, default=None,
                   help="fault drill: --crash-rank kills itself (SIGKILL) in this epoch, on the first attempt only")
    r.add_argument("--crash-rank", type=int, default=0)
    return p


# --------------------------------------------------------------------------- settings


def _parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    import ast

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SettingsError(f"--model-arg {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out


def _check_split(rows: list, split: str, manifest: Path, max_per_class: int | None) -> int:
    n = sum(1 for r in rows if r.split == split and r.label >= 0)
    if n == 0:
        have = sorted({r.split for r in rows})
        raise SettingsError(f"{manifest}: no labelled rows in split {split!r}; splits present: {', '.join(have)}")
    if max_per_class is not None:
        per_class: dict[int, int] = {}
        for r in rows:
            if r.split == split and r.label >= 0:
                per_class[r.label] = min(max_per_class, per_class.get(r.label, 0) + 1)
        n = sum(per_class.values())
    return n


def validate(args: argparse.Namespace, env: DistEnv, *, check_output: bool = True) -> dict[str, Any]:
    """Check every setting against the world size, the manifest and the output folder.

    Runs in each process before it joins the process group, so a wrong setting stops the run
    with one clear message before any training. Returns the resolved values.
    ``check_output=False`` skips the output-folder check (to rebuild a finished run's data).
    """
    from vidlab.data.manifest import ManifestError, class_names, manifest_path, read_manifest
    from vidlab.models.registry import UnknownModelError, model_entrypoint

    try:
        model_entrypoint(args.model)
    except UnknownModelError as exc:
        raise SettingsError(f"--model: {exc}") from None
    manifest = manifest_path(args.data_dir)
    if not manifest.is_file():
        raise SettingsError(f"--data-dir {args.data_dir}: no manifest.csv there ({manifest} does not exist)")
    try:
        rows = read_manifest(manifest)
    except (ManifestError, OSError, ValueError) as exc:
        raise SettingsError(f"--data-dir: cannot read {manifest}: {exc}") from None
    counts = {"train": _check_split(rows, args.train_split, manifest, args.max_per_class)}
    for name in ("val", "test"):
        split = getattr(args, f"{name}_split")
        if split:
            counts[name] = _check_split(rows, split, manifest, args.max_per_class)

    world = env.world_size
    if args.global_batch_size is not None:
        if args.global_batch_size < 1 or args.global_batch_size % world:
            raise SettingsError(f"--global-batch-size {args.global_batch_size} does not divide into {world} "
                                f"process(es); use a multiple of {world} or --batch-size per process")
        batch = args.global_batch_size // world
    else:
        batch = 8 if args.batch_size is None else args.batch_size
    if batch < 1:
        raise SettingsError(f"--batch-size must be >= 1, got {batch}")
    if counts["train"] < world:
        raise SettingsError(f"split {args.train_split!r} has {counts['train']} videos, "
                            f"fewer than the {world} processes")
    for name, value, low in (("--epochs", args.epochs, 1), ("--stride", args.stride, 1),
                             ("--test-views", args.test_views, 1), ("--workers", args.workers, 0)):
        if value < low:
            raise SettingsError(f"{name} must be >= {low}, got {value}")
    if not args.lr > 0:
        raise SettingsError(f"--lr must be > 0, got {args.lr}")
    if not args.timeout > 0:
        raise SettingsError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.crash_at_epoch is not None and not 0 <= args.crash_rank < world:
        raise SettingsError(f"--crash-rank {args.crash_rank} is not a rank of this {world}-process run")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"--device {args.device}: no CUDA GPU is visible; use auto or cpu")
    out = Path(args.output_dir)
    checkpoint = out / "checkpoint.pt"
    if check_output and checkpoint.exists() and not args.resume and env.restart_count == 0:
        raise SettingsError(f"{checkpoint} exists: pass --resume to continue that run, or choose another --output-dir")
    return {"model_kwargs": _parse_model_args(args.model_arg), "batch_size": batch, "classes": class_names(rows),
            "manifest": manifest, "counts": counts, "checkpoint": checkpoint, "output_dir": out}


# --------------------------------------------------------------------------- building blocks


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


def build_loaders(args: argparse.Namespace, settings: dict[str, Any], env: DistEnv, num_frames: int, img_size: int):
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


def _setup_logging(env: DistEnv, out: Path) -> None:
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    fmt = logging.Formatter(f"[rank {env.rank}] %(message)s" if env.distributed else "%(message)s")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if env.is_main else logging.WARNING)
    log.addHandler(console)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(out / "train.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(fh)


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


# --------------------------------------------------------------------------- the run


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


@record
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vidlab train`` (``argv`` without the ``train`` word); returns the exit code."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        env = read_env()
        settings = validate(args, env)
    except (SettingsError, ValueError) as exc:
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            print(f"python -m vidlab train: error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    env = init_distributed(env, device=args.device, timeout_s=args.timeout)
    _setup_logging(env, settings["output_dir"])
    try:
        train(args, env, settings)
    except SettingsError as exc:
        log.error("python -m vidlab train: error: %s", exc)
        return 2
    finally:
        shutdown()
    return 0
