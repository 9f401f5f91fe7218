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
from pathlib import Path

try:
    import vidlab  # noqa: F401  (a Python without vidlab gets the command that works, not a bare traceback)
except ModuleNotFoundError as exc:
    sys.exit(f"error: {exc} in {sys.executable}. Run this script with the environment's Python "
             f"(`make venv` creates it), from the repository root: .venv/bin/python data_scripts/{Path(__file__).name} --help")

from vidlab.data.standard import build_ssv2_manifest
from vidlab.data.standard.cli import add_output_options, exit_code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", required=True, help="folder holding {id}.webm (searched recursively)")
    parser.add_argument("--annotations", help="folder with labels.json and something-something-v2-*.json "
                                              "(default: --videos)")
    add_output_options(parser, out_default="--videos")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_code(lambda: build_ssv2_manifest(args.videos, args.out or args.videos, annotations=args.annotations,
                                                 workers=args.workers, progress=not args.quiet))


if __name__ == "__main__":
    sys.exit(main())
