"""``VideoDataset``: clips from a manifest, decoded lazily with PyAV.

Building a dataset reads ``manifest.csv`` only (no decoding). Each item decodes just the
frames its sampler asks for. A file that fails to decode is *skipped and recorded* (path,
stage, reason) -- never silently replaced by another sample -- and once the skipped fraction
passes ``max_skip_fraction`` the loader raises :class:`TooManySkipsError`.

Use :func:`make_loader` (a ``DataLoader`` that understands skips, seeds its workers, and
names the files in flight if a worker dies) rather than a bare ``DataLoader``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from vidlab.data.io import VideoDecodeError, decode_frames
from vidlab.data.manifest import ManifestRow, class_names, manifest_path, read_manifest
from vidlab.data.samplers import ClipSampler, make_sampler
from vidlab.utils import seeded_loader


class TooManySkipsError(RuntimeError):
    """More than ``max_skip_fraction`` of the items seen so far could not be decoded."""


class WorkerDiedError(RuntimeError):
    """A DataLoader worker process died; the message names the files it was decoding."""


@dataclass(frozen=True)
class Skip:
    """One item that could not be loaded."""

    path: str
    stage: str
    reason: str


@dataclass
class SkipReport:
    """Items seen and skipped by a dataset's loaders (kept in the main process)."""

    seen: int = 0
    skipped: list[Skip] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return len(self.skipped) / self.seen if self.seen else 0.0

    def summary(self) -> str:
        lines = [f"{len(self.skipped)} of {self.seen} items skipped ({self.fraction:.1%})"]
        lines += [f"  {s.path}: {s.stage}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def to_rows(self) -> list[dict[str, str]]:
        return [{"path": s.path, "stage": s.stage, "reason": s.reason} for s in self.skipped]


class VideoDataset(Dataset):
    """Clips of the videos of one split of a manifest.

    Args:
        manifest: ``manifest.csv`` or the folder holding it.
        split: which rows to use (``train``, ``val``, ``test``, ``unlabeled``, ...), or a list.
        num_frames, stride, fps: clip length, spacing in (native or ``fps``-resampled) frames.
        sampler: ``random`` | ``center`` | ``multi`` | ``segments`` | ``segments_eval`` or a
            :class:`~vidlab.data.samplers.ClipSampler`.
        num_clips: clips per video for ``multi`` (views for video-level testing).
        transform: frames ``(T, H, W, C)`` uint8 -> clip ``(C, T, H, W)`` float (see
            :mod:`vidlab.data.transforms`; its presets always output ``size x size``, whatever
            the video's size and aspect ratio); ``None`` returns ``(C, T, H, W)`` float in
            [0, 1] at the video's own size, so a batch needs videos of one size.
        max_skip_fraction: the loader raises once more than this fraction of items was skipped
            (checked after ``min_seen`` items).
        labeled_only: drop rows with ``label < 0``.

    Items are dicts: ``video`` ``(C, T, H, W)`` (or ``(V, C, T, H, W)`` with several views),
    ``label`` int, ``path`` str, ``index`` int.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        *,
        split: str | Sequence[str],
        num_frames: int = 8,
        stride: int = 1,
        fps: float | None = None,
        sampler: str | ClipSampler = "random",
        num_clips: int = 1,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_skip_fraction: float = 0.05,
        min_seen: int = 20,
        labeled_only: bool = False,
        max_per_class: int | None = None,
        seed: int = 0,
    ) -> None:
        self.manifest = manifest_path(manifest)
        self.root = self.manifest.parent
        all_rows = read_manifest(self.manifest)
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in all_rows if r.split in wanted]
        if labeled_only:
            rows = [r for r in rows if r.label >= 0]
        if max_per_class is not None:
            rows = subsample_per_class(rows, max_per_class, seed=seed)
        if not rows:
            have = sorted({r.split for r in all_rows})
            raise ValueError(f"{self.manifest}: no rows for split {split!r}; splits present: {', '.join(have)}")
        self.rows: list[ManifestRow] = rows
        self.classes = class_names(all_rows)
        self.sampler = sampler if isinstance(sampler, ClipSampler) else make_sampler(
            sampler, num_frames=num_frames, stride=stride, fps=fps, num_clips=num_clips
        )
        self.transform = transform
        self.max_skip_fraction = max_skip_fraction
        self.min_seen = min_seen
        self.report = SkipReport()
        self.inflight_dir: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.rows]

    def video_path(self, index: int) -> Path:
        return self.root / self.rows[index].path

    def clip_times(self, index: int, generator: torch.Generator | None = None) -> list[np.ndarray]:
        """The timestamps (seconds) the sampler picks for item ``index``."""
        r = self.rows[index]
        return self.sampler(r.duration, r.fps, generator)

    def load(self, index: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Decode and transform item ``index``; raises :class:`VideoDecodeError` on a bad file."""
        row = self.rows[index]
        path = self.root / row.path
        clips = self.clip_times(index, generator)
        times = np.concatenate(clips)
        frames = decode_frames(path, times)  # (V*T, H, W, C) uint8, one seek for all views
        per_clip = frames.split(len(clips[0]))
        views = [self._to_clip(f) for f in per_clip]
        video = views[0] if len(views) == 1 else torch.cat([v if v.ndim == 5 else v[None] for v in views])
        return {"video": video, "label": row.label, "path": str(path), "index": index}

    def _to_clip(self, frames: torch.Tensor) -> torch.Tensor:
        if self.transform is not None:
            return self.transform(frames)
        return frames.permute(3, 0, 1, 2).float().div_(255)

    def __getitem__(self, index: int) -> dict[str, Any] | Skip:
        path = str(self.root / self.rows[index].path)
        self._mark_inflight(path)
        try:
            return self.load(index)
        except VideoDecodeError as exc:
            return Skip(path=path, stage=exc.stage, reason=exc.reason)
        finally:
            self._mark_inflight("")

    def _mark_inflight(self, path: str) -> None:
        """Record the file this worker process is decoding, so a dead worker can be named.

        Only DataLoader worker processes record (a failure in the main process raises there
        with its own traceback). Each worker keeps its file open and rewrites it in place.
        """
        if not self.inflight_dir:
            return
        info = get_worker_info()
        if info is None:
            return
        key = (os.getpid(), self.inflight_dir)
        fd = _INFLIGHT_FDS.get(key)
        if fd is None:
            fd = os.open(os.path.join(self.inflight_dir, f"worker-{info.id}"), os.O_WRONLY | os.O_CREAT, 0o600)
            _INFLIGHT_FDS[key] = fd
        data = path.encode("utf-8")
        os.ftruncate(fd, len(data))
        os.pwrite(fd, data, 0)


# worker process -> open "file in flight" descriptor (one per loader folder)
_INFLIGHT_FDS: dict[tuple[int, str], int] = {}


def subsample_indices_per_class(labels: Sequence[int], per_class: int, *, seed: int = 0) -> list[int]:
    """Indices of at most ``per_class`` items of each label, chosen deterministically by ``seed``."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_label):
        group = by_label[label]
        keep += [group[j] for j in rng.permutation(len(group))[:per_class]]
    return sorted(keep)


def subsample_per_class(rows: Sequence[ManifestRow], per_class: int, *, seed: int = 0) -> list[ManifestRow]:
    """At most ``per_class`` rows of each label, chosen deterministically by ``seed``."""
    return [rows[i] for i in subsample_indices_per_class([r.label for r in rows], per_class, seed=seed)]


def collate_videos(items: list[dict[str, Any] | Skip]) -> dict[str, Any]:
    """Stack the good items; skipped ones travel along in ``batch["skipped"]``."""
    good = [it for it in items if not isinstance(it, Skip)]
    skipped = [it for it in items if isinstance(it, Skip)]
    shapes = {tuple(it["video"].shape) for it in good}
    if len(shapes) > 1:
        sizes = "\n".join(f"  {tuple(it['video'].shape)}  {it['path']}" for it in good)
        raise ValueError(
            "clips of different sizes cannot form a batch (videos of mixed sizes and no transform "
            "that outputs a fixed size); give the dataset transform=vl.data.eval_transform(size=...) "
            f"or train_transform(size=...). Clips (C, T, H, W):\n{sizes}"
        )
    batch: dict[str, Any] = default_collate(good) if good else {}
    batch["skipped"] = skipped
    batch["num_items"] = len(items)
    return batch


def _synchronous_worker_checks_only(iterator: Any) -> None:
    """Turn off torch's SIGCHLD check for this DataLoader iterator. That check raises "worker killed
    by signal" asynchronously in whatever Python code the main thread runs at that moment (the
    caller's loop body, or pytest's reporting), where it cannot become a :class:`WorkerDiedError`.
    The iterator's own check, made while ``next()`` waits for a batch (every
    ``MP_STATUS_CHECK_INTERVAL`` = 5 s), still finds a dead worker, inside ``next()``."""
    if getattr(iterator, "_worker_pids_set", False):
        from torch.utils.data._utils import signal_handling

        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False


class VideoLoader(DataLoader):
    """A ``DataLoader`` over a :class:`VideoDataset` that accounts for skipped items.

    Yields batches of good items only (``video``, ``label``, ``path``, ``index``); adds the
    skips to ``dataset.report``; raises :class:`TooManySkipsError` past the dataset's
    ``max_skip_fraction``; raises :class:`WorkerDiedError` naming the files in flight if a
    worker process dies.
    """

    def __init__(self, dataset: "VideoDataset", *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        # one folder for the loader's lifetime: persistent workers keep the path they started with
        self.inflight_dir = tempfile.mkdtemp(prefix="vidlab-inflight-")
        weakref.finalize(self, shutil.rmtree, self.inflight_dir, True)

    def __iter__(self):  # type: ignore[override]
        ds: VideoDataset = self.dataset  # type: ignore[assignment]
        ds.inflight_dir = self.inflight_dir  # set before the workers start and copy the dataset
        iterator = super().__iter__()
        _synchronous_worker_checks_only(iterator)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (EOFError, ConnectionError) as exc:  # the worker's end of the result pipe vanished
                if self.num_workers > 0:
                    raise WorkerDiedError(_worker_died_message(exc, self.inflight_dir)) from exc
                raise
            except RuntimeError as exc:
                if "exited unexpectedly" in str(exc) or "killed by signal" in str(exc):
                    raise WorkerDiedError(_worker_died_message(exc, self.inflight_dir)) from exc
                raise
            self._account(ds, batch)
            if "video" in batch:
                yield batch

    @staticmethod
    def _account(ds: "VideoDataset", batch: dict[str, Any]) -> None:
        ds.report.seen += batch.pop("num_items")
        skipped = batch.pop("skipped")
        ds.report.skipped.extend(skipped)
        if skipped and ds.report.seen >= min(ds.min_seen, len(ds)) and ds.report.fraction > ds.max_skip_fraction:
            raise TooManySkipsError(
                f"{len(ds.report.skipped)} of {ds.report.seen} videos could not be loaded "
                f"(more than max_skip_fraction={ds.max_skip_fraction:.0%}):\n{ds.report.summary()}"
            )


def _worker_died_message(exc: BaseException, inflight: str) -> str:
    files = []
    for name in sorted(os.listdir(inflight)):
        with open(os.path.join(inflight, name), encoding="utf-8") as fh:
            path = fh.read().strip()
        if path:
            files.append(f"  {name}: {path}")
    where = "\n".join(files) if files else "  (no file was being decoded)"
    return f"a DataLoader worker died ({exc}). Files in flight:\n{where}"


def make_loader(
    dataset: VideoDataset,
    *,
    batch_size: int = 8,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    multiprocessing_context: str | None = None,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    indices: Sequence[int] | None = None,
) -> VideoLoader:
    """A seeded :class:`VideoLoader` (same seed -> same order and same random clips).

    ``indices`` restricts the loader to those items, in that order (``shuffle`` must be off).
    """
    if indices is not None and shuffle:
        raise ValueError("make_loader: give either indices or shuffle=True, not both")
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kw["prefetch_factor"] = prefetch_factor
        if multiprocessing_context:
            kw["multiprocessing_context"] = multiprocessing_context
    return seeded_loader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers,
                         drop_last=drop_last, loader_class=VideoLoader, collate_fn=collate_videos,
                         sampler=list(indices) if indices is not None else None, **kw)
