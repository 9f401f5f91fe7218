"""What the dataset command lines in ``data_scripts/`` share: common options, exit codes, and
the download -> extract -> build flow of UCF101 and HMDB51."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from vidlab.data.prepare import PrepareReport
from vidlab.data.standard.fetch import ArchiveError, DownloadError, fetch_and_extract

__all__ = ["add_output_options", "exit_code", "official_dataset_cli"]


def add_output_options(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    """``--out``, ``--workers`` and ``--quiet``, as every dataset command line has them."""
    parser.add_argument("--out", help=f"folder for manifest.csv and rejected.csv (default: {out_default})")
    parser.add_argument("--workers", type=int, default=2, help="parallel probing processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")


def exit_code(run: Callable[[], PrepareReport]) -> int:
    """Run a build: 0 when at least one video was accepted, 1 when none, 2 on a download,
    extract, layout or input error (printed to stderr)."""
    try:
        report = run()
    except (DownloadError, ArchiveError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.accepted else 1


def official_dataset_cli(
    argv: Sequence[str] | None,
    *,
    description: str,
    url: str,
    splits_url: str,
    build: Callable[..., Any],
    root_help: str,
    after_extract: Callable[[Path], None] | None = None,
) -> int:
    """The command line shared by ``data_scripts/ucf101.py`` and ``hmdb51.py``: download (resumable,
    checksummed) or take local archives, extract, then ``build(root, out, split=..., ...)``.

    Exit code 0 when at least one video was accepted, 1 when none, 2 on a download, extract
    or layout error.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", help="folder to download and extract into")
    where.add_argument("--root", help=root_help)
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official split (default 1)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of train groups/films used for val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val carve-out (default 0)")
    parser.add_argument("--url", default=url, help="videos archive URL (default: the official one)")
    parser.add_argument("--archive", help="local copy of the videos archive (skips the download)")
    parser.add_argument("--sha256", help="expected SHA-256 of the videos archive")
    parser.add_argument("--md5", help="expected MD5 of the videos archive")
    parser.add_argument("--splits-url", default=splits_url, help="split lists archive URL")
    parser.add_argument("--splits-archive", help="local copy of the split lists archive")
    parser.add_argument("--splits-sha256", help="expected SHA-256 of the split lists archive")
    parser.add_argument("--splits-md5", help="expected MD5 of the split lists archive")
    parser.add_argument("--no-resume", action="store_true", help="restart downloads instead of resuming")
    add_output_options(parser, out_default="the data folder")
    args = parser.parse_args(argv)
    progress = not args.quiet

    def run() -> PrepareReport:
        if args.root:
            root = Path(args.root)
        else:
            root = Path(args.data_dir)
            fetch_and_extract(args.splits_url, root, archive=args.splits_archive, sha256=args.splits_sha256,
                              md5=args.splits_md5, resume=not args.no_resume, progress=progress)
            fetch_and_extract(args.url, root, archive=args.archive, sha256=args.sha256, md5=args.md5,
                              resume=not args.no_resume, progress=progress)
            if after_extract is not None:
                after_extract(root)
        return build(root, args.out or root, split=args.split, workers=args.workers,
                     val_fraction=args.val_fraction, seed=args.seed, progress=progress)

    return exit_code(run)
