"""Memory each process holds: DDP (a full replica) against FSDP2 (``fully_shard``, a 1/N shard).

With DDP every process keeps all parameters, all gradients and the whole optimizer state
(AdamW: two more tensors the size of the parameters), so the per-process bytes do not
shrink as processes are added. FSDP shards all three: each process keeps 1/N of each and
all-gathers one unit's full parameters just before that unit runs (freeing them after),
then reduce-scatters the gradients so each process receives only its shard's average.

Run under torchrun (it trains a few steps both ways on random clips from the same weights)::

    torchrun --nproc_per_node 2 -m vidlab.dist.fsdp --model vit_mini --steps 3 --out fsdp.json

Rank 0 writes the bytes per process of each strategy and the largest difference between the
weights the two reached (both are data parallel with the same global batch).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vidlab.dist.env import init_distributed, shutdown
from vidlab.utils import atomic_path, set_seed


def _local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` stored by this process (a DTensor's local shard, or ``t`` itself)."""
    return t.to_local() if hasattr(t, "to_local") else t


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors)


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this process stores for parameters, gradients and optimizer state (local shards only)."""
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.ndim > 0]
    out = {
        "params": _nbytes(params),
        "grads": _nbytes(p.grad for p in params if p.grad is not None),
        "optimizer": _nbytes(state),
    }
    out["total"] = sum(out.values())
    return out


def shard_model(model: nn.Module, units: Sequence[nn.Module] | None = None) -> nn.Module:
    """Apply FSDP2: each unit (default: the children of ``model.blocks`` when it has them) is
    sharded on its own, then the root holds the rest (embedding, norms, head)."""
    from torch.distributed.fsdp import fully_shard

    if units is None:
        blocks = getattr(model, "blocks", None)
        units = list(blocks) if isinstance(blocks, nn.Module) else []
    for unit in units:
        fully_shard(unit)
    fully_shard(model)
    return model


def largest_unit_bytes(model: nn.Module) -> int:
    """Bytes of the biggest block's full parameters: what FSDP gathers at one time (besides the root)."""
    blocks = getattr(model, "blocks", None)
    units = list(blocks) if isinstance(blocks, nn.Module) else []
    sizes = [sum(p.numel() * p.element_size() for p in b.parameters()) for b in units]
    rest = sum(p.numel() * p.element_size() for p in model.parameters()) - sum(sizes)
    return max(sizes + [rest])


def _batches(steps: int, batch: int, shape: tuple[int, ...], num_classes: int, seed: int, rank: int):
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 10_007 + step * 101 + rank)
        yield torch.randn(batch, *shape, generator=g), torch.randint(0, num_classes, (batch,), generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, device: torch.device, batches) -> list[float]:
    losses = []
    for x, y in batches:
        opt.zero_grad(set_to_none=False)  # keep gradients allocated so they are counted
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def compare(model_name: str, *, steps: int = 3, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
            device: str = "auto") -> dict[str, Any]:
    """Train ``steps`` steps with DDP and with FSDP2 from the same weights on the same clips.

    Must run inside a process group (torchrun). Returns, on every rank, the bytes rank 0
    holds for each strategy and the max abs difference of the final weights.
    """
    from vidlab.models import create_model

    env = init_distributed(device=device)
    if not env.distributed:
        raise RuntimeError("vidlab.dist.fsdp.compare needs several processes: launch it with torchrun")
    set_seed(seed)
    base = create_model(model_name, num_classes=12)
    cfg = base.default_cfg
    shape = (3, int(cfg["num_frames"]), int(cfg["img_size"]), int(cfg["img_size"]))
    batches = list(_batches(steps, batch_size, shape, 12, seed, env.rank))

    ddp_model = nn.parallel.DistributedDataParallel(
        copy.deepcopy(base).to(env.device), device_ids=[env.device.index] if env.device.type == "cuda" else None)
    ddp_opt = torch.optim.AdamW(ddp_model.parameters(), lr=lr)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    ddp_losses = _train(ddp_model, ddp_opt, env.device, batches)
    ddp_peak = torch.cuda.max_memory_allocated(env.device) if env.device.type == "cuda" else None
    ddp_bytes = held_bytes(ddp_model.module, ddp_opt)

    fsdp_model = shard_model(copy.deepcopy(base).to(env.device))
    fsdp_opt = torch.optim.AdamW(fsdp_model.parameters(), lr=lr)
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(env.device)
    fsdp_losses = _train(fsdp_model, fsdp_opt, env.device, batches)
    fsdp_peak = torch.cuda.max_memory_allocated(env.device) if env.device.type == "cuda" else None
    fsdp_bytes = held_bytes(fsdp_model, fsdp_opt)

    full = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for n, p in fsdp_model.named_parameters()}
    diff = max((full[n] - p.detach()).abs().max().item() for n, p in ddp_model.module.named_parameters())
    return {
        "model": model_name, "world_size": env.world_size, "backend": env.backend, "device": str(env.device),
        "steps": steps, "batch_size_per_process": batch_size,
        "param_count": sum(p.numel() for p in base.parameters()),
        "ddp_bytes": ddp_bytes, "fsdp_bytes": fsdp_bytes, "largest_unit_bytes": largest_unit_bytes(base),
        "ddp_peak_bytes": ddp_peak, "fsdp_peak_bytes": fsdp_peak,
        "ddp_losses": ddp_losses, "fsdp_losses": fsdp_losses, "max_abs_weight_diff": diff,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidlab.dist.fsdp", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_test")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="JSON file rank 0 writes")
    args = p.parse_args(argv)
    try:
        result = compare(args.model, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device)
        if dist.get_rank() == 0:
            with atomic_path(Path(args.out), fsync=False) as tmp:
                tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
            print(f"DDP holds {result['ddp_bytes']['total']:,} bytes per process, "
                  f"FSDP {result['fsdp_bytes']['total']:,}; "
                  f"weights differ by at most {result['max_abs_weight_diff']:.2e}")
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
