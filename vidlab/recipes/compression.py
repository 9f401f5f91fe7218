"""Notebook 07's settings and the steps that stitch its lesson together.

Two models are compressed: notebook 03's reference ViT (Linear-heavy; :mod:`vidlab.recipes.reference`)
and a 3D CNN (Conv3d-heavy: a plain 3x3x3 CNN on CPU presets, X3D-XS on the gpu preset) trained
here on the same clips. Every variant is scored on
the same in-memory test clips (:mod:`vidlab.compress.evaluate`), timed with the one latency
helper (:func:`vidlab.compress.measure_latency`) at batch 1 and batch 8, and saved, so the
notebook and ``benchmarks/compression.py`` end with one accuracy / latency / size table.

Clips ``(B, C, T, H, W)``, normalised; logits ``(B, num_classes)``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from vidlab.compress.evaluate import EvalSet, stack_clips, top1
from vidlab.compress.latency import measure_latency
from vidlab.recipes.lessons import Lesson

__all__ = ["CompressionSettings", "PRESETS", "LESSONS", "eval_set", "calibration_batches", "train",
           "build_cnn", "build_student", "load_clips", "latency_pair", "latency_table", "file_bytes", "variant_row", "pareto_rows"]


@dataclass(frozen=True)
class CompressionSettings:
    """07_compression."""

    # the 3D CNN (registry name), built for the reference clips: a plain 3x3x3 CNN trains in a minute
    # on a CPU, where X3D's depthwise Conv3d backward pass is far slower per step; x3d_xs on a GPU
    cnn_model: str = "cnn3d_small"
    # channels per stage (None: the registry default); wide enough that convolutions, not per-call
    # overhead, set the latency, so removing channels shows as time saved
    cnn_widths: tuple[int, ...] | None = (32, 64, 128, 256)
    cnn_epochs: int = 10  # its training from scratch in this notebook
    cnn_lr: float = 3e-3
    batch_size: int = 32  # training batches (CNN, fine-tuning, students)
    eval_views: int = 1  # clips per test video in every accuracy of this notebook (1: the centre clip)
    threads: int = 2  # CPU threads for every latency measurement
    latency_repeats: int = 20  # timed calls per latency (after warm-up), median and p95 reported
    latency_warmup: int = 3
    sparsities: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)  # unstructured magnitude pruning curve
    channel_ratio: float = 0.5  # structured pruning: fraction of channels removed per layer
    prune_finetune_epochs: int = 2  # fine-tuning after structured pruning
    prune_finetune_lr: float = 1e-3
    calibration_batches: int = 8  # PT2E static int8: training batches observed
    calibration_batch_size: int = 8
    compile: bool = True  # torch.compile the fp32 and int8 models (False: skip the int8 kernels, say so)
    compile_cnn: bool = True  # also compile the 3D CNN (False at smoke: compiling costs more than the rest)
    qat_threshold_points: float = 1.0  # quantization-aware training when PTQ loses more than this (points)
    qat_epochs: int = 1
    qat_lr: float = 1e-4
    sparse24_finetune_epochs: int = 1  # fine-tuning with the 2:4 masks attached
    sparse24_lr: float = 3e-4
    student_embed_dim: int = 64  # the distilled ViT student (same tokens and head as the teacher)
    student_depth: int = 2
    student_heads: int = 2
    student_epochs: int = 5  # both students: alone and taught, same budget
    student_lr: float = 2e-3
    kd_temperature: float = 4.0
    kd_alpha: float = 0.7  # weight of the teacher's soft targets (the rest: labels)
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.5


PRESETS = {
    "smoke": CompressionSettings(cnn_model="test_cnn3d", cnn_widths=None, cnn_epochs=1, compile_cnn=False, batch_size=8, latency_repeats=3, latency_warmup=1,
                                 sparsities=(0.0, 0.5, 0.9), prune_finetune_epochs=1, calibration_batches=2,
                                 student_embed_dim=16, student_depth=1, student_epochs=1),
    "cpu": CompressionSettings(),
    "gpu": CompressionSettings(cnn_model="x3d_xs", cnn_widths=None, cnn_epochs=20, batch_size=64, eval_views=3, latency_repeats=50,
                               prune_finetune_epochs=5, calibration_batches=32, qat_epochs=3,
                               sparse24_finetune_epochs=3, student_embed_dim=192, student_depth=4, student_heads=3,
                               student_epochs=20),
}

# What notebook 07's run must show (checked by ``python -m vidlab run --check``)
LESSONS = (
    Lesson("int8_speedup_b8.vit", ">=", 2.0, why="static int8 (PT2E + inductor) at least 2x eager fp32 for the ViT at batch 8",
           presets=("cpu",)),
    Lesson("top1_int8.vit", ">=", "top1_fp32.vit", -0.01, why="int8 loses at most 1 point top-1 (QAT if PTQ does not)"),
    Lesson("structured_speedup", ">=", 1.5, why="removing half the 3D CNN's channels makes it at least 1.5x faster"),
    Lesson("top1_pruned_structured", ">=", "top1_fp32.cnn", -0.02, why="within 2 points after fine-tuning"),
    Lesson("unstructured_latency_ratio", ">=", 0.8, why="zeros in dense tensors do not make dense kernels faster"),
    Lesson("unstructured_latency_ratio", "<=", 1.25, why="zeros in dense tensors do not make dense kernels faster"),
)


# ----------------------------------------------------------------------------- data
def eval_set(data: Any, views: int = 1) -> EvalSet:
    """The test split as one in-memory :class:`~vidlab.compress.evaluate.EvalSet`: ``views=1``
    takes each video's centre clip (the validation sampler), otherwise ``data.test``'s views."""
    from vidlab.data.cache import CachedClipDataset

    test = data.test
    if views == 1:
        test = CachedClipDataset(data.test.videos, sampler=data.val.sampler, transform=data.val.transform,
                                 indices=data.test.indices)
    return stack_clips(test)


def calibration_batches(data: Any, settings: CompressionSettings, *, seed: int = 0) -> list[torch.Tensor]:
    """``settings.calibration_batches`` training batches ``(B, C, T, H, W)`` (augmented, as in training)."""
    from vidlab.data.cache import cached_loader

    loader = cached_loader(data.train, batch_size=settings.calibration_batch_size, shuffle=True, seed=seed)
    batches = []
    for batch in loader:
        batches.append(batch["video"])
        if len(batches) == settings.calibration_batches:
            break
    return batches


# ----------------------------------------------------------------------------- models and training
def build_cnn(settings: CompressionSettings, num_classes: int, geometry: dict[str, int]) -> nn.Module:
    """The 3D CNN for the reference clips (``geometry``: ``num_frames``, ``img_size``), with
    ``settings.cnn_widths`` channels per stage when set."""
    from vidlab.models import create_model

    widths = {} if settings.cnn_widths is None else {"widths": tuple(settings.cnn_widths)}
    return create_model(settings.cnn_model, num_classes=num_classes, num_frames=geometry["num_frames"],
                        img_size=geometry["img_size"], **widths)


def build_student(settings: CompressionSettings, teacher: nn.Module) -> nn.Module:
    """A smaller ViT of the teacher's registry family, with its tokens, head and classes but
    ``settings.student_embed_dim`` / ``student_depth`` / ``student_heads``."""
    from vidlab.models import create_model

    spec = teacher.vidlab_spec
    kwargs = {**spec["kwargs"], "embed_dim": settings.student_embed_dim, "depth": settings.student_depth,
              "num_heads": settings.student_heads}
    return create_model(spec["name"], **kwargs)


def load_clips(data_dir: str | os.PathLike, info: Any, preset: str, *, progress: bool = True) -> Any:
    """Train / val / test clips (:class:`~vidlab.data.clips.ClipData`) at the clip geometry of a
    loaded model (``info``: :class:`~vidlab.models.saving.ModelInfo`), with notebook 03's
    augmentation. Decoded once."""
    from vidlab.recipes import finetune
    from vidlab.recipes.reference import reference_settings

    geometry = {"num_frames": info.num_frames, "img_size": info.img_size, "frame_stride": info.frame_stride}
    return finetune.load_data(data_dir, geometry, reference_settings(preset), progress=progress)


def train(model: nn.Module, data: Any, settings: CompressionSettings, *, epochs: int, lr: float, seed: int = 0,
          device: torch.device | str = "cpu", step_fn: Callable | None = None, progress: bool = True) -> float:
    """Train ``model`` on ``data.train`` with ``vl.train.fit`` (AdamW, warmup + cosine, label smoothing,
    clipping; no validation pass): the one recipe of every training, fine-tuning and distillation
    run here. ``step_fn`` plugs in a custom step (distillation). Returns the seconds it took."""
    from vidlab.data.cache import cached_loader
    from vidlab.train import TrainConfig, fit

    cfg = TrainConfig(epochs=epochs, lr=lr, weight_decay=0.05, warmup_epochs=min(settings.warmup_epochs, epochs / 2),
                      label_smoothing=settings.label_smoothing, clip_grad_norm=1.0, seed=seed)
    loader = cached_loader(data.train, batch_size=settings.batch_size, shuffle=True, seed=seed,
                           drop_last=len(data.train) > settings.batch_size)
    t0 = time.perf_counter()
    fit(model, loader, None, cfg, device=device, step_fn=step_fn, progress=progress, num_classes=data.num_classes)
    model.eval()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- measurement
def latency_pair(fn: Callable[[torch.Tensor], Any], data: EvalSet, settings: CompressionSettings) -> dict[str, Any]:
    """Median and p95 latency (ms) of ``fn`` at batch 1 and batch 8 on test clips."""
    out = {}
    for b in (1, 8):
        lat = measure_latency(fn, data.clips[:b].contiguous(), warmup=settings.latency_warmup,
                              repeats=settings.latency_repeats, threads=settings.threads)
        out[f"b{b}_ms"], out[f"b{b}_p95_ms"] = lat.median_ms, lat.p95_ms
    return out


def latency_table(fns: dict[str, Callable[[torch.Tensor], Any]], data: EvalSet,
                  settings: CompressionSettings) -> dict[str, dict[str, float]]:
    """Median and p95 latency (ms) of several callables at batch 1 and batch 8, measured
    interleaved (:func:`~vidlab.compress.compare_latency`) so their ratios survive load changes:
    ``{name: {"b1_ms", "b1_p95_ms", "b8_ms", "b8_p95_ms"}}``."""
    from vidlab.compress.latency import compare_latency

    out: dict[str, dict[str, float]] = {name: {} for name in fns}
    for b in (1, 8):
        lat = compare_latency(fns, data.clips[:b].contiguous(), warmup=settings.latency_warmup,
                              repeats=settings.latency_repeats, threads=settings.threads)
        for name, value in lat.items():
            out[name][f"b{b}_ms"], out[name][f"b{b}_p95_ms"] = value.median_ms, value.p95_ms
    return out


def file_bytes(path: str | os.PathLike) -> int:
    """Bytes of the weights a saved variant stores (``save_model`` file: its size; ``.pt2``: its
    tensors, without the graph description; see :func:`~vidlab.compress.quantization.stored_tensor_bytes`)."""
    from vidlab.compress.quantization import stored_tensor_bytes

    return stored_tensor_bytes(path)


def variant_row(variant: str, model: str, fn: Callable[[torch.Tensor], Any], data: EvalSet,
                settings: CompressionSettings, path: str | os.PathLike, *, accuracy: float | None = None,
                latency: dict[str, Any] | None = None, note: str = "") -> dict[str, Any]:
    """One row of the Pareto table: top-1 on ``data`` (unless given), latency at batch 1 and 8
    (unless given), bytes of the saved file at ``path``."""
    acc = top1(fn, data) if accuracy is None else accuracy
    lat = latency_pair(fn, data, settings) if latency is None else latency
    return {"variant": variant, "model": model, "top1": acc, "latency_b1_ms": lat["b1_ms"],
            "latency_b8_ms": lat["b8_ms"], "bytes": file_bytes(path), "file_bytes": Path(path).stat().st_size,
            "file": Path(path).name, "note": note}


def pareto_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``on_front`` (accuracy vs batch-1 latency over all variants) added, fastest first."""
    from vidlab.compress.evaluate import pareto_front

    front = pareto_front([r["latency_b1_ms"] for r in rows], [r["top1"] for r in rows])
    marked = [{**r, "on_front": on} for r, on in zip(rows, front)]
    return sorted(marked, key=lambda r: r["latency_b1_ms"])


def format_table(rows: list[dict[str, Any]]) -> str:
    """The Pareto table as fixed-width text."""
    head = f"{'variant':28s} {'model':5s} {'top-1':>6s} {'b1 ms':>8s} {'b8 ms':>8s} {'MB':>7s} front"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['variant']:28s} {r['model']:5s} {r['top1']:6.3f} {r['latency_b1_ms']:8.2f} "
                     f"{r['latency_b8_ms']:8.2f} {r['bytes'] / 1e6:7.2f} {'*' if r.get('on_front') else ''}")
    return "\n".join(lines)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode (every variant starts from the same weights)."""
    return copy.deepcopy(model).eval()


def settings_dict(settings: CompressionSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
