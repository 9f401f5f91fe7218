"""Video-level prediction: decode -> sample clips -> batch -> model -> average the views.

:class:`VideoPredictor` runs one or several *tasks* (a model plus the clips it wants) over video
files. Each video is decoded ONCE for all tasks: the frames every task's views need are
decoded in one pass (:func:`vidlab.data.decode_frames`), then each task gets its clips. A
background thread decodes and preprocesses the next videos while the model runs on the
current batch (``overlap=True``), so on a machine with two cores decoding hides behind compute.

A file that cannot be decoded (missing, truncated, corrupt, a playlist renamed ``.mp4``, ...)
gives a :class:`VideoResult` with ``error`` naming the file and the reason; the other videos
are still predicted. Layouts: views ``(V, C, T, H, W)``, batches ``(B, C, T, H, W)``.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidlab.data.io import VideoDecodeError, decode_frames, probe
from vidlab.data.samplers import MultiClipSampler
from vidlab.data.transforms import eval_transform

__all__ = ["ClipSpec", "Task", "VideoResult", "PredictReport", "VideoPredictor", "decode_views"]


@dataclass(frozen=True)
class ClipSpec:
    """The clips a model wants: ``views`` clips of ``num_frames`` frames, ``frame_stride`` native
    frames apart, resized and centre-cropped to ``img_size``, normalised with ``mean`` / ``std``."""

    num_frames: int
    img_size: int
    frame_stride: int = 1
    views: int = 1
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], *, views: int = 1) -> "ClipSpec":
        """From a runtime's metadata (:func:`vidlab.infer.export.deploy_info`)."""
        return cls(int(meta["num_frames"]), int(meta["img_size"]), int(meta.get("frame_stride", 1)), views,
                   tuple(meta["mean"]), tuple(meta["std"]))


@dataclass
class Task:
    """A model (``fn(clips) -> logits``) and the clips it takes; ``class_names`` label its outputs."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    spec: ClipSpec
    class_names: Sequence[str] | None = None


@dataclass
class VideoResult:
    """One video: per task, class probabilities averaged over the views, or the error that stopped it."""

    path: str
    probs: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> (num_classes,)
    class_names: dict[str, Sequence[str] | None] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def topk(self, k: int = 5, task: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` most likely ``(class name, probability)`` of ``task`` (the only / first task by default)."""
        if not self.ok:
            raise ValueError(f"{self.path}: no prediction ({self.error})")
        task = task or next(iter(self.probs))
        probs = self.probs[task]
        names = self.class_names.get(task)
        values, indices = probs.topk(min(k, probs.numel()))
        return [((names[i] if names else str(i)), float(v)) for v, i in zip(values.tolist(), indices.tolist())]


@dataclass
class PredictReport:
    """Results in input order, wall time, and time spent decoding / running the models."""

    results: list[VideoResult]
    seconds: float
    decode_s: float
    compute_s: float

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if not r.ok]

    @property
    def videos_per_s(self) -> float:
        """Successfully predicted videos per second of wall time."""
        return sum(r.ok for r in self.results) / self.seconds if self.seconds > 0 else float("nan")


def _clip_times(spec: ClipSpec, duration: float, fps: float) -> list[np.ndarray]:
    return MultiClipSampler(spec.num_frames, spec.frame_stride, num_clips=spec.views)(duration, fps)


def decode_views(path: str | os.PathLike, specs: Sequence[ClipSpec]) -> list[torch.Tensor]:
    """Decode ``path`` once and return each spec's views ``(V, C, T, H, W)`` (normalised floats).

    Views are ``spec.views`` clips spread evenly over the video (:class:`~vidlab.data.MultiClipSampler`).
    Raises :class:`~vidlab.data.VideoDecodeError` naming the file when it cannot be decoded.
    """
    info = probe(path)
    per_spec = [_clip_times(spec, info.duration, info.fps) for spec in specs]
    every = np.concatenate([t for clips in per_spec for t in clips])
    unique, inverse = np.unique(every, return_inverse=True)
    frames = decode_frames(path, unique)  # (N, H, W, C) uint8, one pass over the file
    out, at = [], 0
    for spec, clips in zip(specs, per_spec):
        transform = eval_transform(size=spec.img_size, resize=spec.img_size, mean=spec.mean, std=spec.std)
        views = []
        for times in clips:
            views.append(transform(frames[torch.from_numpy(inverse[at:at + len(times)])]))
            at += len(times)
        out.append(torch.stack(views))
    return out


class VideoPredictor:
    """Predict whole videos with one or several tasks sharing one decode per video.

    Args:
        tasks: ``{name: Task}``, or a single :class:`Task` (named ``"model"``).
        batch_size: clips per model call (views of several videos are batched together).
        device: where the models run; clips are copied there (pinned + non-blocking on CUDA).
        prefetch: videos decoded ahead of the model when ``overlap=True``.
    """

    def __init__(self, tasks: Mapping[str, Task] | Task, *, batch_size: int = 8, device: str | torch.device = "cpu",
                 prefetch: int = 4) -> None:
        self.tasks = {"model": tasks} if isinstance(tasks, Task) else dict(tasks)
        if not self.tasks:
            raise ValueError("VideoPredictor: give at least one task")
        self.batch_size, self.device, self.prefetch = int(batch_size), torch.device(device), int(prefetch)

    def _load(self, path: str) -> tuple[str, list[torch.Tensor] | None, str | None]:
        try:
            return path, decode_views(path, [t.spec for t in self.tasks.values()]), None
        except VideoDecodeError as err:
            return path, None, str(err)
        except (OSError, ValueError, RuntimeError) as err:  # e.g. a frame too small for the crop
            return path, None, f"{path}: {type(err).__name__}: {err}"

    def _run(self, pending: list[tuple[VideoResult, list[torch.Tensor]]]) -> None:
        for index, (name, task) in enumerate(self.tasks.items()):
            clips = torch.cat([views[index] for _, views in pending])
            if self.device.type == "cuda":
                clips = clips.pin_memory().to(self.device, non_blocking=True)
            with torch.inference_mode():
                probs = torch.cat([task.fn(chunk).float().softmax(-1).cpu() for chunk in clips.split(self.batch_size)])
            at = 0
            for result, views in pending:
                count = views[index].shape[0]
                result.probs[name] = probs[at:at + count].mean(0)
                result.class_names[name] = task.class_names
                at += count

    def _loaded(self, paths: Sequence[str], overlap: bool, timer: dict[str, float]) -> Iterable[tuple]:
        def timed(path: str) -> tuple:
            start = time.perf_counter()
            item = self._load(path)
            timer["decode_s"] += time.perf_counter() - start
            return item

        if not overlap:
            yield from (timed(p) for p in paths)
            return
        box: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()

        def produce() -> None:
            for p in paths:
                if stop.is_set():
                    return
                box.put(timed(p))
            box.put(None)

        worker = threading.Thread(target=produce, name="vidlab-decode", daemon=True)
        worker.start()
        try:
            while (item := box.get()) is not None:
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    box.get_nowait()
                except queue.Empty:
                    worker.join(0.01)

    def predict(self, paths: Sequence[str | os.PathLike], *, overlap: bool = True, progress: bool = False) -> PredictReport:
        """Predict every video in ``paths`` (results in the same order; failures carry ``error``)."""
        from tqdm.auto import tqdm

        paths = [os.fspath(p) for p in paths]
        timer = {"decode_s": 0.0, "compute_s": 0.0}
        order: list[VideoResult] = []
        pending: list[tuple[VideoResult, list[torch.Tensor]]] = []
        start = time.perf_counter()

        def flush() -> None:
            if pending:
                t0 = time.perf_counter()
                self._run(pending)
                timer["compute_s"] += time.perf_counter() - t0
                pending.clear()

        for path, views, error in tqdm(self._loaded(paths, overlap, timer), total=len(paths), desc="videos",
                                       disable=not progress):
            result = VideoResult(path, error=error)
            order.append(result)
            if views is None:
                continue
            pending.append((result, views))
            if sum(v[0].shape[0] for _, v in pending) >= self.batch_size:
                flush()
        flush()
        return PredictReport(order, time.perf_counter() - start, timer["decode_s"], timer["compute_s"])
