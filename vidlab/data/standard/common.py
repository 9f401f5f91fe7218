"""What the standard-dataset builders share: finding folders and videos, carving a val split
by whole groups, and validating the videos into ``manifest.csv`` + ``rejected.csv``."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vidlab.data.prepare import VIDEO_EXTENSIONS, PrepareReport, VideoEntry, manifest_from_entries, write_rejected


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file (bytes that are not UTF-8 are replaced)."""
    text = path.read_bytes().decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_dir(root: Path, name: str, *, max_depth: int = 3) -> Path | None:
    """``root/name`` or the shallowest folder called ``name`` under ``root``."""
    if root.name == name and root.is_dir():
        return root
    frontier = [root]
    for _ in range(max_depth):
        next_frontier = []
        for folder in frontier:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                if child.name == name:
                    return child
            next_frontier.extend(children)
        frontier = next_frontier
    return None


def _videos(root: Path):
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            yield path


def index_by_folder(root: Path) -> dict[tuple[str, str], Path]:
    """Map (parent folder name, file name), both lower-cased, to every video under ``root``."""
    index: dict[tuple[str, str], Path] = {}
    for path in _videos(root):
        index.setdefault((path.parent.name.lower(), path.name.lower()), path)
    return index


def index_by_stem(root: Path) -> dict[str, Path]:
    """Map file name without extension to every video under ``root`` (first one wins)."""
    index: dict[str, Path] = {}
    for path in _videos(root):
        index.setdefault(path.stem, path)
    return index


def check_split(split: int) -> None:
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3 (the official splits), got {split!r}")


def dataset_folders(root: str | os.PathLike, out: str | os.PathLike | None, what: str) -> tuple[Path, Path]:
    """``(root, out)`` as paths (``out`` defaults to ``root``); ``root`` must be a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {root} does not exist")
    return root, Path(out) if out is not None else root


@dataclass(frozen=True)
class OfficialVideo:
    """A video of an official split: ``official`` is ``train`` or ``test``; ``group`` ties
    videos that must stay on the same side of the train/val cut (same actors, same film)."""

    path: Path
    label: int
    official: str
    group: str


def carve_val(groups: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """Pick whole groups for val (at least one when there are two or more groups)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(groups))
    if val_fraction == 0 or len(unique) < 2:
        return set()
    k = min(max(1, round(len(unique) * val_fraction)), len(unique) - 1)
    return set(random.Random(seed).sample(unique, k))


def entries_with_val(found: Sequence[OfficialVideo], classes: Sequence[str], *, val_fraction: float,
                     seed: int) -> list[VideoEntry]:
    """Official test stays ``test``; ``val`` takes whole groups of the official train videos present."""
    val_groups = carve_val([v.group for v in found if v.official == "train"], val_fraction, seed)
    return [
        VideoEntry(str(v.path), v.label, "val" if v.official == "train" and v.group in val_groups else v.official,
                   classes[v.label])
        for v in found
    ]


def build(entries: list[VideoEntry], out: Path, *, workers: int, progress: bool, missing: Sequence[str],
          rejected_extra: Sequence[tuple[str, str]] = (), class_order: Sequence[str], started: float) -> PrepareReport:
    """Validate ``entries`` (in ``workers`` processes) and write the manifest and ``rejected.csv``."""
    report = manifest_from_entries(entries, out, workers=workers, progress=False, missing=missing,
                                   class_order=class_order, started=started)
    if rejected_extra:
        report.rejected = sorted(report.rejected + list(rejected_extra))
        report.rejected_csv = write_rejected(report.rejected, out)
    if progress:
        print(report.summary())
    return report

