"""Plots, clip display and ipywidgets explorers (names imported lazily)."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "frame_grid": "clips", "video_html": "clips", "show_video": "clips", "plot_sampling": "clips",
    "dataset_browser": "widgets",
    "plot_history": "plots", "plot_confusion": "plots", "plot_per_class": "plots", "plot_bars": "plots",
    "plot_pair_confusions": "transfer", "plot_label_budget": "transfer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vidlab.viz.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vidlab.viz' has no attribute {name!r}")
