"""Where more processes help: throughput across processes against one clip's latency.

Spreading inference over several processes (or machines, notebook 09) multiplies how many
clips per second a service answers, as long as each process gets cores of its own. It does not
make ONE clip come back sooner: a clip is one forward pass, and the only way to split it is
inside the process (intra-op threads), which stops paying once the layers are too small to
share out. :func:`process_throughput` measures the first, :func:`thread_latency` the second.

Workers are started with ``spawn`` (a fresh interpreter): forking a process that has already
run PyTorch's OpenMP code can hang. Layouts: clips ``(B, C, T, H, W)``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass

import torch

from vidlab.compress.latency import measure_latency

__all__ = ["ScalingResult", "process_throughput", "thread_latency"]


@dataclass
class ScalingResult:
    """``processes`` x ``threads`` each: clips per second over all processes, wall seconds of the timed part."""

    processes: int
    threads: int
    clips: int
    seconds: float
    clips_per_s: float


def _worker(model_path: str, threads: int, shape: tuple[int, ...], batches: int, barrier, results, index: int) -> None:
    torch.set_num_threads(threads)
    from vidlab.infer.runtime import load_runtime

    runtime = load_runtime(model_path, threads=threads)
    clips = torch.rand(*shape)
    with torch.inference_mode():
        runtime(clips)  # warm-up (lazy initialisation) before the common start
        barrier.wait()
        start = time.perf_counter()
        for _ in range(batches):
            runtime(clips)
        results[index] = (start, time.perf_counter())


def process_throughput(model_path: str | os.PathLike, clip_shape: tuple[int, ...], *, processes: int, threads: int,
                       batches: int = 20, batch_size: int = 1, timeout: float = 300.0) -> ScalingResult:
    """Run ``processes`` spawned workers with ``threads`` threads each; each loads ``model_path``
    (any :func:`~vidlab.infer.load_runtime` file) and runs ``batches`` batches of ``batch_size``
    clips of ``clip_shape`` ``(C, T, H, W)``. All start together after loading; throughput counts
    every clip over the time from the common start to the last worker's end."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes)
    manager = ctx.Manager()
    try:
        results = manager.dict()
        workers = [ctx.Process(target=_worker, args=(os.fspath(model_path), threads, (batch_size, *clip_shape), batches,
                                                     barrier, results, i), daemon=True) for i in range(processes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout)
        failed = [w.exitcode for w in workers if w.exitcode != 0]
        if failed or len(results) != processes:
            raise RuntimeError(f"process_throughput: workers exited with {failed or 'missing results'}")
        spans = list(results.values())
    finally:
        manager.shutdown()
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    clips = processes * batches * batch_size
    return ScalingResult(processes, threads, clips, seconds, clips / seconds)


def thread_latency(fn, example: torch.Tensor, threads: int, *, repeats: int = 30) -> float:
    """Median latency (ms) of ``fn(example)`` in this process with ``threads`` intra-op threads."""
    return measure_latency(fn, example, repeats=repeats, threads=threads).median_ms
