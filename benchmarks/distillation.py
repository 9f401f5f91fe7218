"""Does distillation pay for notebook 07's student ViT? Student alone vs taught, per budget, tau, alpha.

The teacher is notebook 03's reference classifier (``--teacher``, a ``save_model`` file); the
student and the training recipe are notebook 07's (``vidlab.recipes.compression``), the clips are
the teacher's. For each epoch budget the student trains alone (labels only) and with the
distillation loss for each ``tau:alpha`` pair; every run starts from the same seed. Prints test
top-1 of the teacher and of every student.

    .venv/bin/python benchmarks/distillation.py --teacher runs/cpu/03_finetuning/model.pt --epochs 5,20
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd
import torch

import vidlab as vl
from vidlab.compress import distill, evaluate
from vidlab.notebook import default_data_dir
from vidlab.recipes import compression as C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(C.PRESETS))
    parser.add_argument("--teacher", type=Path, default=None,
                        help="notebook 03's model.pt (default: runs/<preset>/03_finetuning/model.pt)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the preset's synthetic data)")
    parser.add_argument("--epochs", default="5,20", help="comma-separated student epoch budgets")
    parser.add_argument("--kd", default="4:0.7,2:0.5,1:0.5", help="comma-separated tau:alpha pairs")
    parser.add_argument("--embed-dim", type=int, default=None, help="student width (default: the preset's)")
    parser.add_argument("--depth", type=int, default=None, help="student blocks (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    teacher_path = args.teacher or Path(f"runs/{args.preset}/03_finetuning/model.pt")
    if not teacher_path.exists():
        raise SystemExit(f"no teacher at {teacher_path}: run notebook 03 first "
                         f"(make run PRESET={args.preset} ONLY=03) or pass --teacher")
    base = C.PRESETS[args.preset]
    base = dataclasses.replace(base, student_embed_dim=args.embed_dim or base.student_embed_dim,
                               student_depth=args.depth or base.student_depth)
    teacher, info = vl.models.load_model(teacher_path, with_info=True)
    data = C.load_clips(args.data or default_data_dir(args.preset), info, args.preset, progress=False)
    test = C.eval_set(data, base.eval_views)
    teacher_top1 = evaluate.top1(teacher.eval(), test)
    print(f"teacher {info.name}: test top-1 {teacher_top1:.3f}; student width {base.student_embed_dim}, "
          f"{base.student_depth} block(s)", flush=True)
    pairs = [tuple(float(v) for v in pair.split(":")) for pair in args.kd.split(",") if pair]
    rows = []
    for epochs in (int(e) for e in args.epochs.split(",")):
        for tau, alpha in [(None, None)] + pairs:
            torch.manual_seed(args.seed)
            student = C.build_student(base, teacher)
            step = None if tau is None else distill.DistillStep(C.copy_model(teacher), temperature=tau, alpha=alpha)
            seconds = C.train(student, data, base, epochs=epochs, lr=base.student_lr, seed=args.seed, step_fn=step,
                              progress=False)
            top1 = evaluate.top1(student.eval(), test)
            rows.append({"epochs": epochs, "targets": "labels only" if tau is None else f"KD tau {tau:g}, alpha {alpha:g}",
                         "top1": top1, "vs teacher": top1 - teacher_top1, "seconds": seconds})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    print()
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
