"""Bring your own videos: validate a folder of class sub-folders and write a manifest.

``src/<class>/<video>`` (any common container) becomes::

    out/videos/<class>/<video>     hardlinked, copied, or re-encoded to H.264 mp4
    out/manifest.csv               stratified train/val/test splits, real metadata
    out/rejected.csv               every file that could not be used, with the reason

Every file is checked (``io.probe`` plus decoding its first frame); one bad file never
stops a run, it is listed in ``rejected.csv``. The same validation is used by the
standard-dataset builders in :mod:`vidlab.data.standard` through
:func:`manifest_from_entries`.
"""
from __future__ import annotations

import csv
import os
import random
import shutil
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from vidlab.utils import atomic_path
from vidlab.data.manifest import ManifestRow, write_manifest
from vidlab.data.reencode import reencode_video
from vidlab.data.workers import process_pool

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
     ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".ogg"}
)
SPLITS = ("train", "val", "test")
REJECTED_NAME = "rejected.csv"


# --------------------------------------------------------------------------- report


@dataclass
class PrepareReport:
    """What a prepare/build run did.

    ``class_counts`` maps class name -> split -> number of accepted videos; ``rejected``
    holds ``(path, reason)`` pairs; ``missing`` lists videos named by an annotation file
    that are not on disk (standard datasets only).
    """

    accepted: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    manifest: Path | None = None
    rejected_csv: Path | None = None

    @property
    def split_counts(self) -> dict[str, int]:
        """Accepted videos per split."""
        totals: dict[str, int] = {}
        for per_split in self.class_counts.values():
            for split, n in per_split.items():
                totals[split] = totals.get(split, 0) + n
        return totals

    def summary(self, max_listed: int = 10, max_classes: int = 40) -> str:
        """A human-readable multi-line summary (class table, splits, first rejections).

        At most ``max_classes`` class rows and ``max_listed`` rejected/missing paths are shown.
        """
        splits = [s for s in SPLITS if s in self.split_counts] + sorted(
            s for s in self.split_counts if s not in SPLITS
        )
        lines = [
            f"accepted {self.accepted} video(s), rejected {len(self.rejected)}"
            + (f", missing {len(self.missing)}" if self.missing else "")
            + f" in {self.seconds:.1f} s"
        ]
        if self.class_counts:
            width = max(len("class"), *(len(c) for c in self.class_counts))
            lines.append(f"  {'class':<{width}}  " + "  ".join(f"{s:>6}" for s in splits))
            for name, per_split in list(self.class_counts.items())[:max_classes]:
                lines.append(f"  {name:<{width}}  " + "  ".join(f"{per_split.get(s, 0):>6}" for s in splits))
            if len(self.class_counts) > max_classes:
                lines.append(f"  ... and {len(self.class_counts) - max_classes} more classes")
            lines.append(f"  {'total':<{width}}  " + "  ".join(f"{self.split_counts[s]:>6}" for s in splits))
        for path, reason in self.rejected[:max_listed]:
            lines.append(f"  rejected {path}: {reason}")
        if len(self.rejected) > max_listed:
            where = f" (see {self.rejected_csv})" if self.rejected_csv else ""
            lines.append(f"  ... and {len(self.rejected) - max_listed} more rejected{where}")
        for path in self.missing[:max_listed]:
            lines.append(f"  missing {path}")
        if len(self.missing) > max_listed:
            lines.append(f"  ... and {len(self.missing) - max_listed} more missing")
        if self.manifest is not None:
            lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- per-file work


@dataclass(frozen=True)
class _Job:
    """One file to check; ``mode`` is "probe" (leave in place), "link" or "reencode"."""

    src: str
    key: str
    mode: str = "probe"
    dest: str | None = None
    short_side: int | None = None
    fps: float | None = None


def _describe(exc: BaseException) -> str:
    """A one-line reason for rejected.csv."""
    stage, reason = getattr(exc, "stage", None), getattr(exc, "reason", None)
    if stage and reason:
        return f"{stage}: {reason}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


def validate_video(path: str | os.PathLike):
    """Probe ``path`` and decode its first frame; returns the ``VideoInfo``.

    Raises ``VideoDecodeError`` (from :mod:`vidlab.data.io`) when the file is unusable.
    """
    from vidlab.data.io import VideoDecodeError, decode_frames, probe

    info = probe(path)
    frames = decode_frames(path, [0.0])
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise VideoDecodeError(path, "decode", f"decoding the first frame gave shape {tuple(frames.shape)}")
    return info


def _place(src: Path, dest: Path) -> None:
    """Hardlink ``src`` at ``dest`` (copy when linking is not possible)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        if dest.exists() and os.path.samefile(src, dest):
            return
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        with atomic_path(dest, fsync=False) as tmp:
            shutil.copy2(src, tmp)


def _process(job: _Job):
    """Validate one file and place/re-encode it; returns ``(key, info or None, reason or None)``.

    Runs in a worker process: every failure is turned into a reason, never raised.
    """
    try:
        info = validate_video(job.src)
        if job.mode == "link":
            _place(Path(job.src), Path(job.dest))
        elif job.mode == "reencode":
            reencode_video(job.src, job.dest, short_side=job.short_side, fps=job.fps)
            info = validate_video(job.dest)
        return job.key, info, None
    except Exception as exc:  # noqa: BLE001 - every failure becomes a rejection reason
        return job.key, None, _describe(exc)


def _run_jobs(jobs: Sequence[_Job], *, workers: int = 2, progress: bool = True, desc: str = "checking videos"):
    """Run ``_process`` over ``jobs`` (a process pool when ``workers > 1``).

    Returns ``{key: (info, reason)}``. A worker that dies (for example a crash inside
    FFmpeg) does not end the run: the files it had in flight are retried one at a time in
    a fresh worker, so the crash is pinned on the file that causes it.
    """
    results: dict[str, tuple] = {}
    bar = tqdm(total=len(jobs), desc=desc, unit="video", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                key, info, reason = _process(job)
                results[key] = (info, reason)
                bar.update()
            return results
        retry: list[_Job] = []
        with process_pool(min(workers, len(jobs))) as pool:
            futures = {pool.submit(_process, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    key, info, reason = future.result()
                except BrokenProcessPool:
                    retry.append(futures[future])
                    continue
                results[key] = (info, reason)
                bar.update()
        for job in sorted(retry, key=lambda j: j.key):
            with process_pool(1) as pool:
                try:
                    key, info, reason = pool.submit(_process, job).result()
                    results[key] = (info, reason)
                except BrokenProcessPool:
                    results[job.key] = (None, "the worker process crashed while decoding this file")
            bar.update()
        return results
    finally:
        bar.close()


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class VideoEntry:
    """One video to validate and list: ``path`` on disk, its label/split and class name."""

    path: str
    label: int
    split: str
    label_name: str = ""


def _relative(path: str | os.PathLike, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def write_rejected(rejected: Iterable[tuple[str, str]], out: str | os.PathLike) -> Path:
    """Write ``out/rejected.csv`` (columns ``path,reason``); always written, even empty."""
    path = Path(out) / REJECTED_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        writer.writerows(rejected)
    return path


def _finish(
    rows: list[ManifestRow],
    rejected: list[tuple[str, str]],
    out: Path,
    started: float,
    class_order: Sequence[str],
    missing: Sequence[str] = (),
) -> PrepareReport:
    rows.sort(key=lambda r: (SPLITS.index(r.split) if r.split in SPLITS else len(SPLITS), r.label, r.path))
    rejected = sorted(rejected)
    counts: dict[str, dict[str, int]] = {name: {} for name in class_order}
    for row in rows:
        name = row.label_name or (f"class_{row.label}" if row.label >= 0 else "unlabelled")
        per_split = counts.setdefault(name, {})
        per_split[row.split] = per_split.get(row.split, 0) + 1
    report = PrepareReport(
        accepted=len(rows),
        rejected=rejected,
        class_counts={k: v for k, v in counts.items() if v},
        missing=list(missing),
    )
    if rows:
        report.manifest = write_manifest(rows, out)
    report.rejected_csv = write_rejected(rejected, out)
    report.seconds = time.perf_counter() - started
    return report


def _row(info, rel_path: str, label: int, split: str, label_name: str) -> ManifestRow:
    return ManifestRow(
        path=rel_path,
        label=label,
        split=split,
        num_frames=int(info.num_frames),
        fps=float(info.fps),
        width=int(info.width),
        height=int(info.height),
        duration=float(info.duration),
        label_name=label_name,
        codec=str(info.codec or ""),
    )


def manifest_from_entries(
    entries: Sequence[VideoEntry],
    out: str | os.PathLike,
    *,
    workers: int = 2,
    progress: bool = True,
    missing: Sequence[str] = (),
    class_order: Sequence[str] = (),
    started: float | None = None,
) -> PrepareReport:
    """Validate every entry's video in place and write ``out/manifest.csv`` + ``out/rejected.csv``.

    Manifest paths are relative to ``out`` (they may start with ``..`` when the videos
    live outside it). Used by the standard-dataset builders.
    """
    started = time.perf_counter() if started is None else started
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [_Job(src=str(e.path), key=str(e.path)) for e in entries]
    results = _run_jobs(jobs, workers=workers, progress=progress)
    rows, rejected = [], []
    for entry in entries:
        info, reason = results[str(entry.path)]
        if info is None:
            rejected.append((str(entry.path), reason))
        else:
            rows.append(_row(info, _relative(entry.path, out), entry.label, entry.split, entry.label_name))
    report = _finish(rows, rejected, out, started, class_order, missing)
    if progress:
        print(report.summary())
    return report


def stratified_split(
    keys_by_class: dict[str, Sequence[str]],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, str]:
    """Assign each key a split, class by class (deterministic under ``seed``).

    Each class with at least 3 videos gets at least one val and one test video (when the
    fraction is above 0) and always keeps at least one training video.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    assignment: dict[str, str] = {}
    for name in sorted(keys_by_class):
        keys = sorted(keys_by_class[name])
        random.Random(f"{seed}:{name}").shuffle(keys)
        n = len(keys)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        while n - n_test - n_val < 1 and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for i, key in enumerate(keys):
            assignment[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def _check_no_overlap(src: Path, out: Path) -> None:
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise ValueError(f"out ({out}) and src ({src}) must not contain each other; pick a separate output folder")


def prepare_folder(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    short_side: int | None = None,
    fps: float | None = None,
    workers: int = 2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> PrepareReport:
    """Turn ``src/<class>/<video>`` into ``out/videos``, ``out/manifest.csv`` and ``out/rejected.csv``.

    Labels are the sorted class-folder names (classes left with no usable video are
    dropped and the remaining ones numbered densely). Without ``short_side``/``fps`` the
    files are hardlinked (or copied) unchanged; with either, they are re-encoded to H.264
    mp4 in ``workers`` processes. Splits are stratified per class (see
    :func:`stratified_split`). Prints a summary when ``progress`` is true.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"source folder {src} does not exist")
    if not src.is_dir():
        raise NotADirectoryError(f"source {src} is not a folder; expected {src}/<class>/<video files>")
    _check_no_overlap(src, out)
    # Validate the split fractions before any work is done.
    stratified_split({}, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    class_dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"{src} has no class folders; expected one sub-folder per class, e.g. {src}/cats/clip1.mp4"
        )
    reencode = short_side is not None or fps is not None
    rejected: list[tuple[str, str]] = []
    for path in sorted(src.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            rejected.append((str(path), f"not inside a class folder (expected {src}/<class>/{path.name})"))

    jobs: list[_Job] = []
    class_of: dict[str, str] = {}
    used: set[str] = set()
    for class_dir in class_dirs:
        for path in sorted(class_dir.rglob("*")):
            rel = path.relative_to(src)
            if any(part.startswith(".") for part in rel.parts) or not path.is_file():
                continue
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                rejected.append((str(path), f"unsupported file extension {path.suffix or '(none)'!r}; "
                                 f"expected one of {' '.join(sorted(VIDEO_EXTENSIONS))}"))
                continue
            dest_rel = Path("videos") / (rel.with_suffix(".mp4") if reencode else rel)
            if dest_rel.as_posix().lower() in used:  # e.g. a.mov and a.mkv both re-encoded to a.mp4
                stem, n = f"{dest_rel.stem}_{path.suffix.lower().lstrip('.')}", 1
                candidate = dest_rel.with_name(stem + dest_rel.suffix)
                while candidate.as_posix().lower() in used:
                    n += 1
                    candidate = dest_rel.with_name(f"{stem}_{n}{dest_rel.suffix}")
                dest_rel = candidate
            used.add(dest_rel.as_posix().lower())
            jobs.append(_Job(src=str(path), key=dest_rel.as_posix(), mode="reencode" if reencode else "link",
                             dest=str(out / dest_rel), short_side=short_side, fps=fps))
            class_of[dest_rel.as_posix()] = class_dir.name
    out.mkdir(parents=True, exist_ok=True)
    results = _run_jobs(jobs, workers=workers, progress=progress,
                       desc="re-encoding videos" if reencode else "checking videos")

    accepted: dict[str, list[str]] = {}
    for job in jobs:
        info, reason = results[job.key]
        if info is None:
            rejected.append((job.src, reason))
        else:
            accepted.setdefault(class_of[job.key], []).append(job.key)
    class_names = sorted(accepted)
    split_of = stratified_split(accepted, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    rows = [
        _row(results[key][0], key, class_names.index(name), split_of[key], name)
        for name in class_names
        for key in accepted[name]
    ]
    report = _finish(rows, rejected, out, started, class_names)
    empty = [d.name for d in class_dirs if d.name not in accepted]
    if progress:
        print(report.summary())
        if empty:
            print(f"class folder(s) with no usable video, left out of the labels: {', '.join(empty)}")
    return report


__all__ = [
    "PrepareReport",
    "VIDEO_EXTENSIONS",
    "VideoEntry",
    "manifest_from_entries",
    "prepare_folder",
    "reencode_video",
    "stratified_split",
    "validate_video",
    "write_rejected",
]
