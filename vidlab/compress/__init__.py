"""Model compression (notebook 07): latency measurement, pruning, quantization, 2:4 sparsity, distillation."""
from __future__ import annotations

from vidlab.compress.latency import Latency, compare_latency, fixed_threads, measure_latency

_SUBMODULES = ("pruning", "quantization", "semi_structured", "distill", "evaluate")


def __getattr__(name: str):
    """Submodules (``vl.compress.pruning``, ``.quantization``, ...) are imported on first use."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"vidlab.compress.{name}")
    raise AttributeError(f"module 'vidlab.compress' has no attribute {name!r}")


__all__ = ["Latency", "compare_latency", "fixed_threads", "measure_latency", *_SUBMODULES]
