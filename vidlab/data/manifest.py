"""``manifest.csv``: one row per video, written beside the videos.

Required columns: ``path,label,split,num_frames,fps,width,height,duration`` (``path`` is
relative to the manifest's folder; ``label`` is ``-1`` for unlabelled videos). Optional:
``label_name``, ``domain``, ``codec``. A dataset is built from these rows alone, so building
it decodes nothing.
"""
from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from vidlab.utils import atomic_path

REQUIRED_COLUMNS = ("path", "label", "split", "num_frames", "fps", "width", "height", "duration")
OPTIONAL_COLUMNS = ("label_name", "domain", "codec")
MANIFEST_NAME = "manifest.csv"


class ManifestError(ValueError):
    """A manifest that cannot be read: names the file, the line and the column."""


@dataclass(frozen=True)
class ManifestRow:
    path: str
    label: int
    split: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration: float
    label_name: str = ""
    domain: str = ""
    codec: str = ""


_CASTS = {f.name: f.type for f in fields(ManifestRow)}
_TYPES = {"int": int, "float": float, "str": str}


def manifest_path(root_or_file: str | os.PathLike) -> Path:
    """Accept a dataset folder or the manifest file itself."""
    p = Path(root_or_file)
    return p / MANIFEST_NAME if p.is_dir() or p.suffix != ".csv" else p


def write_manifest(rows: Iterable[ManifestRow], path: str | os.PathLike) -> Path:
    """Write rows atomically (temp file + ``os.replace``); returns the manifest path."""
    path = manifest_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            d = asdict(row)
            d["fps"] = f"{row.fps:.6g}"
            d["duration"] = f"{row.duration:.6g}"
            writer.writerow(d)
    return path


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read and validate a manifest; errors name the file, line and column."""
    path = manifest_path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here (make one with data_scripts/prepare_folder.py)")
    rows: list[ManifestRow] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; need {','.join(REQUIRED_COLUMNS)}")
        for lineno, raw in enumerate(reader, start=2):
            values = {}
            for name, typ in _CASTS.items():
                text = raw.get(name)
                if text is None or text == "":
                    if name in OPTIONAL_COLUMNS:
                        continue
                    raise ManifestError(f"{path}:{lineno}: empty value in column {name!r}")
                try:
                    values[name] = _TYPES[typ](text)
                except ValueError:
                    raise ManifestError(f"{path}:{lineno}: column {name!r} should be {typ}, got {text!r}") from None
            rows.append(ManifestRow(**values))
    return rows


def splits(rows: Sequence[ManifestRow]) -> dict[str, int]:
    """Row count per split."""
    out: dict[str, int] = {}
    for r in rows:
        out[r.split] = out.get(r.split, 0) + 1
    return out


def class_names(rows: Sequence[ManifestRow]) -> list[str]:
    """Class names indexed by label (``label_name`` if present, else ``class_<i>``)."""
    names: dict[int, str] = {}
    for r in rows:
        if r.label >= 0:
            names.setdefault(r.label, r.label_name or f"class_{r.label}")
    n = max(names) + 1 if names else 0
    return [names.get(i, f"class_{i}") for i in range(n)]
