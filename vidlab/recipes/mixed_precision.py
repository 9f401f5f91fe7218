"""Settings and lesson functions of notebook 06 (mixed-precision training and training memory).

The lesson model is a video ViT whose width and token count are settings, because whether bf16
pays on a CPU depends on them: AMX tiles only win once the matrix products are large enough.
Every training run and every timed step goes through the one engine
(:func:`vidlab.train.fit` / :func:`~vidlab.train.train_one_epoch`); precisions are
``TrainConfig(amp=..., amp_dtype=...)`` and, on CUDA, TF32 matmuls for fp32.

Layouts: clips ``(C, T, H, W)``, batches ``(B, C, T, H, W)``; test batches ``(B, V, C, T, H, W)``.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from vidlab.data.cache import cached_loader
from vidlab.data.clips import ClipData, load_clip_data
from vidlab.models import create_model
from vidlab.models.vit import VideoViT
from vidlab.recipes.lessons import Lesson
from vidlab.train.engine import TrainConfig, evaluate, fit
from vidlab.train.memory import peak_step_memory
from vidlab.train.precision import TimedRun, tf32_matmuls, time_training_steps


@dataclass(frozen=True)
class MixedPrecisionSettings:
    """06_mixed_precision."""

    num_frames: int = 8  # frames per clip
    stride: int = 2  # native frames between sampled frames
    clip_size: int = 32  # crop size fed to the model
    width: int = 256  # embedding width of the lesson ViT
    depth: int = 2  # transformer blocks
    patch_size: int = 4  # 4x4-px patches x 2-frame tubelets: 256 tokens per 8x32x32 clip
    tubelet_size: int = 2
    global_pool: str = "max"  # token pooling of the head
    batch_size: int = 32
    epochs: int = 3  # fp32 and bf16 training runs
    lr: float = 1e-3
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    fp16_steps: int | None = 4  # optimizer steps of the fp16 run (None: the full recipe)
    test_views: int = 2  # clips per test video
    timing_repeats: int = 3  # interleaved timed steps per configuration
    curve_widths: tuple[int, ...] = (64, 128, 192, 256, 384, 512)
    curve_patch_sizes: tuple[int, ...] = (8, 4)  # 64 and 256 tokens per 8x32x32 clip
    curve_depth: int = 2
    curve_batch_size: int = 16
    scaler_width: int = 32  # the small ViT of the loss-scaling run (fp16 is slow on a CPU)
    scaler_batch_size: int = 4
    scaler_steps: int = 24
    scaler_growth_interval: int = 6  # clean steps before the scale doubles (torch's default: 2000)
    overflow_step: int = 15  # the step whose gradient is made to overflow
    accum_micro_batches: int = 4
    channels_last_model: str = "x3d_mini"  # a 3D CNN with depthwise convolutions, at the lesson's clip size
    channels_last_batch: int = 4
    decode_workers: int = 2


PRESETS: dict[str, MixedPrecisionSettings] = {
    "smoke": MixedPrecisionSettings(
        num_frames=4, width=64, depth=2, patch_size=8, batch_size=8, epochs=1, fp16_steps=2, test_views=1,
        timing_repeats=1, curve_widths=(32, 64), curve_patch_sizes=(8,), curve_depth=1, curve_batch_size=4,
        scaler_width=32, scaler_batch_size=2, scaler_steps=6, scaler_growth_interval=2, overflow_step=4, accum_micro_batches=2,
        channels_last_model="test_x3d", channels_last_batch=2,
    ),
    "cpu": MixedPrecisionSettings(),
    "gpu": MixedPrecisionSettings(
        num_frames=16, clip_size=112, width=384, depth=12, patch_size=16, batch_size=64, epochs=20, fp16_steps=None,
        test_views=3, timing_repeats=10, curve_widths=(128, 256, 384, 512, 768, 1024), curve_patch_sizes=(16, 8),
        curve_depth=4, curve_batch_size=32, scaler_width=192, scaler_batch_size=32, scaler_steps=200, scaler_growth_interval=50,
        overflow_step=120, channels_last_batch=16, decode_workers=8,
    ),
}

LESSONS: tuple[Lesson, ...] = (
    Lesson("bf16_step_speedup", ">=", 1.5, why="at width >= 256 the AMX tiles make bf16 autocast pay"),
    Lesson("top1_bf16", ">=", "top1_fp32", -0.015, why="bf16 training costs no accuracy"),
    Lesson("fp16_underflow_fraction_scaled", "<", "fp16_underflow_fraction_unscaled",
           why="a loss scale lifts small gradients above fp16's underflow"),
    Lesson("checkpointing_memory_ratio", "<=", 0.6, why="checkpointing cuts activation memory by at least 40 %"),
    Lesson("accumulation_max_abs_diff", "<", 1e-5, why="accumulated micro-batches give the large-batch update"),
    Lesson("fp16_scaler_matches_torch", ">=", 1, why="the hand-written GradScaler makes torch's decisions",
           presets=("smoke", "cpu", "gpu")),
)

# precision name -> (amp, amp_dtype, TF32 matmuls on CUDA)
PRECISIONS: dict[str, tuple[bool, str, bool]] = {
    "fp32": (False, "bfloat16", False),
    "tf32": (False, "bfloat16", True),
    "bf16": (True, "bfloat16", False),
    "fp16": (True, "float16", False),
}


def skip_reason(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` is not measured on ``device`` (``None``: it is)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        return "TF32 is a tensor-core mode of NVIDIA GPUs (Ampere and later); a CPU has no TF32 matmuls"
    return None


def precision_config(precision: str, **fields: Any) -> TrainConfig:
    """A ``TrainConfig`` whose ``amp`` / ``amp_dtype`` select ``precision`` (a :data:`PRECISIONS` name)."""
    amp, amp_dtype, _ = PRECISIONS[precision]
    return TrainConfig(amp=amp, amp_dtype=amp_dtype, **fields)


def train_config(s: MixedPrecisionSettings, precision: str, **changes: Any) -> TrainConfig:
    """The lesson's recipe in ``precision``; ``changes`` override fields."""
    return precision_config(precision, **{"epochs": s.epochs, "lr": s.lr, "warmup_epochs": s.warmup_epochs,
                                          "label_smoothing": s.label_smoothing, **changes})


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """A fresh context manager for ``precision``: TF32 matmuls on or off on CUDA, nothing on a CPU."""
    return tf32_matmuls(PRECISIONS[precision][2]) if device.type == "cuda" else contextlib.nullcontext()


def load_data(data_dir: str | os.PathLike, s: MixedPrecisionSettings, *, progress: bool = True) -> ClipData:
    """Train / val / test clips at the lesson's geometry; decoded once (and cached on disk)."""
    return load_clip_data(data_dir, num_frames=s.num_frames, stride=s.stride, size=s.clip_size,
                          test_views=s.test_views, color_jitter=0.0, crop_scale=(0.8, 1.0),
                          workers=s.decode_workers, progress=progress)


def lesson_model(s: MixedPrecisionSettings, num_classes: int, *, width: int | None = None,
                 patch_size: int | None = None, depth: int | None = None) -> VideoViT:
    """The lesson ViT (``width`` / ``patch_size`` / ``depth`` default to the settings'); one head per 64 channels."""
    width = width or s.width
    return VideoViT(img_size=s.clip_size, num_frames=s.num_frames, tubelet_size=s.tubelet_size,
                    patch_size=patch_size or s.patch_size, embed_dim=width, depth=depth or s.depth,
                    num_heads=max(1, width // 64), num_classes=num_classes, global_pool=s.global_pool)


def train_precision(model: nn.Module, data: ClipData, s: MixedPrecisionSettings, precision: str, *,
                    device: torch.device, seed: int = 0, max_steps: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Train ``model`` with the lesson's recipe in ``precision`` (at most ``max_steps`` optimizer steps:
    a random subset of that many batches, one epoch), then test it **in fp32**, so the runs differ
    only in how they were trained. Returns ``test_top1``, ``steps``, ``train_seconds``, ``history``."""
    train = data.train
    cfg = train_config(s, precision, seed=seed)
    if max_steps is not None:
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(train), generator=g)[: max_steps * s.batch_size].tolist()
        train = torch.utils.data.Subset(train, keep)
        cfg = replace(cfg, epochs=1, warmup_epochs=0.0)
    loader = cached_loader(train, batch_size=s.batch_size, shuffle=True, seed=seed, drop_last=True)
    test_loader = cached_loader(data.test, batch_size=s.batch_size)
    start = time.perf_counter()
    with precision_context(precision, device):
        history = fit(model, loader, None, cfg, device=device, progress=progress)
    seconds = time.perf_counter() - start
    with precision_context("fp32", device):
        test = evaluate(model, test_loader, device=device, num_classes=data.num_classes, progress=False)
    return {"test_top1": float(test["top1"]), "steps": len(loader) * cfg.epochs, "train_seconds": seconds,
            "history": history, "skipped_steps": sum(history.skipped_steps)}


def step_table(models: dict[str, nn.Module], batch: dict[str, torch.Tensor], *, precisions: tuple[str, ...],
               channels_last: tuple[bool, ...] = (False,), device: torch.device, repeats: int = 3,
               memory: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """Seconds per training step (and, if ``memory``, the measured peak of one step) of every model x
    precision x memory layout, timed interleaved in one :func:`time_training_steps` call.

    ``batch``: ``video`` ``(B, C, T, H, W)``, ``label`` ``(B,)``. Rows: ``model``, ``precision``,
    ``channels_last``, ``step_ms``, ``speedup`` (vs the same model's fp32, contiguous layout),
    ``peak_mib``, ``activations_mib``; rows skipped on this device carry ``skipped`` (the reason).
    """
    runs: dict[str, TimedRun] = {}
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        for precision in precisions:
            for cl in channels_last:
                row = {"model": name, "precision": precision, "channels_last": cl}
                reason = skip_reason(precision, device)
                if reason:
                    rows.append({**row, "skipped": reason})
                    continue
                fmt = torch.channels_last_3d if cl else torch.contiguous_format
                work = copy.deepcopy(model).to(device=device, memory_format=fmt)
                b = {"video": batch["video"].to(device).contiguous(memory_format=fmt), "label": batch["label"]}
                cfg = precision_config(precision, epochs=1, lr=1e-4)
                key = f"{name}|{precision}|{cl}"
                slow = precision == "fp16" and device.type != "cuda"  # no fp16 matrix units: time it once
                runs[key] = TimedRun(work, cfg, [b], lambda p=precision: precision_context(p, device),
                                     repeats=1 if slow else None)
                rows.append({**row, "key": key, "cfg": cfg, "batch": b})
    times = time_training_steps(runs, [], device=device, repeats=repeats, progress=progress)
    for row in rows:
        key = row.pop("key", None)
        cfg, b = row.pop("cfg", None), row.pop("batch", None)
        if key is None:
            continue
        row["step_ms"] = 1000 * times[key]["step_s"]
        if memory:
            with precision_context(row["precision"], device):
                peak = peak_step_memory(runs[key].model, b, cfg, device=device)
            row["peak_mib"], row["activations_mib"] = peak["total"], peak["activations"]
    for row in rows:
        base = next((r for r in rows if r["model"] == row["model"] and r["precision"] == "fp32"
                     and not r["channels_last"] and "step_ms" in r), None)
        if "step_ms" in row and base is not None:
            row["speedup"] = base["step_ms"] / row["step_ms"]
    return rows


def speedup_curve(s: MixedPrecisionSettings, batch: dict[str, torch.Tensor], num_classes: int, *,
                  device: torch.device, progress: bool = False) -> list[dict[str, Any]]:
    """bf16-autocast over fp32 step-time speed-up of ``curve_depth``-block ViTs for every width in
    ``curve_widths`` and token count (``curve_patch_sizes``), fp32 and bf16 timed interleaved.
    ``batch`` holds ``curve_batch_size`` clips. Rows: ``width``, ``tokens``, ``fp32_ms``, ``bf16_ms``, ``speedup``."""
    runs: dict[str, TimedRun] = {}
    shapes = []
    for patch in s.curve_patch_sizes:
        for width in s.curve_widths:
            model = lesson_model(s, num_classes, width=width, patch_size=patch, depth=s.curve_depth)
            shapes.append((width, model.num_patches, patch))
            for precision in ("fp32", "bf16"):
                cfg = replace(train_config(s, precision), lr=1e-4)
                runs[f"{width}|{patch}|{precision}"] = TimedRun(model if precision == "fp32" else copy.deepcopy(model), cfg)
    times = time_training_steps(runs, [batch], device=device, repeats=s.timing_repeats, progress=progress,
                                desc="speed-up curve")
    rows = []
    for width, tokens, patch in shapes:
        fp32, bf16 = times[f"{width}|{patch}|fp32"]["step_s"], times[f"{width}|{patch}|bf16"]["step_s"]
        rows.append({"width": width, "tokens": tokens, "fp32_ms": 1000 * fp32, "bf16_ms": 1000 * bf16,
                     "speedup": fp32 / bf16})
    return rows


def channels_last_model(s: MixedPrecisionSettings, num_classes: int) -> nn.Module:
    """The 3D CNN of the channels-last comparison, built for the lesson's clips."""
    return create_model(s.channels_last_model, num_classes=num_classes, num_frames=s.num_frames, img_size=s.clip_size)


def tokens_per_clip(s: MixedPrecisionSettings, patch_size: int | None = None) -> int:
    """Tokens of an ``num_frames x clip_size x clip_size`` clip with the given patch size."""
    patch = patch_size or s.patch_size
    return (s.num_frames // s.tubelet_size) * math.ceil(s.clip_size / patch) ** 2
