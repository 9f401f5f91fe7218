"""What a notebook's run must show: the ``Lesson`` thresholds kept beside each preset table."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    """One thing a notebook's run must show, checked by ``python -m vidlab run --check``.

    ``metric`` (a key of ``metrics.json``; ``a.b`` reaches into a dict) must satisfy
    ``op`` (``">="``, ``">"``, ``"<="``, ``"<"``) against ``value`` (a number, or the name of
    another metric) plus ``offset``, e.g. ``Lesson("tsm_top1", ">=", "tsn_top1", 0.3, ...)``.
    """

    metric: str
    op: str
    value: float | str
    offset: float = 0.0
    why: str = ""
    presets: tuple[str, ...] = ("cpu", "gpu")
