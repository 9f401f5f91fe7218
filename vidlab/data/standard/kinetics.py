"""Kinetics-400/600/700: annotation CSV(s) + videos already on disk -> ``manifest.csv``.

Nothing is fetched: videos that are not on disk are counted and listed as missing.
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Sequence

from vidlab.data.prepare import PrepareReport, VideoEntry
from vidlab.data.standard.common import build, dataset_folders, index_by_stem

__all__ = ["build_kinetics_manifest", "parse_kinetics_csv"]

_KINETICS_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                    "validation": "val", "test": "test", "testing": "test"}


def parse_kinetics_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Returns dicts with ``label`` (``""`` when the file has no labels, e.g. a test list),
    ``youtube_id``, ``time_start``/``time_end`` (int seconds) and ``split`` (train/val/test).
    """
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        needed = {"youtube_id", "time_start", "time_end"}
        missing = needed - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             "expected label,youtube_id,time_start,time_end,split")
        for lineno, raw in enumerate(reader, start=2):
            split_text = (raw.get("split") or "").strip().lower() or path.stem.lower()
            split = _KINETICS_SPLITS.get(split_text)
            if split is None:
                raise ValueError(f"{path}:{lineno}: unknown split {split_text!r}")
            try:
                start, end = int(float(raw["time_start"])), int(float(raw["time_end"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{lineno}: time_start/time_end must be numbers, got "
                                 f"{raw.get('time_start')!r}/{raw.get('time_end')!r}") from None
            rows.append({"label": (raw.get("label") or "").strip(), "youtube_id": raw["youtube_id"].strip(),
                         "time_start": start, "time_end": end, "split": split})
    return rows


def build_kinetics_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    annotations: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    classes: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for Kinetics-400/600/700 from annotation CSV(s) and videos you already have.

    ``root`` is searched recursively for ``{youtube_id}_{time_start:06d}_{time_end:06d}.<ext>``
    or ``{youtube_id}.<ext>``; absent videos are counted in ``report.missing`` (never
    fetched). ``annotations`` defaults to every ``*.csv`` directly in ``root``. Labels are
    the sorted label names of the annotations unless ``classes`` fixes the order; rows
    without a label (test lists) get label -1. ``splits`` keeps only some of train/val/test.
    """
    started = time.perf_counter()
    root, out = dataset_folders(root, out, "Kinetics video folder")
    if annotations is None:
        files = sorted(p for p in root.glob("*.csv") if p.name not in ("manifest.csv", "rejected.csv"))
    elif isinstance(annotations, (str, os.PathLike)):
        files = [Path(annotations)]
    else:
        files = [Path(a) for a in annotations]
    if not files:
        raise FileNotFoundError(f"no Kinetics annotation CSV given and none in {root}")
    rows = [row for f in files for row in parse_kinetics_csv(f)]
    if splits is not None:
        keep = {_KINETICS_SPLITS.get(s.lower(), s.lower()) for s in splits}
        rows = [r for r in rows if r["split"] in keep]
    names = list(classes) if classes is not None else sorted({r["label"] for r in rows if r["label"]})
    label_of = {name: i for i, name in enumerate(names)}
    by_stem = index_by_stem(root)
    entries, missing, bad = [], [], []
    for r in rows:
        clip = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
        path = by_stem.get(clip) or by_stem.get(r["youtube_id"])
        if path is None:
            missing.append(clip)
            continue
        if r["label"] and r["label"] not in label_of:
            bad.append((str(path), f"label {r['label']!r} is not in the given class list"))
            continue
        label = label_of[r["label"]] if r["label"] else -1
        entries.append(VideoEntry(str(path), label, r["split"], r["label"]))
    return build(entries, out, workers=workers, progress=progress, missing=missing, rejected_extra=bad,
                 class_order=names, started=started)
