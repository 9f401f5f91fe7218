"""HMDB51: the official split files -> ``manifest.csv`` (val carved from train by source film)."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from vidlab.data.prepare import PrepareReport
from vidlab.data.standard.common import (
    OfficialVideo,
    build,
    check_split,
    dataset_folders,
    entries_with_val,
    find_dir,
    index_by_folder,
    read_lines,
)
from vidlab.data.standard.fetch import extract_nested

HMDB51_URL = "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/hmdb51_org.rar"
HMDB51_SPLITS_URL = "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/test_train_splits.rar"

__all__ = ["HMDB51_SPLITS_URL", "HMDB51_URL", "build_hmdb51_manifest", "extract_hmdb51_class_archives",
           "parse_hmdb51_splits"]

_HMDB_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")


def parse_hmdb51_splits(split_dir: str | os.PathLike, split: int = 1) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Read ``<class>_test_split{split}.txt`` files (``video.avi 1|2|0``).

    Returns ``(class_names sorted, [(class, video, flag)])`` with flag 1 = train,
    2 = test, 0 = unused.
    """
    check_split(split)
    split_dir = Path(split_dir)
    files = sorted(p for p in split_dir.glob(f"*_test_split{split}.txt"))
    if not files:
        raise FileNotFoundError(f"no *_test_split{split}.txt files in {split_dir} (from {HMDB51_SPLITS_URL})")
    classes, rows = [], []
    for path in files:
        name = _HMDB_SPLIT_FILE.match(path.name).group("cls")
        classes.append(name)
        for line in read_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}: cannot parse line {line!r} (expected '<video>.avi 0|1|2')")
            rows.append((name, parts[0], int(parts[1])))
    return sorted(classes), rows


def _hmdb_source(video: str, class_name: str) -> str:
    """The source film of an HMDB51 clip (text before ``_<class>_``), used to group val."""
    stem = Path(video).stem
    head, sep, _ = stem.partition(f"_{class_name}_")
    return head if sep else re.sub(r"_\d+$", "", stem)


def build_hmdb51_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: int = 1,
    workers: int = 2,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for official HMDB51 split ``split`` (1, 2 or 3).

    ``root`` holds the split files (``testTrainMulti_7030_splits/`` or any folder with
    ``*_test_split1.txt``) and ``<class>/<video>.avi``. Labels follow the sorted class
    names. ``val`` is carved from train by whole source films (the text before
    ``_<class>_`` in the file name), official test is ``test``, flag-0 videos are left out.
    """
    started = time.perf_counter()
    root, out = dataset_folders(root, out, "HMDB51 root")
    split_dir = find_dir(root, "testTrainMulti_7030_splits")
    if split_dir is None:
        hit = next(iter(sorted(root.rglob("*_test_split1.txt"))), None)
        if hit is None:
            raise FileNotFoundError(f"no HMDB51 split files (*_test_split1.txt) under {root}")
        split_dir = hit.parent
    classes, rows = parse_hmdb51_splits(split_dir, split)
    index = index_by_folder(root)
    label_of = {name: i for i, name in enumerate(classes)}
    found, missing = [], []
    for class_name, video, flag in rows:
        if flag == 0:
            continue
        path = index.get((class_name.lower(), video.lower()))
        if path is None:
            missing.append(f"{class_name}/{video}")
            continue
        official = "train" if flag == 1 else "test"
        found.append(OfficialVideo(path, label_of[class_name], official, _hmdb_source(video, class_name)))
    entries = entries_with_val(found, classes, val_fraction=val_fraction, seed=seed)
    return build(entries, out, workers=workers, progress=progress, missing=missing,
                 class_order=classes, started=started)


def extract_hmdb51_class_archives(root: Path) -> None:
    """The official HMDB51 archive holds one archive per class (brush_hair.rar, ...): unpack those."""
    for folder in [root] + [p for p in root.iterdir() if p.is_dir() and p.name != "downloads"]:
        extract_nested(folder)
