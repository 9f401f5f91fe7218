"""Step time and memory of one training step in fp32 / bf16 / fp16 autocast, channels-last-3d off and on.

For a video ViT and X3D-XS at one clip size, every combination of precision and memory layout
runs training steps through the engine (``vl.train.train_one_epoch``: autocast forward, loss,
backward, fp16 GradScaler, AdamW), timed with the repeats interleaved so background load hits
all combinations alike (``vidlab.train.precision.time_training_steps``). Memory is the measured
peak of live tensors in one step (``vidlab.train.memory.peak_step_memory``, PyTorch's MemTracker: tensor
bytes, not allocator overhead), with the activations at that peak. On CUDA a TF32 row is added;
on a CPU it is skipped with the reason. fp16 on a CPU without fp16 matrix units is very slow:
this script takes minutes there.

    .venv/bin/python benchmarks/mixed_precision.py --frames 4 --size 64 --batch 4 --repeats 2
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

import vidlab as vl
from vidlab.models import count_params, create_model
from vidlab.recipes import mixed_precision as mp


def models_at(frames: int, size: int, vit_width: int, num_classes: int) -> dict[str, torch.nn.Module]:
    """The ViT (8x8-px patches, 2-frame tubelets, 4 blocks) and X3D-XS for ``frames x size x size`` clips."""
    vl.set_seed(0)
    vit = create_model("vit_mini", num_classes=num_classes, img_size=size, num_frames=frames, patch_size=8,
                       embed_dim=vit_width, depth=4, num_heads=max(1, vit_width // 64))
    x3d = create_model("x3d_xs", num_classes=num_classes, num_frames=frames, img_size=size)
    return {f"vit (width {vit_width}, {vit.num_patches} tokens)": vit, "x3d_xs": x3d}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="clip length T")
    parser.add_argument("--size", type=int, default=64, help="clip height = width")
    parser.add_argument("--batch", type=int, default=4, help="clips per step")
    parser.add_argument("--vit-width", type=int, default=256, help="embedding width of the ViT")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per combination (after one warm-up)")
    parser.add_argument("--precisions", default="fp32,tf32,bf16,fp16", help="comma-separated: fp32,tf32,bf16,fp16")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = vl.get_device(args.device)
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    models = models_at(args.frames, args.size, args.vit_width, num_classes=12)
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=g),
             "label": torch.randint(0, 12, (args.batch,), generator=g)}
    print(f"device {device}, {torch.get_num_threads()} threads, clips {tuple(batch['video'].shape)}; "
          + ", ".join(f"{name}: {count_params(m) / 1e6:.2f} M params" for name, m in models.items()))
    rows = mp.step_table(models, batch, precisions=precisions, channels_last=(False, True), device=device,
                         repeats=args.repeats, memory=not args.no_memory, progress=True)
    table = pd.DataFrame(rows)
    skipped = table[table.get("skipped").notna()] if "skipped" in table else table.iloc[0:0]
    shown = table.drop(columns=[c for c in ("skipped",) if c in table]).dropna(subset=["step_ms"])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(shown.round(2).to_string(index=False))
    for precision, reason in skipped.drop_duplicates("precision")[["precision", "skipped"]].itertuples(index=False):
        print(f"{precision}: skipped ({reason})")
    print("speedup: vs the same model's fp32 step in the contiguous layout; peak_mib / activations_mib: "
          "measured peak of live tensors in one step and the activations at that moment")


if __name__ == "__main__":
    main()
