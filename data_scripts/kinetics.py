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

try:
    import vidlab  # noqa: F401  (a Python without vidlab gets the command that works, not a bare traceback)
except ModuleNotFoundError as exc:
    sys.exit(f"error: {exc} in {sys.executable}. Run this script with the environment's Python "
             f"(`make venv` creates it), from the repository root: .venv/bin/python data_scripts/{Path(__file__).name} --help")

from vidlab.data.standard import build_kinetics_manifest
from vidlab.data.standard.cli import add_output_options, exit_code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="folder holding the videos (searched recursively)")
    parser.add_argument("--annotations", nargs="+",
                        help="annotation CSV(s): label,youtube_id,time_start,time_end,split (default: *.csv in --videos)")
    parser.add_argument("--classes", help="text file with one class name per line fixing the label order")
    parser.add_argument("--splits", nargs="+", choices=("train", "val", "test"), help="keep only these splits")
    add_output_options(parser, out_default="--videos")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run():
        classes = None
        if args.classes:
            lines = Path(args.classes).read_text(encoding="utf-8").splitlines()
            classes = [line.strip() for line in lines if line.strip()]
        return build_kinetics_manifest(args.videos, args.out or args.videos, annotations=args.annotations,
                                       classes=classes, splits=args.splits, workers=args.workers,
                                       progress=not args.quiet)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
