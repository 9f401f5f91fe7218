r"""Notebook 03's full fine-tune with another token geometry or head, from scratch or after MAE.

Notebook 03 fine-tunes notebook 02's encoder: 8x8-px x 2-frame tubelets (a 4x4x4 token grid)
and a mean-pooling head. This script trains the same ViT (128-d x 4 blocks, 64 tokens) with the
same recipe (``FINETUNE_PRESETS["cpu"]``: 10 epochs, AdamW, warmup + cosine, early stopping) on
the same clips (8 frames x 32 px at stride 4), but lets you change what notebook 03 inherits:

* ``--patch`` / ``--tubelet``: the tokens; ``--patch 4 --tubelet 8`` gives 4x4-px tubes that
  span all 8 frames (an 8x8 spatial grid, one time step: still 64 tokens, about the same cost);
* ``--pool avg|max``: how the head pools the tokens;
* ``--pretrain MASK:RATIO``: first pretrain an encoder of that geometry with notebook 02's
  ``cpu`` MAE recipe (motion-weighted loss, 600 steps), with this mask type and ratio, and
  fine-tune from it; without it the model starts from scratch.

Run it from the repository root. It prints the video-level test top-1 and the per-class
accuracy. One configuration takes about 2.5 minutes on one core (``--pretrain`` adds about 3.5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_geometry.py --patch 4 --tubelet 8 --pool max
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_geometry.py --patch 4 --tubelet 8 --pool max \
        --pretrain random:0.5
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

import vidlab as vl
from vidlab.data.synthetic import ensure_dataset
from vidlab.recipes import finetune, pretraining
from vidlab.recipes.supervised import train_and_test
from vidlab.train.ssl import MASK_TYPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/synthetic-cpu",
                        help="dataset folder (the cpu synthetic dataset is made if missing)")
    parser.add_argument("--patch", type=int, default=8, help="spatial patch of a token, pixels (notebook 02: 8)")
    parser.add_argument("--tubelet", type=int, default=2, help="frames per token (notebook 02: 2; 8 spans the clip)")
    parser.add_argument("--pool", choices=("avg", "max"), default="avg", help="token pooling of the head")
    parser.add_argument("--pretrain", metavar="MASK:RATIO", default=None,
                        help="pretrain with notebook 02's cpu MAE recipe and this mask first, e.g. random:0.5")
    parser.add_argument("--encoder-out", default="runs/benchmarks/geometry_encoder.pt",
                        help="where --pretrain saves its encoder")
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs (default: notebook 03's cpu preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    args = parser.parse_args()
    if args.pretrain and args.pretrain.partition(":")[0] not in MASK_TYPES:
        parser.error(f"--pretrain {args.pretrain!r}: the mask type must be one of {', '.join(MASK_TYPES)}")

    geometry = pretraining.PRETRAIN_PRESETS["cpu"]
    geometry = dataclasses.replace(geometry, patch_size=args.patch, tubelet_size=args.tubelet, workers=args.workers)
    settings = finetune.FINETUNE_PRESETS["cpu"]
    ensure_dataset(args.data, preset="cpu", workers=args.workers)
    print(f"tokens {args.tubelet}x{args.patch}x{args.patch} (frames x px x px), head {args.pool}, "
          f"{'MAE ' + args.pretrain if args.pretrain else 'scratch'}, seed {args.seed}, "
          f"{torch.get_num_threads()} threads")

    if args.pretrain:
        mask_type, _, ratio = args.pretrain.partition(":")
        recipe = dataclasses.replace(geometry, mask_type=mask_type, mask_ratio=float(ratio or geometry.mask_ratio))
        vl.set_seed(args.seed)
        result = pretraining.pretrain_encoder(args.data, recipe, method="mae", seed=args.seed)
        Path(args.encoder_out).parent.mkdir(parents=True, exist_ok=True)
        pretraining.save_pretrained(result, args.encoder_out)
        print(f"pretrained {result['steps']} MAE steps in {result['seconds']:.0f} s -> {args.encoder_out}")

    data = finetune.load_data(args.data, pretraining.clip_geometry(geometry), settings, workers=args.workers)
    vl.set_seed(args.seed)
    if args.pretrain:
        model = finetune.build_backbone(args.encoder_out, data.num_classes, global_pool=args.pool)
    else:
        model = pretraining.build_encoder(geometry, data.num_classes, global_pool=args.pool)
    t0 = time.perf_counter()
    config = finetune.train_config(settings, peft_method=False, seed=args.seed, epochs=args.epochs)
    result = train_and_test(model, data, config, batch_size=settings.batch_size)
    print(f"test top-1 (video level, {settings.test_views} views) {result['test_top1']:.3f} after "
          f"{len(result['history'].val_top1)} epochs, {time.perf_counter() - t0:.0f} s")
    for name, acc in zip(data.classes, result["test"]["per_class_accuracy"]):
        print(f"  {name:24s} {float(acc):.2f}")


if __name__ == "__main__":
    main()
