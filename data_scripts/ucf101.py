#!/usr/bin/env python
r"""UCF101: download (resumable, checksummed), extract and build a manifest for split 1, 2 or 3.

    python data_scripts/ucf101.py --data-dir data/ucf101                  # download + extract + manifest
    python data_scripts/ucf101.py --data-dir data/ucf101 --archive ~/UCF101.rar \
        --splits-archive ~/UCF101TrainTestSplits-RecognitionTask.zip     # local copies, no download
    python data_scripts/ucf101.py --root /datasets/ucf101 --split 2      # already extracted

The .rar needs `unrar`, `7z`/`7zz` or `bsdtar` on PATH. The manifest (paths relative to its
folder) goes to --out (default: the data folder). Exit code 0 when at least one video was
accepted, 1 when none, 2 on a download/extract/layout error.
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
    UCF101_SPLITS_URL,
    UCF101_URL,
    build_ucf101_manifest,
    official_dataset_cli,
)


def main(argv: list[str] | None = None) -> int:
    return official_dataset_cli(
        argv, description=__doc__, url=UCF101_URL, splits_url=UCF101_SPLITS_URL,
        build=build_ucf101_manifest, root_help="an already extracted copy (ucfTrainTestlist/ and UCF-101/ inside)",
    )


if __name__ == "__main__":
    sys.exit(main())
