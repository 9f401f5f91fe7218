#!/usr/bin/env python
r"""Bring your own videos: turn SRC/<class>/<video> into a vidlab dataset folder.

    .venv/bin/python data_scripts/prepare_folder.py my_clips --out data/my_clips
    .venv/bin/python data_scripts/prepare_folder.py my_clips --out data/my_clips_160 --short-side 160 --fps 15

(from the repository root, with the Python of the environment `make` creates: another Python
has no vidlab and stops with "No module named 'vidlab'").

Writes DIR/videos/<class>/..., DIR/manifest.csv (stratified train/val/test splits) and
DIR/rejected.csv (files that could not be used, with the reason). Exit code 0 when at least
one video was accepted (even if others were rejected), 1 when none was.
"""
from __future__ import annotations

import argparse
import sys

try:
    from vidlab.data.prepare import prepare_folder
except ModuleNotFoundError as exc:  # run with a Python that does not have vidlab installed
    sys.exit(f"error: {exc} in {sys.executable}. Run this script with the environment's Python "
             "(`make venv` creates it), from the repository root:\n"
             "    .venv/bin/python data_scripts/prepare_folder.py SRC --out DIR [--short-side N] [--fps N]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="folder with one sub-folder per class, holding the videos")
    parser.add_argument("--out", required=True, help="output dataset folder (must not be inside SRC)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="re-encode to H.264 mp4 with this short side in pixels (default: keep files as they are)")
    parser.add_argument("--fps", type=float, default=None, help="re-encode to this frame rate (default: keep)")
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (default 2)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of each class for val (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of each class for test (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split assignment (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = prepare_folder(
            args.src, args.out, short_side=args.short_side, fps=args.fps, workers=args.workers,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
            progress=not args.quiet,
        )
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.accepted == 0:
        print(f"error: no usable video in {args.src} (see {report.rejected_csv})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
