"""Model compression (notebook 07): latency measurement, pruning, quantization, distillation."""
from __future__ import annotations

from vidlab.compress.latency import Latency, fixed_threads, measure_latency

__all__ = ["Latency", "fixed_threads", "measure_latency"]
