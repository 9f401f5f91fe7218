"""How much does notebook 02's MAE encoder add to notebook 03's full fine-tune, seed by seed?

Notebook 03 fine-tunes the pretrained encoder and the same architecture from random weights with
one recipe and reports one seed. With all labels the gap is small, so its sign can change with
the seed and the epoch budget: this script runs both starts for several seeds (and epoch
budgets) and prints test top-1, the per-seed gap and the mean.

    .venv/bin/python benchmarks/pretraining_gain.py --seeds 0,1,2 --epochs 10,15
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from vidlab.data.synthetic import ensure_dataset
from vidlab.notebook import DATASET_PRESET, default_data_dir
from vidlab.recipes import finetune, pretraining


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(finetune.FINETUNE_PRESETS))
    parser.add_argument("--data", default=None, help="dataset folder (default: the preset's synthetic data)")
    parser.add_argument("--encoder", default=None,
                        help="notebook 02's ssl_encoder.pt (default: runs/<preset>/...; pretrained there if missing)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--epochs", default=None, help="comma-separated epoch budgets (default: the preset's)")
    args = parser.parse_args()

    data_dir = Path(args.data or default_data_dir(args.preset))
    ensure_dataset(data_dir, preset=DATASET_PRESET[args.preset], seed=0)
    encoder = Path(args.encoder or f"runs/{args.preset}/{pretraining.PRETRAIN_NOTEBOOK}/{pretraining.ENCODER_FILE}")
    encoder = pretraining.ensure_pretrained_encoder(args.preset, data_dir, encoder)
    base = finetune.FINETUNE_PRESETS[args.preset]
    data = finetune.load_data(data_dir, finetune.encoder_geometry(encoder), base, progress=False)
    budgets = [int(e) for e in args.epochs.split(",")] if args.epochs else [base.epochs]
    rows = []
    for epochs in budgets:
        settings = dataclasses.replace(base, epochs=epochs)
        for seed in (int(s) for s in args.seeds.split(",")):
            top1 = {}
            for start, pretrained in (("pretrained", True), ("scratch", False)):
                run = finetune.run_method("full", encoder, data, settings, seed=seed, pretrained=pretrained, progress=False)
                top1[start] = run["test_top1"]
            rows.append({"epochs": epochs, "seed": seed, **top1, "gain (points)": 100 * (top1["pretrained"] - top1["scratch"])})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.groupby("epochs")[["pretrained", "scratch", "gain (points)"]].agg(["mean", "min", "max"]).round(3).to_string())


if __name__ == "__main__":
    main()
