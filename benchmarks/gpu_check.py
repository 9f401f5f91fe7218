r"""Run every GPU-only path of the kit once, in a few minutes, and print what each measured.

    .venv/bin/python benchmarks/gpu_check.py [--budget-s 270] [--json OUT.json]

Which questions it answers (on an NVIDIA GPU; on a machine without one it prints why it
skipped and exits 0):

* notebook 08 - inference: fp32 vs fp16 / bf16 autocast (latency, max logit difference),
  CUDA graphs through ``torch.compile(mode="reduce-overhead")``, pageable vs pinned +
  ``non_blocking`` host->device copies (:func:`vidlab.infer.cuda_inference_paths`), and the
  video predictor on the GPU (decode on the CPU, pinned copies, the model on the GPU).
* notebook 06 - training: one training step in fp32, tf32, CUDA AMP fp16 (GradScaler) and
  bf16, each run by the kit's engine (:func:`vidlab.train.precision.time_training_steps`).
* notebook 07 - 2:4 semi-structured sparsity: a Linear layer pruned 2:4 and converted with
  ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS when that is missing),
  dense vs sparse latency and the output difference (compute capability 8.0 or newer).

Each check is independent: one that fails prints its traceback and the others still run; the
exit status is 1 when any failed. Checks not started within ``--budget-s`` are skipped (and
said so) so the whole run stays under five minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch


def _table(rows: dict) -> str:
    return "\n".join(f"  {k:28s} {v}" for k, v in rows.items())


def check_inference() -> dict:
    """Notebook 08: every GPU inference path on two model families, batch 1 and 8."""
    import vidlab as vl
    from vidlab.infer import cuda_inference_paths

    out = {}
    for name, clip in (("x3d_xs", (4, 160)), ("vit_small", (8, 112))):
        model = vl.models.create_model(name, num_classes=12, **({"img_size": clip[1], "num_frames": clip[0]}
                                                               if name.startswith("vit") else {})).eval()
        for batch in (1, 8):
            example = torch.randn(batch, 3, clip[0], clip[1], clip[1])
            # CUDA graphs pay most at batch 1 (launch-bound); compiling costs tens of seconds per shape
            result = cuda_inference_paths(model, example, repeats=30, compile_graphs=batch == 1)
            out[f"{name}_b{batch}"] = result
            print(f"  {name} batch {batch}: " + ", ".join(
                f"{k} {v['median_ms']:.2f} ms" for k, v in result.items() if isinstance(v, dict)))
    return out


def check_predictor() -> dict:
    """Notebook 08: the video predictor with the model on the GPU (pinned, non-blocking copies)."""
    import vidlab as vl
    from vidlab.data.synthetic import ensure_dataset
    from vidlab.infer import ClipSpec, Task, VideoPredictor

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic-smoke"
        ensure_dataset(root, preset="smoke", seed=0, progress=False)
        videos = sorted(root.glob("videos/test/*/*.mp4"))[:16]
        model = vl.models.create_model("test_tsm_online", num_classes=12, num_frames=8).eval().cuda()
        predictor = VideoPredictor(Task(model, ClipSpec(8, 32, 1, views=2)), batch_size=8, device="cuda")
        report = predictor.predict(videos)
        cpu_model = vl.models.create_model("test_tsm_online", num_classes=12, num_frames=8).eval()
        cpu_model.load_state_dict(model.state_dict())
        cpu_report = VideoPredictor(Task(cpu_model, ClipSpec(8, 32, 1, views=2)), batch_size=8).predict(videos)
    diff = max(float((a.probs["model"] - b.probs["model"]).abs().max()) for a, b in zip(report.results, cpu_report.results))
    result = {"videos": len(videos), "failed": len(report.failed), "videos_per_s": report.videos_per_s,
              "max_prob_diff_vs_cpu": diff}
    print(_table(result))
    if report.failed or diff > 1e-3:
        raise RuntimeError(f"GPU predictor disagrees with the CPU one or failed: {result}")
    return result


def check_training_precision() -> dict:
    """Notebook 06: a training step in fp32, tf32, AMP fp16 and AMP bf16 (the kit's engine)."""
    import copy

    import vidlab as vl
    from vidlab.train.engine import TrainConfig
    from vidlab.train.precision import time_training_steps

    torch.manual_seed(0)
    base = vl.models.create_model("vit_small", num_classes=12, img_size=112, num_frames=8)
    batches = [{"video": torch.randn(16, 3, 8, 112, 112), "label": torch.randint(0, 12, (16,))} for _ in range(4)]
    runs = {
        "fp32": (copy.deepcopy(base), TrainConfig(lr=1e-4)),
        "amp_fp16": (copy.deepcopy(base), TrainConfig(lr=1e-4, amp=True, amp_dtype="float16")),
    }
    if torch.cuda.is_bf16_supported():
        runs["amp_bf16"] = (copy.deepcopy(base), TrainConfig(lr=1e-4, amp=True, amp_dtype="bfloat16"))
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        timed = time_training_steps(runs, batches, device="cuda", repeats=3)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        timed.update(time_training_steps({"tf32": (copy.deepcopy(base), TrainConfig(lr=1e-4))}, batches,
                                         device="cuda", repeats=3))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    result = {name: {"step_ms": 1000 * v["step_s"], "speedup_vs_fp32": timed["fp32"]["step_s"] / v["step_s"]}
              for name, v in timed.items()}
    print(_table({k: f"{v['step_ms']:.1f} ms/step ({v['speedup_vs_fp32']:.2f}x fp32)" for k, v in result.items()}))
    return result


def check_sparsity() -> dict:
    """Notebook 07: 2:4 semi-structured sparsity of a Linear layer (fp16), through
    :func:`vidlab.compress.semi_structured.gpu_speedup`, plus the sparse output checked against dense."""
    import torch.nn.functional as F
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    from vidlab.compress.semi_structured import gpu_speedup, mask_2_4

    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return {"skipped": f"2:4 sparse kernels need compute capability 8.0+, this GPU has {major}.{minor}"}
    torch.manual_seed(0)
    result = {}
    for features, tokens in ((3072, 4096), (4096, 8192)):
        backend = "cuSPARSELt"
        try:
            timed = gpu_speedup((features, features), tokens)
        except (RuntimeError, NotImplementedError):  # no cuSPARSELt in this build: CUTLASS kernels
            SparseSemiStructuredTensor._FORCE_CUTLASS = True
            backend = "CUTLASS"
            timed = gpu_speedup((features, features), tokens)
        weight = torch.randn(features, features, dtype=torch.float16, device="cuda")
        weight = weight * mask_2_4(weight)
        x = torch.randn(tokens, features, dtype=torch.float16, device="cuda")
        with torch.inference_mode():
            diff = float((F.linear(x, to_sparse_semi_structured(weight)) - F.linear(x, weight)).abs().max())
        key = f"linear_{features}x{features}_tokens{tokens}"
        result[key] = {"backend": backend, **timed, "max_abs_diff": diff}
        print(f"  {key}: dense {timed['dense_ms']:.3f} ms, 2:4 {timed['sparse_ms']:.3f} ms ({backend}), "
              f"{timed['speedup']:.2f}x, max diff {diff:.2e}")
        if diff > 0.5:
            raise RuntimeError(f"2:4 sparse output differs from dense by {diff}")
    return result


CHECKS = (
    ("08 inference: fp16/bf16, CUDA graphs, pinned copies", check_inference),
    ("08 video predictor on the GPU", check_predictor),
    ("06 training step: fp32 / tf32 / AMP fp16 / AMP bf16", check_training_precision),
    ("07 2:4 semi-structured sparsity", check_sparsity),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=270.0, help="start no new check after this many seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    from vidlab.infer.cuda import gpu_skip_reason

    reason = gpu_skip_reason()
    if reason is not None:
        print(f"gpu_check: skipped every GPU-only path: {reason}. Run this on a machine with an NVIDIA GPU "
              f"(CUDA build of PyTorch) to measure them.")
        return 0
    print(f"gpu_check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    start = time.perf_counter()
    results, failed = {}, []
    for title, check in CHECKS:
        if time.perf_counter() - start > args.budget_s:
            print(f"\n== {title}: skipped, the {args.budget_s:.0f} s budget is spent")
            results[title] = {"skipped": "time budget spent"}
            continue
        print(f"\n== {title}")
        t0 = time.perf_counter()
        try:
            results[title] = check()
        except Exception:  # report and go on: the other paths still get checked
            traceback.print_exc()
            failed.append(title)
            results[title] = {"error": traceback.format_exc(limit=3)}
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    print(f"\ngpu_check: {len(CHECKS) - len(failed)} of {len(CHECKS)} checks ran without error in "
          f"{time.perf_counter() - start:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
