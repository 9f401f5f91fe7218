"""Worker processes of the data pipeline: the one place that decides how they start.

The decode-once cache (:class:`~vidlab.data.cache.DecodedVideos`), ``prepare_folder`` /
the standard-dataset builders and the synthetic generator all run their jobs in
:func:`process_pool`.

Why this needs care: once a process has run torch ops on several threads, its OpenMP
runtime (libgomp) keeps a thread pool that ``fork()`` does not copy. A forked child that
enters an OpenMP parallel region (``F.interpolate``, a matmul, a large copy) waits for those
threads forever or crashes. Every notebook kernel has run torch by its second section.

What we do: on Linux the workers are forked (they start in milliseconds, need no
``if __name__ == "__main__"`` guard and do not re-import torch), and each one first sets
torch (and OpenMP) to one thread, so torch runs its kernels inline and never enters an
OpenMP parallel region; this is also what ``torch.utils.data.DataLoader`` does in its
workers. Parallelism comes from the processes. Elsewhere (macOS, Windows) workers are
spawned, with the same one-thread setting.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Iterator

__all__ = ["process_pool", "start_method"]


def start_method() -> str:
    """``"fork"`` on Linux, ``"spawn"`` elsewhere (macOS and Windows cannot fork safely)."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def _single_threaded() -> None:
    """Worker initializer: one OpenMP / torch thread, so no OpenMP parallel region is entered."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # forked workers inherit torch already imported; don't import it otherwise
        sys.modules["torch"].set_num_threads(1)


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``with process_pool(n) as pool:`` a ``ProcessPoolExecutor`` of ``n`` single-threaded workers.

    Safe to use after the calling process has run multi-threaded torch code (see the module
    docstring). Python >= 3.12's warning about ``fork()`` in a process with threads is silenced
    for the pool's start-up, since the workers do not rely on the parent's threads.
    """
    if workers < 1:
        raise ValueError(f"process_pool: workers must be >= 1, got {workers}")
    context = multiprocessing.get_context(start_method())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_threaded) as pool:
            yield pool
