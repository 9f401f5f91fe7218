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
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from vidlab.dist.env import DistEnv, init_distributed, read_env, shutdown
from vidlab.dist.trainer import SettingsError, train

log = logging.getLogger("vidlab.train")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m vidlab train`` (``argv`` without the ``train`` word); returns the exit code.

    Under torchrun an uncaught error is also written where torchrun's failure summary finds it.
    """
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return record(_main)(argv)
    return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
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
