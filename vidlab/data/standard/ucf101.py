"""UCF101: the official split lists -> ``manifest.csv`` (val carved from train by ``gXX`` group)."""
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

# Official archives. No published checksums are bundled: pass sha256=/md5= (CLI --sha256/--md5)
# once you know the digest of your copy, so a re-download is verified against it.
UCF101_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar"
UCF101_SPLITS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"

__all__ = ["UCF101_SPLITS_URL", "UCF101_URL", "build_ucf101_manifest", "parse_ucf101_splits"]

_UCF_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def parse_ucf101_splits(split_dir: str | os.PathLike, split: int = 1) -> tuple[list[str], list[str], list[str]]:
    """Read ``classInd.txt``, ``trainlist0{split}.txt`` and ``testlist0{split}.txt``.

    Returns ``(class_names, train_paths, test_paths)``; class ``i`` (0-based) is line
    ``i + 1`` of classInd, paths are as listed (``Class/v_Class_gXX_cYY.avi``).
    """
    check_split(split)
    split_dir = Path(split_dir)
    needed = [split_dir / "classInd.txt", split_dir / f"trainlist0{split}.txt", split_dir / f"testlist0{split}.txt"]
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"UCF101 split file {path} is missing (from {UCF101_SPLITS_URL})")
    by_index: dict[int, str] = {}
    for line in read_lines(needed[0]):
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip():
            raise ValueError(f"{needed[0]}: cannot parse line {line!r} (expected '<index> <ClassName>')")
        by_index[int(index)] = name.strip()
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise ValueError(f"{needed[0]}: class indices must run 1..N, got {sorted(by_index)}")
    classes = [by_index[i] for i in range(1, len(by_index) + 1)]
    train = [line.split()[0].replace("\\", "/") for line in read_lines(needed[1])]
    test = [line.split()[0].replace("\\", "/") for line in read_lines(needed[2])]
    return classes, train, test


def build_ucf101_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: int = 1,
    workers: int = 2,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for official UCF101 split ``split`` (1, 2 or 3).

    ``root`` holds ``ucfTrainTestlist/`` and ``UCF-101/<Class>/v_*.avi`` (found up to 3
    folders down). label = classInd index - 1. ``val`` is carved from the official train
    list by whole ``gXX`` groups (the same group is never in both train and val); the
    official test list is ``test``. ``out`` defaults to ``root``.
    """
    started = time.perf_counter()
    root, out = dataset_folders(root, out, "UCF101 root")
    split_dir = find_dir(root, "ucfTrainTestlist")
    if split_dir is None:
        raise FileNotFoundError(f"no ucfTrainTestlist/ folder under {root} (extract {UCF101_SPLITS_URL} there)")
    classes, train, test = parse_ucf101_splits(split_dir, split)
    index = index_by_folder(find_dir(root, "UCF-101") or root)
    label_of = {name.lower(): i for i, name in enumerate(classes)}
    found, missing, bad = [], [], []
    for official, listed in (("train", train), ("test", test)):
        for rel in listed:
            folder, _, filename = rel.rpartition("/")
            label = label_of.get(folder.lower())
            if label is None:
                bad.append((rel, f"class folder {folder!r} is not in classInd.txt"))
                continue
            path = index.get((folder.lower(), filename.lower()))
            if path is None:
                missing.append(rel)
                continue
            # gXX groups share actors and background: val takes whole groups
            group = m.group(1).lstrip("0") if (m := _UCF_GROUP.search(filename)) else filename
            found.append(OfficialVideo(path, label, official, group))
    entries = entries_with_val(found, classes, val_fraction=val_fraction, seed=seed)
    return build(entries, out, workers=workers, progress=progress, missing=missing, rejected_extra=bad,
                 class_order=classes, started=started)
