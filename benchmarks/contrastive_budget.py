r"""How much contrastive pretraining does notebook 02's encoder need before its frozen features
beat a random encoder's?

Notebook 02 runs the SimCLR-style objective for the preset's ``contrastive_steps`` (a short
budget, to keep the notebook within minutes) and probes the frozen features. This script
pretrains the same encoder with the same recipe for several step budgets (and, optionally,
other learning rates or without the time-reversed negatives) and prints, for each, the kNN and
linear-probe test top-1 next to a randomly initialised encoder's: the question it answers is
"what budget would the contrastive alternative need at this scale?".

Run it from the repository root (the cpu synthetic dataset is made if missing):

    .venv/bin/python benchmarks/contrastive_budget.py --steps 40 160 400
    .venv/bin/python benchmarks/contrastive_budget.py --steps 160 --lr 3e-3 --no-reverse-negatives
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from vidlab.data.synthetic import ensure_dataset
from vidlab.recipes import pretraining as pt
from vidlab.recipes import ssl_probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/synthetic-cpu", help="dataset folder (made if missing)")
    parser.add_argument("--preset", default="cpu", choices=sorted(pt.PRETRAIN_PRESETS), help="notebook 02's preset")
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 160, 400], help="contrastive step budgets")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    parser.add_argument("--batch", type=int, default=None, help="videos per step (default: the preset's)")
    parser.add_argument("--temperature", type=float, default=None, help="NT-Xent temperature (default: the preset's)")
    parser.add_argument("--no-reverse-negatives", action="store_true", help="drop the time-reversed negatives")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = pt.PRETRAIN_PRESETS[args.preset]
    changes = {"contrastive_lr": args.lr, "contrastive_batch_size": args.batch, "temperature": args.temperature}
    settings = dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
    if args.no_reverse_negatives:
        settings = dataclasses.replace(settings, reverse_negatives=False)
    ensure_dataset(args.data, preset=args.preset)
    print(f"preset {args.preset}: lr {settings.contrastive_lr:g}, batch {settings.contrastive_batch_size}, "
          f"temperature {settings.temperature:g}, reversed negatives {settings.reverse_negatives}, "
          f"{torch.get_num_threads()} threads, seed {args.seed}")

    pool = pt.unlabeled_videos(args.data, settings)
    data = ssl_probes.labelled_data(args.data, settings)
    torch.manual_seed(args.seed)
    rows = [("random init", 0, 0.0, ssl_probes.probe_encoder(pt.build_encoder(settings), data, settings, seed=args.seed))]
    print(f"{'encoder':>14} {'steps':>6} {'seconds':>8} {'kNN':>6} {'probe':>6}")
    print(f"{'random init':>14} {0:6d} {0.0:8.0f} {rows[0][3]['knn_top1']:6.3f} {rows[0][3]['probe_top1']:6.3f}", flush=True)
    for steps in args.steps:
        t0 = time.perf_counter()
        out = pt.pretrain_encoder(args.data, settings, method="contrastive", seed=args.seed, videos=pool, steps=steps)
        seconds = time.perf_counter() - t0
        probe = ssl_probes.probe_encoder(out["encoder"], data, settings, seed=args.seed)
        print(f"{'contrastive':>14} {steps:6d} {seconds:8.0f} {probe['knn_top1']:6.3f} {probe['probe_top1']:6.3f}"
              f"   (loss {out['history'][0]:.3f} -> {out['history'][-1]:.3f})", flush=True)


if __name__ == "__main__":
    main()
