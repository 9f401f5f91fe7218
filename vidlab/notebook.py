"""What every notebook's setup cell and "record results" cell call.

A notebook's ``parameters`` cell holds only literals (``PRESET``, ``DATA_DIR``, ``OUTPUT_DIR``,
``SEED``, ``DEVICE``, ...). The setup cell hands them to :func:`setup`, which validates them,
seeds everything, picks the device, resolves the folders and makes sure the data exists.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidlab.utils import atomic_path, get_device, project_root, set_seed

PRESETS = ("smoke", "cpu", "gpu")
# The synthetic dataset size used by each notebook preset.
DATASET_PRESET = {"smoke": "smoke", "cpu": "cpu", "gpu": "full"}

_current: "NotebookContext | None" = None


@dataclass
class NotebookContext:
    """Resolved settings of one notebook run (see :func:`setup`)."""

    name: str
    preset: str
    data_dir: Path
    output_dir: Path
    seed: int
    device: torch.device
    generator: torch.Generator = field(repr=False)

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / "metrics.json"

    def path(self, name: str) -> Path:
        """A file inside the output folder (plots, checkpoints)."""
        return self.output_dir / name

    def savefig(self, fig: Any, name: str, *, show: bool = True, **kw: Any) -> Path:
        """Save a matplotlib figure as ``OUTPUT_DIR/<name>.png``, show it once in the notebook,
        and return the path."""
        out = self.output_dir / (name if name.endswith(".png") else f"{name}.png")
        fig.savefig(out, dpi=kw.pop("dpi", 110), bbox_inches=kw.pop("bbox_inches", "tight"), **kw)
        if show and _in_notebook():
            from IPython.display import display

            display(fig)
        import matplotlib.pyplot as plt

        plt.close(fig)  # pyplot would otherwise show it a second time at the end of the cell
        return out


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def default_data_dir(preset: str) -> Path:
    """Where the embedded synthetic dataset for a notebook preset lives."""
    return project_root() / "data" / f"synthetic-{DATASET_PRESET[preset]}"


def setup(
    name: str,
    *,
    preset: str,
    data_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike | None,
    seed: int,
    device: str = "auto",
    threads: int | None = None,
    need_data: bool = True,
) -> NotebookContext:
    """Validate the parameters cell, seed, pick the device, resolve folders, build data on demand.

    ``data_dir=None`` means the synthetic dataset for ``preset`` under ``data/``; when the
    folder has no ``manifest.csv`` yet, the synthetic dataset is generated there (and the
    notebook says so). ``output_dir=None`` means ``runs/interactive/<name>``.
    """
    global _current
    if preset not in PRESETS:
        raise ValueError(f"PRESET={preset!r} is not a preset; choose one of {', '.join(PRESETS)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"SEED must be an integer, got {seed!r}")
    dev = get_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    gen = set_seed(seed)
    data = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir(preset)
    out = (
        Path(output_dir).expanduser().resolve()
        if output_dir
        else project_root() / "runs" / "interactive" / name
    )
    out.mkdir(parents=True, exist_ok=True)
    ctx = NotebookContext(name=name, preset=preset, data_dir=data, output_dir=out, seed=seed, device=dev, generator=gen)
    _current = ctx
    if need_data:
        from vidlab.data.synthetic import ensure_dataset

        ensure_dataset(data, preset=DATASET_PRESET[preset], seed=0)
    print(f"[vidlab] {name}: preset={preset} device={dev} data={data} output={out}")
    return ctx


def current() -> NotebookContext:
    if _current is None:
        raise RuntimeError("no notebook context yet: call vl.setup(...) in the setup cell first")
    return _current


def _jsonable(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()  # a 0-d or 1-element tensor still becomes a plain number below
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (int, float)) and not isinstance(value[0], bool):
            value = value[0]
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def record(name: str, value: Any, output_dir: str | os.PathLike | None = None) -> Any:
    """Record one result into ``OUTPUT_DIR/metrics.json`` (merged, written atomically).

    Returns ``value`` so a cell can show it too.
    """
    out = Path(output_dir) if output_dir else current().output_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    metrics = read_metrics(out) if path.exists() else {}
    metrics[name] = _jsonable(value)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2, sort_keys=True)
    return value


def read_metrics(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The metrics a notebook recorded (``{}`` when it recorded none)."""
    path = Path(output_dir) / "metrics.json"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
