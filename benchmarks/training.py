"""Training throughput of three model families, with and without ``channels_last_3d``.

For each model: a few warm-up steps, then timed steps of forward + cross-entropy + backward +
SGD on random clips, first in the default (contiguous, NCTHW) memory format, then with model
and input in ``torch.channels_last_3d``. Prints a table with training clips/s and the achieved
GFLOP/s, defined as 2 x forward MACs per clip x clips/s (a training step costs about 3x the
forward pass, so the arithmetic really done is about 3x that figure).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/training.py --frames 8 --size 64 --batch 8
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from tqdm.auto import tqdm

import vidlab as vl
from vidlab.models import count_macs, count_params, create_model

MODEL_KWARGS = {
    # ViTs: patch = size/8 and 2-frame tubelets, so an 8-frame clip is always 4x8x8 = 256 tokens
    "vit_mini": lambda frames, size: {"img_size": size, "num_frames": frames, "patch_size": max(size // 8, 1)},
    "vit_tiny": lambda frames, size: {"img_size": size, "num_frames": frames, "patch_size": max(size // 8, 1)},
}


def measure(name: str, frames: int, size: int, batch: int, warmup: int, steps: int,
            channels_last: bool, num_classes: int = 10) -> float:
    """Training clips/s of model ``name`` on ``(batch, 3, frames, size, size)`` clips."""
    vl.set_seed(0)
    kwargs = MODEL_KWARGS.get(name, lambda f, s: {})(frames, size)
    model = create_model(name, num_classes=num_classes, **kwargs).train()
    x = torch.randn(batch, 3, frames, size, size)
    y = torch.randint(0, num_classes, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="x3d_xs,vit_mini,r2plus1d_18", help="comma-separated registry names")
    parser.add_argument("--frames", type=int, default=8, help="clip length T")
    parser.add_argument("--size", type=int, default=64, help="clip height = width")
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    args = parser.parse_args()

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; clips {args.batch}x3x{args.frames}x"
          f"{args.size}x{args.size}; {args.warmup} warm-up + {args.steps} timed steps (fwd+bwd+SGD)")
    rows = []
    for name in tqdm(names, desc="models"):
        kwargs = MODEL_KWARGS.get(name, lambda f, s: {})(args.frames, args.size)
        with torch.device("meta"):
            meta_model = create_model(name, num_classes=10, **kwargs)
        macs = count_macs(meta_model, (1, 3, args.frames, args.size, args.size))
        params = count_params(meta_model)
        rates = {cl: measure(name, args.frames, args.size, args.batch, args.warmup, args.steps, cl)
                 for cl in (False, True)}
        rows.append((name, params, macs, rates))

    header = (f"{'model':<13}{'params':>9}{'GMACs/clip':>12}{'clips/s':>10}{'GFLOP/s':>10}"
              f"{'clips/s CL3d':>14}{'GFLOP/s CL3d':>14}{'CL3d/default':>14}")
    print(header)
    print("-" * len(header))
    for name, params, macs, rates in rows:
        off, on = rates[False], rates[True]
        print(f"{name:<13}{params / 1e6:>8.2f}M{macs / 1e9:>12.3f}{off:>10.2f}{2 * macs * off / 1e9:>10.2f}"
              f"{on:>14.2f}{2 * macs * on / 1e9:>14.2f}{on / off:>13.2f}x")
    print("GFLOP/s = 2 x forward MACs per clip x training clips/s; CL3d = torch.channels_last_3d")


if __name__ == "__main__":
    main()
