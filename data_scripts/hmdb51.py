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

import argparse
import sys
from pathlib import Path

from vidlab.data.standard import (
    HMDB51_SPLITS_URL,
    HMDB51_URL,
    ArchiveError,
    DownloadError,
    build_hmdb51_manifest,
    extract_nested,
    fetch_and_extract,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", help="folder to download and extract into")
    where.add_argument("--root", help="an already extracted copy (split files and <class>/ folders inside)")
    parser.add_argument("--out", help="folder for manifest.csv and rejected.csv (default: the data folder)")
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official split (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="parallel probing processes (default 2)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of train source films used for val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val carve-out (default 0)")
    parser.add_argument("--url", default=HMDB51_URL, help="videos archive URL (default: the official one)")
    parser.add_argument("--archive", help="local copy of the videos archive (skips the download)")
    parser.add_argument("--sha256", help="expected SHA-256 of the videos archive")
    parser.add_argument("--md5", help="expected MD5 of the videos archive")
    parser.add_argument("--splits-url", default=HMDB51_SPLITS_URL, help="split files archive URL")
    parser.add_argument("--splits-archive", help="local copy of the split files archive")
    parser.add_argument("--splits-sha256", help="expected SHA-256 of the split files archive")
    parser.add_argument("--splits-md5", help="expected MD5 of the split files archive")
    parser.add_argument("--no-resume", action="store_true", help="restart downloads instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = not args.quiet
    try:
        if args.root:
            root = Path(args.root)
        else:
            root = Path(args.data_dir)
            fetch_and_extract(args.splits_url, root, archive=args.splits_archive, sha256=args.splits_sha256,
                              md5=args.splits_md5, resume=not args.no_resume, progress=progress)
            fetch_and_extract(args.url, root, archive=args.archive, sha256=args.sha256, md5=args.md5,
                              resume=not args.no_resume, progress=progress)
            # The official archive holds one archive per class (brush_hair.rar, ...): unpack those.
            folders = [root] + [p for p in root.iterdir() if p.is_dir() and p.name != "downloads"]
            for folder in folders:
                extract_nested(folder)
        report = build_hmdb51_manifest(root, args.out or root, split=args.split, workers=args.workers,
                                       val_fraction=args.val_fraction, seed=args.seed, progress=progress)
    except (DownloadError, ArchiveError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
