"""Side-by-side latency: several configurations timed in interleaved rounds.

On a shared or busy machine the speed of the CPU drifts over seconds (other processes, turbo,
thermal limits). Timing configuration A for ten seconds and then B for ten seconds lets that
drift decide the comparison. :func:`compare_latency` instead runs short rounds of every
configuration in turn (each round is :func:`vidlab.compress.measure_latency`, the one latency
helper of the kit) and reports, per configuration, the median over rounds of each round's
median (and p95), so every configuration sees the same conditions.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch

from vidlab.compress.latency import Latency, measure_latency

__all__ = ["compare_latency"]


def compare_latency(configs: Mapping[str, tuple[Callable[[torch.Tensor], object], torch.Tensor]], *,
                    rounds: int = 5, repeats: int = 10, warmup: int = 2, threads: int | None = None,
                    progress: bool = False) -> dict[str, Latency]:
    """Time every ``name: (fn, example)`` in ``rounds`` interleaved rounds of ``repeats`` calls.

    ``example`` is the input batch (e.g. clips ``(B, C, T, H, W)``). Returns ``{name: Latency}``
    whose ``median_ms`` / ``p95_ms`` / ``mean_ms`` are medians over rounds, ``min_ms`` the
    fastest call seen, ``repeats`` the total timed calls and ``first_call_ms`` the cold call of
    the first round (compilation, allocation, lazy initialisation).
    """
    from tqdm.auto import tqdm

    if rounds < 1:
        raise ValueError(f"compare_latency: rounds must be >= 1, got {rounds}")
    seen: dict[str, list[Latency]] = {name: [] for name in configs}
    for r in tqdm(range(rounds), desc="timing rounds", disable=not progress):
        for name, (fn, example) in configs.items():
            seen[name].append(measure_latency(fn, example, warmup=warmup if r == 0 else 1, repeats=repeats,
                                              threads=threads))
    out = {}
    for name, runs in seen.items():
        out[name] = replace(
            runs[0],
            median_ms=statistics.median(x.median_ms for x in runs),
            p95_ms=statistics.median(x.p95_ms for x in runs),
            mean_ms=statistics.median(x.mean_ms for x in runs),
            min_ms=min(x.min_ms for x in runs),
            repeats=sum(x.repeats for x in runs),
        )
    return out
