#!/usr/bin/env python
"""Generate the synthetic action dataset (H.264 .mp4 files + manifest.csv + dataset.json).

    .venv/bin/python data_scripts/make_synthetic.py --preset cpu --seed 0 --workers 2

writes ``data/synthetic-cpu`` (``data/synthetic-<preset>``), the folder the notebooks use for
the ``cpu`` preset (``full`` is the ``gpu`` notebooks' dataset); ``--out`` puts it elsewhere.
Re-runnable: if ``--out`` already holds a complete dataset it says so and exits 0 (use
``--force`` to regenerate). ``--set field=value`` overrides one field of the preset's
:class:`vidlab.data.synthetic.SyntheticConfig` (e.g. ``--set size=32 --set unlabeled=0``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

try:
    import vidlab  # noqa: F401  (a Python without vidlab gets the command that works, not a bare traceback)
except ModuleNotFoundError as exc:
    sys.exit(f"error: {exc} in {sys.executable}. Run this script with the environment's Python "
             f"(`make venv` creates it), from the repository root: .venv/bin/python data_scripts/{Path(__file__).name} --help")

from vidlab.data.manifest import MANIFEST_NAME, read_manifest, splits
from vidlab.data.synthetic import CLASSES, PRESETS, SyntheticConfig, generate, read_dataset_info
from vidlab.utils import project_root


def default_out(preset: str) -> Path:
    """``<repo>/data/synthetic-<preset>``: where the notebooks look for the synthetic dataset."""
    return project_root() / "data" / f"synthetic-{preset}"


def _override(cfg: SyntheticConfig, assignments: list[str]) -> SyntheticConfig:
    """Apply ``field=value`` strings to ``cfg`` (values cast to the field's type)."""
    known = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    changes = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise SystemExit(f"--set {item!r}: expected field=value with field one of {', '.join(known)}")
        cast = {"int": int, "float": float, "str": str}[known[name].type]
        try:
            changes[name] = cast(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {name} should be {known[name].type}") from None
    try:
        return dataclasses.replace(cfg, **changes)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None


def _summary(manifest: Path) -> str:
    rows = read_manifest(manifest)
    counts = splits(rows)
    width = max(len(s) for s in counts)
    lines = [f"  {split:<{width}}  {n:6d} videos" for split, n in counts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset folder to create (missing or empty; default: data/synthetic-<preset>)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="dataset size (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--force", action="store_true", help="regenerate even if --out holds a dataset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a SyntheticConfig field of the preset (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    cfg = _override(PRESETS[args.preset], args.overrides)
    out: Path = args.out if args.out is not None else default_out(args.preset)
    manifest = out / MANIFEST_NAME
    if manifest.is_file() and not args.force:
        info = read_dataset_info(out) or {}
        print(f"{out} already holds a complete dataset (preset {info.get('preset', '?')}, "
              f"seed {info.get('seed', '?')}); nothing to do (use --force to regenerate)")
        print(_summary(manifest))
        return 0
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file", file=sys.stderr)
        return 2
    if out.is_dir() and any(out.iterdir()):
        info = read_dataset_info(out) or {}
        if not manifest.is_file() or info.get("generator") != "vidlab.data.synthetic":
            # --force replaces only a dataset this script made: never someone's own files.
            print(f"error: {out} is not empty and is not a synthetic dataset made by this script "
                  f"(no {MANIFEST_NAME} + dataset.json); choose another --out", file=sys.stderr)
            return 2

    print(f"generating the synthetic {cfg.name} dataset (seed {args.seed}, {args.workers} workers) into {out}")
    start = time.perf_counter()
    manifest = generate(out, preset=cfg, seed=args.seed, workers=args.workers,
                        progress=not args.quiet, overwrite=args.force)
    seconds = time.perf_counter() - start
    print(f"done in {seconds:.1f} s: {manifest}")
    print(_summary(manifest))
    print(f"  {len(CLASSES)} classes: {', '.join(CLASSES)}")
    print(f"  {cfg.size}x{cfg.size} RGB, {cfg.num_frames} frames at {cfg.fps:g} fps, H.264 (crf {cfg.crf})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
