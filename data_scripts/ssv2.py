#!/usr/bin/env python
r"""Something-Something v2: labels.json + train/validation JSON + a folder of {id}.webm -> manifest.

    python data_scripts/ssv2.py --videos /datasets/ssv2/20bn-something-something-v2 \
        --annotations /datasets/ssv2/labels

Official train -> train, validation -> val, an optional test JSON -> unlabelled test rows.
Missing videos are counted and listed. Exit code 0 when at least one video was accepted,
1 when none, 2 on a bad input.
"""
from __future__ import annotations

import argparse
import sys

from vidlab.data.standard import build_ssv2_manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="folder holding {id}.webm (searched recursively)")
    parser.add_argument("--annotations", help="folder with labels.json and something-something-v2-*.json "
                                              "(default: --videos)")
    parser.add_argument("--out", help="folder for manifest.csv and rejected.csv (default: --videos)")
    parser.add_argument("--workers", type=int, default=2, help="parallel probing processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = build_ssv2_manifest(args.videos, args.out or args.videos, annotations=args.annotations,
                                     workers=args.workers, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
