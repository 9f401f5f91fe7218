"""vidlab: a notebook-first teaching and experimentation kit for video deep learning.

Use it as ``import vidlab as vl``. Layout conventions used everywhere:

* frames from the decoder: ``(T, H, W, C)`` uint8
* one clip for a model: ``(C, T, H, W)`` float
* a batch: ``(B, C, T, H, W)`` float
"""
from __future__ import annotations

from vidlab.utils import (
    atomic_torch_save,
    get_device,
    load_checkpoint,
    project_root,
    set_seed,
    seed_worker,
)
from vidlab.notebook import NotebookContext, record, read_metrics, setup

__version__ = "0.1.0"

_SUBPACKAGES = ("data", "models", "train", "robust", "compress", "infer", "dist", "recipes", "viz", "run", "presets")


def __getattr__(name: str):
    """Subpackages (``vl.data``, ``vl.models``, ``vl.train``, ``vl.robust``, ...) are imported on first use."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"vidlab.{name}")
    raise AttributeError(f"module 'vidlab' has no attribute {name!r}")

__all__ = [
    "NotebookContext",
    "atomic_torch_save",
    "get_device",
    "load_checkpoint",
    "project_root",
    "read_metrics",
    "record",
    "seed_worker",
    "set_seed",
    "setup",
]
