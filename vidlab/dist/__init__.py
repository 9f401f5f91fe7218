"""Data-parallel training and sharded evaluation on ``torch.distributed``, launched by ``torchrun``.

- :mod:`vidlab.dist.env`: rank / world size from torchrun's variables; gloo (CPU) or nccl (CUDA).
- :mod:`vidlab.dist.sampling`: ``DistributedSampler`` keys and per-item seeds, so N processes with
  batch b take the same steps as one process with batch N*b; unpadded shards for evaluation.
- :mod:`vidlab.dist.evaluate`: every process scores its shard, the results are gathered.
- :mod:`vidlab.dist.comm`: ring all-reduce cost and DDP's gradient buckets.
- :mod:`vidlab.dist.launch`: build and stream ``torchrun`` commands (loopback only).
- :mod:`vidlab.dist.fsdp`: memory per process, DDP against FSDP2 (``fully_shard``).
- :mod:`vidlab.dist.cli` and :mod:`vidlab.dist.trainer`: ``python -m vidlab train`` (settings, the run).
"""
from __future__ import annotations

from vidlab.dist.comm import ddp_bucket_sizes, gradient_bytes, ring_allreduce, ring_allreduce_bytes
from vidlab.dist.env import DistEnv, backend_for, init_distributed, is_distributed, read_env, shutdown
from vidlab.dist.evaluate import merge_evaluations, sharded_evaluate
from vidlab.dist.launch import (
    RunResult,
    display_command,
    free_port,
    launch_env,
    python_command,
    run_command,
    run_commands,
    torchrun_command,
)
from vidlab.dist.sampling import DistributedItemSampler, SeededItems, ShardSampler, global_batch_order, item_seed

__all__ = [
    "DistEnv",
    "DistributedItemSampler",
    "RunResult",
    "SeededItems",
    "ShardSampler",
    "backend_for",
    "ddp_bucket_sizes",
    "display_command",
    "free_port",
    "global_batch_order",
    "gradient_bytes",
    "init_distributed",
    "is_distributed",
    "item_seed",
    "launch_env",
    "merge_evaluations",
    "python_command",
    "read_env",
    "ring_allreduce",
    "ring_allreduce_bytes",
    "run_command",
    "run_commands",
    "sharded_evaluate",
    "shutdown",
    "torchrun_command",
]
