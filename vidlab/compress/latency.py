"""Latency measured right: fixed threads, warm-up, many timed calls, median and p95.

Used by every compression section (notebook 07) and every export path (notebook 08), so all
figures in the curriculum come from one method.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch


@dataclass
class Latency:
    """Per-call wall time of one configuration, in milliseconds."""

    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    batch_size: int
    threads: int
    first_call_ms: float  # the first (cold) call: compilation, allocation, lazy init

    @property
    def items_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "items_per_s": self.items_per_s}


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (``None`` keeps the current count)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    fn: Callable[[torch.Tensor], object],
    example: torch.Tensor,
    *,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
    min_seconds: float = 0.0,
) -> Latency:
    """Time ``fn(example)``: one cold call, ``warmup`` discarded calls, then at least ``repeats``
    timed calls (more while ``min_seconds`` has not elapsed). Runs under ``torch.inference_mode``
    with ``threads`` fixed; CUDA work is synchronised before each clock read.

    ``example`` is the input batch, e.g. clips ``(B, C, T, H, W)``; ``B`` is reported as the batch size.
    """
    if repeats < 1:
        raise ValueError(f"measure_latency: repeats must be >= 1, got {repeats}")
    device = example.device if isinstance(example, torch.Tensor) else None
    batch = int(example.shape[0]) if isinstance(example, torch.Tensor) and example.ndim else 1
    times: list[float] = []
    with fixed_threads(threads) as used, torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        fn(example)
        _sync(device)
        first = time.perf_counter() - start
        for _ in range(warmup):
            fn(example)
        _sync(device)
        began = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - began < min_seconds:
            start = time.perf_counter()
            fn(example)
            _sync(device)
            times.append(time.perf_counter() - start)
    return _summary(times, batch=batch, threads=used, first=first)


def _summary(times: list[float], *, batch: int, threads: int, first: float) -> Latency:
    ms = sorted(t * 1000.0 for t in times)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return Latency(
        median_ms=statistics.median(ms), p95_ms=p95, mean_ms=statistics.fmean(ms), min_ms=ms[0],
        repeats=len(ms), batch_size=batch, threads=threads, first_call_ms=first * 1000.0,
    )


def compare_latency(
    fns: dict[str, Callable[[torch.Tensor], object]],
    example: torch.Tensor,
    *,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
) -> dict[str, Latency]:
    """Time several callables on the same ``example`` batch, interleaved: each round calls every
    one of them once, so a change in machine load during the measurement hits all of them alike
    and their ratios stay meaningful. Same statistics as :func:`measure_latency` for each.

    ``fns`` maps a name to a callable taking ``example`` (e.g. ``(B, C, T, H, W)`` clips).
    """
    if repeats < 1:
        raise ValueError(f"compare_latency: repeats must be >= 1, got {repeats}")
    device = example.device if isinstance(example, torch.Tensor) else None
    batch = int(example.shape[0]) if isinstance(example, torch.Tensor) and example.ndim else 1
    times: dict[str, list[float]] = {name: [] for name in fns}
    first: dict[str, float] = {}
    with fixed_threads(threads) as used, torch.inference_mode():
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn(example)
            _sync(device)
            first[name] = time.perf_counter() - start
            for _ in range(warmup):
                fn(example)
        for _ in range(repeats):
            for name, fn in fns.items():
                _sync(device)
                start = time.perf_counter()
                fn(example)
                _sync(device)
                times[name].append(time.perf_counter() - start)
    return {name: _summary(ts, batch=batch, threads=used, first=first[name]) for name, ts in times.items()}
