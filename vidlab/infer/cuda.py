"""Inference paths that need an NVIDIA GPU: fp16 / bf16, pinned memory, CUDA graphs.

* **fp16 / bf16**: ``torch.autocast("cuda", dtype=...)`` runs matrix multiplies and convolutions
  in half precision on tensor cores; the logits move by about 1e-3 of their scale.
* **Pinned memory + non-blocking copies**: a page-locked host buffer lets the copy to the GPU run
  by DMA while the CPU goes on (``tensor.pin_memory().to("cuda", non_blocking=True)``).
* **CUDA graphs** (``torch.compile(mode="reduce-overhead")``): the whole forward pass is recorded
  once and replayed with one launch, which removes the per-kernel launch cost that dominates
  small batches.

:func:`cuda_inference_paths` measures them all (with :func:`vidlab.compress.measure_latency`) and
returns ``{"skipped": reason}`` when no GPU is present; ``benchmarks/gpu_check.py`` runs it.
Layouts: clips ``(B, C, T, H, W)`` float32.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vidlab.compress.latency import measure_latency

__all__ = ["gpu_skip_reason", "cuda_inference_paths"]


def gpu_skip_reason() -> str | None:
    """``None`` when a CUDA device is usable, else the reason GPU-only paths are skipped."""
    if not torch.backends.cuda.is_built():
        return "this PyTorch build has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return None


def _autocast(model: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=dtype):
            return model(x)

    return run


def cuda_inference_paths(model: nn.Module, example: torch.Tensor, *, repeats: int = 50,
                         compile_graphs: bool = True) -> dict[str, Any]:
    """Latency (ms, median / p95) and max abs difference to fp32 of each GPU path.

    ``model`` takes ``example`` clips ``(B, C, T, H, W)`` (on the CPU). Paths: ``fp32``,
    ``fp16_autocast``, ``bf16_autocast`` (when supported), ``cuda_graphs`` (``torch.compile``
    with ``mode="reduce-overhead"``, when ``compile_graphs``), and the host->device copy of the
    batch from pageable memory vs pinned memory with ``non_blocking=True``.
    Returns ``{"skipped": reason}`` without a GPU.
    """
    reason = gpu_skip_reason()
    if reason is not None:
        return {"skipped": reason}
    device = torch.device("cuda")
    gpu_model = copy.deepcopy(model).eval().to(device)
    x = example.to(device)
    with torch.inference_mode():
        reference = gpu_model(x).float()
    paths: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"fp32": gpu_model,
                                                               "fp16_autocast": _autocast(gpu_model, torch.float16)}
    if torch.cuda.is_bf16_supported():
        paths["bf16_autocast"] = _autocast(gpu_model, torch.bfloat16)
    if compile_graphs:
        graphed = torch.compile(gpu_model, mode="reduce-overhead")

        def replay(batch: torch.Tensor) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()  # a new inference step: earlier outputs may be reused
            return graphed(batch)

        paths["cuda_graphs"] = replay
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device), "batch_size": int(example.shape[0])}
    for name, fn in paths.items():
        lat = measure_latency(fn, x, warmup=5, repeats=repeats)
        with torch.inference_mode():
            diff = float((fn(x).float().clone() - reference).abs().max())
        out[name] = {"median_ms": lat.median_ms, "p95_ms": lat.p95_ms, "first_call_ms": lat.first_call_ms,
                     "max_abs_diff": diff}
    host, pinned = example.contiguous(), example.contiguous().pin_memory()

    def copy_to_gpu(non_blocking: bool) -> Callable[[torch.Tensor], object]:
        def run(batch: torch.Tensor) -> object:
            moved = batch.to(device, non_blocking=non_blocking)
            torch.cuda.synchronize(device)  # the copy is done when the model could use it
            return moved

        return run

    for name, batch, non_blocking in (("copy_pageable", host, False), ("copy_pinned_non_blocking", pinned, True)):
        lat = measure_latency(copy_to_gpu(non_blocking), batch, warmup=5, repeats=repeats)
        out[name] = {"median_ms": lat.median_ms, "p95_ms": lat.p95_ms,
                     "gb_per_s": batch.numel() * batch.element_size() / lat.median_ms / 1e6}
    out["fp16_speedup"] = out["fp32"]["median_ms"] / out["fp16_autocast"]["median_ms"]
    if "cuda_graphs" in out:
        out["cuda_graphs_speedup"] = out["fp32"]["median_ms"] / out["cuda_graphs"]["median_ms"]
    return out
