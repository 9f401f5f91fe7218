"""Dynamic batching: group requests that arrive close together into one model call.

A server that runs every request alone pays the per-call overhead every time; one that waits
for a full batch makes the first request of a quiet period wait for ever. :class:`DynamicBatcher`
takes the middle road used by inference servers (Triton, TorchServe): a worker thread takes the
oldest request, then keeps collecting until it holds ``max_batch`` requests or ``max_wait_ms``
has passed since that oldest request arrived, runs the model once on the stacked batch and
hands every request its own row. No request is dropped: :meth:`DynamicBatcher.close` finishes
everything already submitted, and a model error is delivered to every request of that batch.

:func:`simulate_load` sends requests at a steady rate (Poisson arrivals) and measures
throughput and latency percentiles, the numbers that trade off as ``max_wait_ms`` changes.
Layouts: one request is a clip ``(C, T, H, W)``; the model gets ``(B, C, T, H, W)``.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DynamicBatcher", "LoadResult", "simulate_load"]

_CLOSE = object()


class DynamicBatcher:
    """Serve ``fn(batch (B, ...)) -> (B, ...)`` to single requests, grouped up to ``max_batch`` or ``max_wait_ms``.

    ``submit(x)`` returns a :class:`~concurrent.futures.Future` of ``fn``'s row for ``x``.
    Use as a context manager or call :meth:`close`. ``batch_sizes`` lists every batch run.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int = 8, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError(f"DynamicBatcher: max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"DynamicBatcher: max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn, self.max_batch, self.max_wait = fn, int(max_batch), float(max_wait_ms) / 1000.0
        self.batch_sizes: list[int] = []
        self.submitted = 0
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name="vidlab-batcher", daemon=True)
        self._worker.start()

    def submit(self, item: torch.Tensor) -> Future:
        """Queue one request; its Future resolves to the model's output row (or the model's error)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("DynamicBatcher: submit() after close()")
            self.submitted += 1
            self._queue.put((item, future, time.perf_counter()))
        return future

    def _collect(self, first: tuple) -> tuple[list[tuple], bool]:
        batch, closing = [first], False
        deadline = first[2] + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSE:
                closing = True
                break
            batch.append(item)
        return batch, closing

    def _serve(self) -> None:
        closing = False
        while True:
            if closing and self._queue.empty():
                return
            first = self._queue.get()
            if first is _CLOSE:
                closing = True
                continue
            batch, closed_now = self._collect(first)
            closing = closing or closed_now
            self.batch_sizes.append(len(batch))
            try:
                with torch.inference_mode():
                    out = self.fn(torch.stack([item for item, _, _ in batch]))
                if out.shape[0] != len(batch):
                    raise RuntimeError(f"the model returned {out.shape[0]} rows for a batch of {len(batch)}")
            except BaseException as err:  # every request of the batch learns why
                for _, future, _ in batch:
                    future.set_exception(err)
                continue
            for row, (_, future, _) in zip(out, batch):
                future.set_result(row)

    def close(self) -> None:
        """Stop accepting requests, finish every queued one, and stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_CLOSE)
        self._worker.join()

    def __enter__(self) -> "DynamicBatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LoadResult:
    """One load test: requests sent / answered, throughput, latency percentiles (ms), batch sizes."""

    max_batch: int
    max_wait_ms: float
    rate_per_s: float
    sent: int
    answered: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    mean_batch: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def simulate_load(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor, *, rate_per_s: float,
                  requests: int = 200, max_batch: int = 8, max_wait_ms: float = 5.0, seed: int = 0) -> LoadResult:
    """Send ``requests`` copies of ``example`` (one clip ``(C, T, H, W)``) at Poisson arrivals of
    ``rate_per_s`` to a :class:`DynamicBatcher` and wait for every answer.

    Latency is from submission to answer; throughput is answers per second from the first
    submission to the last answer. Raises if any request is lost.
    """
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, size=requests)
    futures: list[tuple[Future, float]] = []
    done_at: dict[int, float] = {}
    with DynamicBatcher(fn, max_batch=max_batch, max_wait_ms=max_wait_ms) as batcher:
        start = time.perf_counter()
        due = start
        for i, gap in enumerate(gaps):
            due += gap
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            future = batcher.submit(example)
            future.add_done_callback(lambda _, i=i: done_at.__setitem__(i, time.perf_counter()))
            futures.append((future, sent))
    for future, _ in futures:
        future.result()  # re-raises a model error
    if len(done_at) != requests:
        raise RuntimeError(f"simulate_load: {requests - len(done_at)} of {requests} requests were lost")
    latency = np.array([(done_at[i] - sent) * 1000.0 for i, (_, sent) in enumerate(futures)])
    seconds = max(done_at.values()) - start
    sizes = batcher.batch_sizes
    return LoadResult(max_batch, max_wait_ms, rate_per_s, requests, len(done_at), seconds, len(done_at) / seconds,
                      float(np.percentile(latency, 50)), float(np.percentile(latency, 95)),
                      float(np.mean(sizes)) if sizes else float("nan"))
