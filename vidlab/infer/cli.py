"""``python -m vidlab predict MODEL VIDEO... [--topk 5] [--json] [--device cpu]``.

MODEL is a :func:`vidlab.models.save_model` file, a ``.pt2`` ExportedProgram, an AOTInductor
package (``*.pt2``; native code: only load packages you trust) or an ``.onnx`` file; the kind is
recognised from the contents. Each VIDEO is decoded once, ``--views`` clips spread over it are
classified and their probabilities averaged. Prints the top-k class names and probabilities per
video (or one JSON document with ``--json``).

A video that is missing, corrupt, truncated or not an allowed container gets an error line on
stderr naming it; the other videos are still predicted and the exit status is 1. A model file
that cannot be loaded, or bad arguments, exit with 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vidlab predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="save_model file, .pt2 ExportedProgram, AOTInductor package or .onnx file")
    parser.add_argument("videos", nargs="+", help="video files (mp4, mkv/webm, avi, ts)")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per video (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--views", type=int, default=3, help="clips per video, probabilities averaged (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per model call (default 8)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 all predicted, 1 some videos failed, 2 unusable model/arguments)."""
    from vidlab.infer.predictor import ClipSpec, Task, VideoPredictor
    from vidlab.infer.runtime import ModelFileError, load_runtime

    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # argparse exits on --help (0) and on bad arguments (2)
        return int(exit_.code or 0)
    if args.topk < 1 or args.views < 1 or args.batch_size < 1:
        print("error: --topk, --views and --batch-size must be >= 1", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is available")
        runtime = load_runtime(args.model, device=device, threads=args.threads)
        spec = ClipSpec.from_meta(runtime.meta, views=args.views)
    except (ModelFileError, ValueError, RuntimeError, KeyError) as err:
        detail = f"its metadata lacks {err}" if isinstance(err, KeyError) else str(err)
        print(f"error: model {args.model}: {detail}", file=sys.stderr)
        return 2
    predictor = VideoPredictor(Task(runtime, spec, runtime.class_names), batch_size=args.batch_size, device=device)
    report = predictor.predict(args.videos)
    failed = 0
    documents = []
    for result in report.results:
        if not result.ok:
            failed += 1
            print(f"error: {result.error}", file=sys.stderr)
            documents.append({"video": result.path, "error": result.error})
            continue
        top = result.topk(args.topk)
        documents.append({"video": result.path, "topk": [{"class": c, "prob": p} for c, p in top]})
        if not args.json:
            print(f"{result.path}: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    if args.json:
        print(json.dumps({"model": str(args.model), "kind": runtime.kind, "videos": documents}, indent=2))
    if failed:
        print(f"{failed} of {len(report.results)} videos could not be predicted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
