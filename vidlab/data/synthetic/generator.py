"""Writing the synthetic dataset: one job per video, run in a worker pool, published atomically.

Layout written by :func:`generate`::

    out_dir/videos/<split>/<class_name>/<split>_<index:05d>.mp4   (labelled splits)
    out_dir/videos/unlabeled/unlabeled_<index:05d>.mp4            (label hidden: -1)
    out_dir/manifest.csv                                           (vidlab.data.manifest)
    out_dir/dataset.json                                           (preset, seed, config, classes)

Splits: ``train``/``val``/``test`` and ``unlabeled`` in domain A, ``shift_train``/
``shift_val``/``shift_test`` in domain B. Labelled splits are class balanced
(``label = index % num_classes``). Every video's random stream comes from
``SeedSequence(seed, spawn_key=(split_code, index))``, so generation is reproducible and
independent of the order in which the worker processes finish.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vidlab.data.encode import encode_video
from vidlab.data.manifest import MANIFEST_NAME, ManifestRow, read_manifest, write_manifest
from vidlab.data.synthetic.config import CLASSES, SPLITS, SyntheticConfig, resolve_config
from vidlab.data.synthetic.render import render_video
from vidlab.data.workers import process_pool

GENERATOR_VERSION = 2  # 2: x264 cpu-independent (same bytes on every CPU)
DATASET_JSON = "dataset.json"



@dataclass(frozen=True)
class _Job:
    split: str
    index: int


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of video ``index`` of ``split`` (independent of generation order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS[split][1], int(index))))


def video_label(split: str, index: int, rng: np.random.Generator) -> int:
    """True class of a video: balanced (``index % num_classes``) or, for ``unlabeled``, drawn from ``rng``."""
    hidden = int(rng.integers(len(CLASSES)))  # drawn for every split so the streams line up
    return hidden if split == "unlabeled" else index % len(CLASSES)


def relative_video_path(split: str, index: int, label: int) -> str:
    """Path of a video inside the dataset folder (POSIX separators)."""
    if split == "unlabeled":
        return f"videos/unlabeled/unlabeled_{index:05d}.mp4"
    return f"videos/{split}/{CLASSES[label]}/{split}_{index:05d}.mp4"


def _make_one(job: _Job, *, cfg: SyntheticConfig, seed: int, root: str) -> ManifestRow:
    """Render and encode one video into ``root``; returns its manifest row."""
    rng = video_rng(seed, job.split, job.index)
    label = video_label(job.split, job.index, rng)
    domain = SPLITS[job.split][0]
    frames = render_video(label, rng, cfg, domain=domain)
    rel = relative_video_path(job.split, job.index, label)
    encode_video(frames, Path(root) / rel, cfg.fps, crf=cfg.crf, options={"preset": cfg.encoder_preset})
    shown = -1 if job.split == "unlabeled" else label
    return ManifestRow(
        path=rel, label=shown, split=job.split, num_frames=cfg.num_frames, fps=cfg.fps,
        width=cfg.size, height=cfg.size, duration=cfg.duration,
        label_name=CLASSES[label] if shown >= 0 else "", domain=domain, codec="h264",
    )


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> bool:
    """Rename the finished ``tmp`` folder to ``out_dir``. False if another run got there first."""
    if overwrite and out_dir.exists() and not _is_empty_dir(out_dir):
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / out_dir.name)
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
        return True
    try:
        if _is_empty_dir(out_dir):
            out_dir.rmdir()
        os.rename(tmp, out_dir)
        return True
    except OSError:
        if (out_dir / MANIFEST_NAME).is_file():
            return False
        raise


def generate(
    out_dir: str | os.PathLike,
    *,
    preset: str | SyntheticConfig = "cpu",
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate the synthetic dataset into ``out_dir``; returns the manifest path.

    ``preset`` is ``"smoke"``, ``"cpu"``, ``"full"`` or a :class:`SyntheticConfig`. Videos
    are rendered and encoded by ``workers`` processes (``<= 1``: in this process) into a
    temporary sibling folder that is renamed to ``out_dir`` at the end, so ``out_dir`` never
    holds half a dataset. ``out_dir`` must be missing or empty unless ``overwrite``; if a
    concurrent run finishes first, its dataset is kept and this run's copy discarded.
    """
    cfg = resolve_config(preset)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not _is_empty_dir(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; generate into a missing or empty folder, "
            f"use ensure_dataset() to reuse a finished dataset, or pass overwrite=True"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"generate: seed must be a non-negative int, got {seed!r}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        jobs = [_Job(split, i) for split, count in cfg.split_sizes().items() for i in range(count)]
        make = partial(_make_one, cfg=cfg, seed=int(seed), root=str(tmp))
        bar = tqdm(total=len(jobs), desc=f"synthetic {cfg.name}", unit="video", disable=not progress)
        rows: list[ManifestRow] = []
        if workers <= 1:
            for job in jobs:
                rows.append(make(job))
                bar.update()
        else:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with process_pool(workers) as pool:
                for row in pool.map(make, jobs, chunksize=chunk):
                    rows.append(row)
                    bar.update()
        bar.close()
        order = {split: k for k, split in enumerate(SPLITS)}
        rows.sort(key=lambda r: (order[r.split], r.path.rsplit("_", 1)[-1]))
        write_manifest(rows, tmp / MANIFEST_NAME)
        info = {
            "generator": "vidlab.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "preset": cfg.name,
            "seed": int(seed),
            "config": asdict(cfg),
            "classes": list(CLASSES),
            "splits": cfg.split_sizes(),
            "domains": {split: domain for split, (domain, _) in SPLITS.items()},
        }
        (tmp / DATASET_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if not _move_into_place(tmp, out_dir, overwrite):
            print(f"{out_dir} was completed by another run meanwhile; keeping it and discarding this copy")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def read_dataset_info(data_dir: str | os.PathLike) -> dict | None:
    """``dataset.json`` of a generated dataset (``None`` if the folder has none)."""
    path = Path(data_dir) / DATASET_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def ensure_dataset(
    data_dir: str | os.PathLike,
    *,
    preset: str | SyntheticConfig = "cpu",
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Return ``data_dir/manifest.csv``, generating the synthetic dataset first if needed.

    * ``data_dir/manifest.csv`` exists: it is returned as is (any dataset with a manifest).
    * ``data_dir`` is missing or empty: the synthetic ``preset`` dataset is generated there.
    * ``data_dir`` holds other files but no manifest: ``FileExistsError`` (nothing is touched).
    """
    data_dir = Path(data_dir).expanduser()
    manifest = data_dir / MANIFEST_NAME
    if manifest.is_file():
        info = read_dataset_info(data_dir)
        cfg = resolve_config(preset)
        if info is not None and (info.get("preset") != cfg.name or info.get("seed") != seed):
            print(f"note: {data_dir} holds the synthetic {info.get('preset')!r} dataset (seed {info.get('seed')}), "
                  f"not {cfg.name!r} (seed {seed}); using it as it is")
        return manifest
    if data_dir.exists() and not _is_empty_dir(data_dir):
        if not data_dir.is_dir():
            raise NotADirectoryError(f"DATA_DIR {data_dir} is a file, not a dataset folder")
        raise FileExistsError(
            f"{data_dir} is not empty but has no {MANIFEST_NAME}, so it is not a vidlab dataset. "
            f"To use your own videos there, make a manifest with "
            f"`python data_scripts/prepare_folder.py {data_dir} --out <new folder>` and point DATA_DIR "
            f"at the new folder; "
            f"to get the synthetic dataset, set DATA_DIR to a missing or empty folder."
        )
    cfg = resolve_config(preset)
    print(f"no dataset at {data_dir}: generating the synthetic {cfg.name} dataset (seed {seed}) ...", flush=True)
    start = time.perf_counter()
    path = generate(data_dir, preset=cfg, seed=seed, workers=workers, progress=progress)
    if progress:
        print(f"generated {len(read_manifest(path))} videos in {time.perf_counter() - start:.1f} s -> {path}")
    return path
