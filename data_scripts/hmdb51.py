#!/usr/bin/env python
r"""HMDB51: download (resumable, checksummed), extract and build a manifest for split 1, 2 or 3.

    python data_scripts/hmdb51.py --data-dir data/hmdb51                  # download + extract + manifest
    python data_scripts/hmdb51.py --data-dir data/hmdb51 --archive ~/hmdb51_org.rar \
        --splits-archive ~/test_train_splits.rar                          # local copies, no download
    python data_scripts/hmdb51.py --root /datasets/hmdb51 --split 3      # already extracted

The official archive holds one archive per class; those are extracted too. .rar needs
`unrar`, `7z`/`7zz` or `bsdtar` on PATH. Exit code 0 when at least one video was accepted,
1 when none, 2 on a download/extract/layout error.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import vidlab  # noqa: F401  (a Python without vidlab gets the command that works, not a bare traceback)
except ModuleNotFoundError as exc:
    sys.exit(f"error: {exc} in {sys.executable}. Run this script with the environment's Python "
             f"(`make venv` creates it), from the repository root: .venv/bin/python data_scripts/{Path(__file__).name} --help")

from vidlab.data.standard import (
    HMDB51_SPLITS_URL,
    HMDB51_URL,
    build_hmdb51_manifest,
    official_dataset_cli,
    extract_hmdb51_class_archives,
)


def main(argv: list[str] | None = None) -> int:
    return official_dataset_cli(
        argv, description=__doc__, url=HMDB51_URL, splits_url=HMDB51_SPLITS_URL,
        build=build_hmdb51_manifest, root_help="an already extracted copy (split files and <class>/ folders inside)",
        after_extract=extract_hmdb51_class_archives,
    )


if __name__ == "__main__":
    sys.exit(main())
