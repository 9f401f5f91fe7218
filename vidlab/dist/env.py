"""Who am I in a distributed run: rank, world size, backend, device, and the process group.

``torchrun`` starts one Python process per worker and tells each where it stands through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``, ``TORCHELASTIC_RESTART_COUNT``). :func:`read_env` reads them
without touching the network; :func:`init_distributed` then joins the process group with
the backend that fits the device: ``gloo`` for CPU tensors, ``nccl`` for CUDA tensors.
A plain ``python`` process (no ``torchrun``) is a world of one and creates no process group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from vidlab.utils import get_device


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the run. ``rank`` 0 is the main process (it writes files)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int = 0  # how many times torchrun restarted the workers (``--max-restarts``)
    backend: str | None = None  # "gloo" | "nccl"; None without a process group
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when launched by torchrun with more than one worker."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def num_nodes(self) -> int:
        """Machines (torchrun agents) in the run, assuming the same workers per machine."""
        return max(1, self.world_size // max(1, self.local_world_size))


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def read_env() -> DistEnv:
    """The torchrun variables of this process (a world of one when they are absent)."""
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistEnv(
        rank=rank,
        world_size=world,
        local_rank=_int_env("LOCAL_RANK", 0),
        local_world_size=_int_env("LOCAL_WORLD_SIZE", 1),
        restart_count=_int_env("TORCHELASTIC_RESTART_COUNT", 0),
    )


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for everything else (CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


def resolve_device(env: DistEnv, device: str = "auto") -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for CUDA (one GPU per worker), else CPU."""
    dev = get_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", env.local_rank)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {env.local_rank} would use {dev}, but only {torch.cuda.device_count()} GPU(s) are "
                "visible; start at most that many workers per machine (--nproc_per_node)"
            )
    return dev


def init_distributed(env: DistEnv | None = None, *, device: str = "auto", timeout_s: float = 60.0) -> DistEnv:
    """Join the default process group when ``WORLD_SIZE > 1``; returns the env with backend and device.

    ``timeout_s`` bounds how long a collective (an all-reduce, a barrier) waits for a peer
    before it fails with an error instead of hanging, e.g. when another worker died.
    """
    env = env or read_env()
    dev = resolve_device(env, device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not env.distributed:
        return replace(env, device=dev)
    backend = backend_for(dev)
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, timeout=timeout, device_id=dev if dev.type == "cuda" else None,
                                **_restart_store(env, timeout))
    if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
        raise RuntimeError(f"process group says rank {dist.get_rank()}/{dist.get_world_size()}, "
                           f"the environment says {env.rank}/{env.world_size}")
    return replace(env, backend=backend, device=dev)


def _restart_store(env: DistEnv, timeout: timedelta) -> dict:
    """After a torchrun restart, a fresh key space in the launcher's store for the process group.

    torchrun shares its rendezvous store with the workers and keeps it across restarts, so the
    restarted workers would read the addresses the dead ones published (pytorch issue 135712;
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` also avoids it). Every worker of a restarted
    group has the same ``TORCHELASTIC_RESTART_COUNT``, which names the key space.
    """
    if env.restart_count == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world_size,
                          is_master=False, timeout=timeout)
    return {"store": dist.PrefixStore(f"vidlab/restart_{env.restart_count}", store), "rank": env.rank,
            "world_size": env.world_size}


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
