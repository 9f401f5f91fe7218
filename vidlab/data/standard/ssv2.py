"""Something-Something v2: its JSON annotation files + a folder of ``{id}.webm`` -> ``manifest.csv``."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vidlab.data.prepare import PrepareReport, VideoEntry
from vidlab.data.standard.common import build, dataset_folders, index_by_stem

__all__ = ["build_ssv2_manifest"]

_SSV2_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json",
               "test": "something-something-v2-test.json"}


def _template_key(template: str) -> str:
    return " ".join(template.replace("[", "").replace("]", "").split()).lower()


def build_ssv2_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    annotations: str | os.PathLike | None = None,
    workers: int = 2,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for Something-Something v2 from its JSON files and a folder of ``{id}.webm``.

    ``annotations`` (default ``root``) holds ``labels.json`` (template -> id) and
    ``something-something-v2-{train,validation}.json`` (``id``, ``template`` with
    ``[something]`` brackets); an optional ``-test.json`` adds unlabelled (-1) test rows.
    Official train -> ``train``, validation -> ``val``. Absent videos go to ``report.missing``.
    """
    started = time.perf_counter()
    root, out = dataset_folders(root, out, "SSv2 video folder")
    ann = Path(annotations) if annotations is not None else root
    labels_path = ann / "labels.json"
    if not labels_path.is_file():
        raise FileNotFoundError(f"SSv2 labels file {labels_path} is missing")
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    by_id = {int(v): k for k, v in labels.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{labels_path}: label ids must run 0..N-1")
    names = [by_id[i] for i in range(len(by_id))]
    label_of = {_template_key(t): i for i, t in enumerate(names)}
    by_stem = index_by_stem(root)
    entries, missing, bad = [], [], []
    for split_name, filename in _SSV2_FILES.items():
        path = ann / filename
        if not path.is_file():
            if split_name != "test":
                raise FileNotFoundError(f"SSv2 annotation file {path} is missing")
            continue
        for item in json.loads(path.read_text(encoding="utf-8")):
            video_id = str(item["id"])
            video = by_stem.get(video_id)
            if video is None:
                missing.append(f"{video_id}.webm")
                continue
            if split_name == "test":
                entries.append(VideoEntry(str(video), -1, "test", ""))
                continue
            label = label_of.get(_template_key(item.get("template", "")))
            if label is None:
                bad.append((str(video), f"template {item.get('template')!r} is not in labels.json"))
                continue
            entries.append(VideoEntry(str(video), label, split_name, names[label]))
    return build(entries, out, workers=workers, progress=progress, missing=missing, rejected_extra=bad,
                 class_order=names, started=started)
