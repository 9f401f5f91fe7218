#!/usr/bin/env python
r"""Kinetics-400/600/700: annotation CSV(s) + a folder of videos you already have -> manifest.

    python data_scripts/kinetics.py --videos /datasets/k400 --annotations train.csv validate.csv

Videos are looked up recursively as {youtube_id}_{time_start:06d}_{time_end:06d}.mp4 (any
video extension) or {youtube_id}.mp4. Missing videos are counted and listed, never fetched.
Exit code 0 when at least one video was accepted, 1 when none, 2 on a bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidlab.data.standard import build_kinetics_manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="folder holding the videos (searched recursively)")
    parser.add_argument("--annotations", nargs="+",
                        help="annotation CSV(s): label,youtube_id,time_start,time_end,split (default: *.csv in --videos)")
    parser.add_argument("--out", help="folder for manifest.csv and rejected.csv (default: --videos)")
    parser.add_argument("--classes", help="text file with one class name per line fixing the label order")
    parser.add_argument("--splits", nargs="+", choices=("train", "val", "test"), help="keep only these splits")
    parser.add_argument("--workers", type=int, default=2, help="parallel probing processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        classes = None
        if args.classes:
            lines = Path(args.classes).read_text(encoding="utf-8").splitlines()
            classes = [line.strip() for line in lines if line.strip()]
        report = build_kinetics_manifest(args.videos, args.out or args.videos, annotations=args.annotations,
                                         classes=classes, splits=args.splits, workers=args.workers,
                                         progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
