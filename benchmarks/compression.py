r"""Notebook 07's accuracy / latency / size table of every compressed variant, and its speed-ups.

Either reads a finished run of notebook 07 (``--run``: the folder holding its ``metrics.json``,
e.g. ``runs/cpu/07_compression``) or executes the notebook now at ``--preset`` into ``--out``
(notebook 03's reference classifier is taken from ``OUT/03_finetuning/model.pt`` and trained
there first if missing). Prints the Pareto table (fastest first, ``*`` = on the front), the
int8 / pruning speed-ups, the int8 coverage per op and the compile cost.

    .venv/bin/python benchmarks/compression.py --run runs/cpu/07_compression
    .venv/bin/python benchmarks/compression.py --preset cpu --out /tmp/runs_07
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def report(metrics: dict) -> str:
    from vidlab.recipes.compression import format_table

    lines = [format_table(metrics["pareto"]), ""]
    vit_b8, vit_b1 = metrics["int8_speedup_b8"]["vit"], metrics["int8_speedup_b1"]["vit"]
    lines.append(f"ViT static int8 vs eager fp32: x{vit_b1:.2f} at batch 1, x{vit_b8:.2f} at batch 8; "
                 f"vs compiled fp32: x{metrics.get('int8_vs_compiled_fp32_speedup_b1', float('nan')):.2f} / "
                 f"x{metrics['int8_vs_compiled_fp32_speedup']:.2f}; top-1 {metrics['top1_fp32']['vit']:.3f} -> "
                 f"{metrics['top1_int8']['vit']:.3f}")
    lines.append(f"3D CNN static int8 vs eager fp32: x{metrics['int8_speedup_b1']['cnn']:.2f} / x{metrics['int8_speedup_b8']['cnn']:.2f}; "
                 f"eager fbgemm int8 Conv3d / fp32 Conv3d (median over layer kinds): x{metrics['eager_int8_conv3d_slowdown']:.2f} time")
    lines.append(f"3D CNN structured pruning: x{metrics['structured_speedup']:.2f} at batch 1, "
                 f"x{metrics.get('structured_speedup_b8', float('nan')):.2f} at batch 8; top-1 {metrics['top1_fp32']['cnn']:.3f} -> "
                 f"{metrics['top1_pruned_structured']:.3f} after fine-tuning")
    lines.append(f"ViT 50 % unstructured: batch-1 latency x{metrics['unstructured_latency_ratio']:.2f} of dense")
    lines.append(f"2:4: top-1 {metrics['top1_2to4']:.3f}; distillation: student {metrics['top1_student']:.3f} alone, "
                 f"{metrics['top1_student_kd']:.3f} distilled")
    if "kd_targets" in metrics:
        kd = metrics["kd_targets"]
        lines.append(f"teacher soft targets: mean top probability {kd['teacher_max_prob_at_tau']:.2f}, entropy "
                     f"{kd['soft_target_entropy']:.2f} of {kd['uniform_entropy']:.2f} nats (uniform)")
    for model, rows in metrics.get("int8_coverage", {}).items():
        lines.append(f"int8 kernels, {model}: " + ", ".join(f"{r['op']} {r['int8']}/{r['count']}" for r in rows))
    lines.append("compile seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in metrics.get("compile_seconds", {}).items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="a finished notebook-07 output folder (holds metrics.json)")
    parser.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "gpu"), help="preset when executing the notebook")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/compression"),
                        help="where the executed notebook, its outputs and notebook 03's model go")
    args = parser.parse_args()
    folder = args.run
    if folder is None:
        from vidlab import run as runner

        path = runner.notebooks_dir() / "07_compression.ipynb"
        result = runner.run_notebook(path, args.out, preset=args.preset)
        if result.status != "ok":
            print(f"notebook 07 failed: {result.error} (executed copy: {result.executed})", file=sys.stderr)
            return 1
        folder = result.output_dir
        print(f"executed {path.name} at preset {args.preset} in {result.seconds:.0f} s -> {folder}")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    print(report(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
