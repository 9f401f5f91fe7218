r"""Which VideoMAE recipe pays on notebook 02's small clips? Mask type, ratio and motion weight
against the few-label fine-tune from scratch.

Notebook 02's ``cpu`` preset pretrains with frame masks at 50 % and a motion-weighted loss
instead of the VideoMAE paper's tube masks at 90 %. This script measures why: for each recipe
``MASK:RATIO:MOTION_WEIGHT`` it pretrains an encoder with notebook 02's settings otherwise
(same encoder, steps, batch and learning rate), fine-tunes it on a few labelled videos per class
with notebook 02's few-label recipe, and prints the test top-1 next to the same network trained
from scratch with the same labels, steps and batches, for each seed.

Run it from the repository root (the cpu synthetic dataset is made if missing). Each recipe
costs one pretraining run (a few minutes on 2 cores) plus one fine-tune per seed:

    .venv/bin/python benchmarks/mae_recipes.py --recipes tube:0.9:0 frame:0.5:0 frame:0.5:16 --seeds 0 1 2
    .venv/bin/python benchmarks/mae_recipes.py --recipes random:0.75:0 frame:0.5:4 --per-class 5 20
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from vidlab.data.synthetic import ensure_dataset
from vidlab.recipes import pretraining as pt
from vidlab.recipes import ssl_probes
from vidlab.train.ssl import MASK_TYPES


def parse_recipe(text: str) -> tuple[str, float, float]:
    """``MASK:RATIO:MOTION_WEIGHT`` -> (mask type, ratio, motion weight)."""
    try:
        mask_type, ratio, weight = text.split(":")
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask type must be one of {', '.join(MASK_TYPES)}")
        return mask_type, float(ratio), float(weight)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"recipe {text!r}: expected MASK:RATIO:MOTION_WEIGHT, e.g. frame:0.5:16 ({err})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/synthetic-cpu", help="dataset folder (made if missing)")
    parser.add_argument("--preset", default="cpu", choices=sorted(pt.PRETRAIN_PRESETS), help="notebook 02's preset")
    parser.add_argument("--recipes", type=parse_recipe, nargs="+", default=[parse_recipe("tube:0.9:0"),
                        parse_recipe("frame:0.5:0"), parse_recipe("frame:0.5:16")], help="MASK:RATIO:MOTION_WEIGHT ...")
    parser.add_argument("--per-class", type=int, nargs="+", default=[10], help="labelled videos per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds (pretraining uses seed 0)")
    args = parser.parse_args()

    base = pt.PRETRAIN_PRESETS[args.preset]
    ensure_dataset(args.data, preset=args.preset)
    pool = pt.unlabeled_videos(args.data, base)
    data = ssl_probes.labelled_data(args.data, base)
    print(f"preset {args.preset}: {base.mae_steps} MAE steps of {base.batch_size} clips, few-label fine-tune "
          f"{base.fewshot_steps} steps; {torch.get_num_threads()} threads")

    def fewshot_row(name: str, encoder: torch.nn.Module | None) -> None:
        for per_class in args.per_class:
            scores = [ssl_probes.fewshot(encoder, data, base, per_class=per_class, seed=s, progress=False)["test_acc"]
                      for s in args.seeds]
            mean = sum(scores) / len(scores)
            print(f"{name:>24} {per_class:>9} " + " ".join(f"{s:6.3f}" for s in scores) + f"   mean {mean:.3f}", flush=True)

    print(f"{'encoder':>24} {'per class':>9} " + " ".join(f"seed {s}" for s in args.seeds))
    fewshot_row("scratch", None)
    for mask_type, ratio, weight in args.recipes:
        settings = dataclasses.replace(base, mask_type=mask_type, mask_ratio=ratio, motion_weight=weight)
        encoder = pt.pretrain_encoder(args.data, settings, method="mae", seed=0, videos=pool, progress=False)["encoder"]
        fewshot_row(f"{mask_type} {ratio:.0%}, weight {weight:g}", encoder)


if __name__ == "__main__":
    main()
