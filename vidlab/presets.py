"""Per-notebook settings for the ``smoke`` / ``cpu`` / ``gpu`` presets.

A notebook's parameters cell may leave a setting at ``None`` ("use the preset's value");
:func:`resolve` fills those from the notebook's preset table and keeps explicit values.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class DataPrepSettings:
    """01_data_preparation."""

    num_frames: int = 8  # frames per clip
    stride: int = 2  # native frames between sampled frames
    clip_size: int = 32  # crop size fed to models
    batch_size: int = 16
    throughput_clips: int = 384  # clips timed in the loader benchmark
    loader_workers: int = 2


DATA_PREP = {
    "smoke": DataPrepSettings(throughput_clips=48, batch_size=8),
    "cpu": DataPrepSettings(),
    "gpu": DataPrepSettings(num_frames=16, clip_size=112, throughput_clips=1024, loader_workers=8),
}

# notebook -> "module:attribute" of its preset table (imported on first use)
TABLES: dict[str, str] = {
    "01_data_preparation": "vidlab.presets:DATA_PREP",
    "02_self_supervised_pretraining": "vidlab.train.pretraining:PRETRAIN_PRESETS",
    "03_finetuning": "vidlab.train.finetune:FINETUNE_PRESETS",
    "04_transfer_learning": "vidlab.train.transfer:TRANSFER_PRESETS",
}


def table_for(notebook: str) -> dict[str, Any]:
    """The ``{preset: settings}`` table of a notebook."""
    if notebook not in TABLES:
        raise KeyError(f"no preset table for notebook {notebook!r}; have {', '.join(sorted(TABLES))}")
    module, _, attr = TABLES[notebook].partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve(notebook: str, preset: str, **overrides: Any) -> Any:
    """The preset's settings for ``notebook`` with every non-``None`` override applied.

    Override names are the settings' field names in upper or lower case
    (``THROUGHPUT_CLIPS=100`` or ``throughput_clips=100``); an unknown name is an error.
    """
    table = table_for(notebook)
    if preset not in table:
        raise ValueError(f"PRESET={preset!r} is not a preset of {notebook}; choose one of {', '.join(table)}")
    settings = table[preset]
    names = {f.name for f in fields(settings)}
    changes = {}
    for key, value in overrides.items():
        name = key.lower()
        if name not in names:
            raise ValueError(f"{notebook}: unknown setting {key!r}; settings are {', '.join(sorted(names))}")
        if value is not None:
            changes[name] = value
    return replace(settings, **changes)
