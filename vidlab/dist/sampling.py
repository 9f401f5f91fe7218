"""Which process sees which sample, and random augmentation that does not depend on the process.

Data parallelism splits every global batch across processes. For N processes with batch
``b`` each to take *exactly* the steps of one process with batch ``N*b``:

* the order: :class:`DistributedItemSampler` is torch's ``DistributedSampler`` (shuffled by
  ``seed + epoch``, padded to a multiple of N, rank ``r`` takes positions ``r, r+N, r+2N, ...``).
  Step ``k`` of rank ``r`` uses positions ``k*N*b + j*N + r`` (``j < b``); over all ranks that is
  the contiguous block ``[k*N*b, (k+1)*N*b)`` of the same permutation, which is what a single
  process with ``num_replicas=1`` and batch ``N*b`` takes at step ``k``;
* the augmentation: :class:`SeededItems` draws each item's random clip and crop from a seed
  that depends only on ``(seed, epoch, index)``, not on which process (or DataLoader worker)
  loads it or how many items it loaded before.

:class:`ShardSampler` shards evaluation without padding, so no sample is scored twice.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

ItemKey = tuple[int, int]  # (epoch, index)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of item ``index`` in ``epoch``: a fixed function of the three numbers."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 1_000_033 + int(index) + 7) % (2**63 - 1)


class SeededItems(Dataset):
    """``dataset`` whose item ``(epoch, index)`` is loaded under torch's RNG seeded by :func:`item_seed`.

    Keys are ``(epoch, index)`` pairs (as :class:`DistributedItemSampler` yields) or a plain
    ``index`` (epoch 0). The global torch RNG of the caller is left as it was. Attributes of
    the wrapped dataset (``classes``, ``report``, ...) are reachable through the wrapper, so
    :class:`~vidlab.data.datasets.VideoLoader` keeps counting skipped files.
    """

    def __init__(self, dataset: Any, seed: int = 0) -> None:
        self.__dict__["dataset"] = dataset
        self.__dict__["seed"] = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | ItemKey) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        # VideoLoader sets ``inflight_dir`` on its dataset; it belongs to the wrapped one
        setattr(self.dataset, name, value)


class DistributedItemSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` keys for :class:`SeededItems`.

    Same order, padding and sharding as ``DistributedSampler(dataset, num_replicas, rank,
    shuffle, seed, drop_last)``; ``set_epoch`` (called by ``vidlab.train.fit`` through
    ``seed_loader_for_epoch``) reshuffles and changes every item's augmentation.
    """

    def __iter__(self) -> Iterator[ItemKey]:  # type: ignore[override]
        epoch = self.epoch
        for index in super().__iter__():
            yield (epoch, int(index))


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + N, rank + 2N, ...`` of ``range(length)``: no shuffle, no padding.

    Shards differ in size by at most one item; together they hold every index exactly once,
    so gathered evaluation counts every sample once (``DistributedSampler`` would repeat some
    to make the shards equal).
    """

    def __init__(self, length: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"ShardSampler: rank {rank} is not in a world of {num_replicas}")
        self.length = int(length)
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))


def global_batch_order(length: int, *, batch_size: int, num_replicas: int, seed: int, epoch: int) -> list[list[int]]:
    """The indices each optimizer step of an epoch uses over all ranks, sorted per step.

    Rank ``r``'s ``k``-th batch is ``DistributedSampler(..., rank=r)``'s items ``[k*b, (k+1)*b)``;
    this lists the union over ranks for every ``k``. Two settings with the same global batch
    train on the same samples step by step when their lists are equal.
    """

    class _Len:
        def __len__(self) -> int:
            return length

    steps: dict[int, list[int]] = {}
    for rank in range(num_replicas):
        sampler = DistributedSampler(_Len(), num_replicas=num_replicas, rank=rank,  # type: ignore[arg-type]
                                     shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        for position, index in enumerate(sampler):
            steps.setdefault(position // batch_size, []).append(int(index))
    return [sorted(steps[k]) for k in sorted(steps)]
