"""Per-notebook settings for the ``smoke`` / ``cpu`` / ``gpu`` presets.

A notebook's parameters cell may leave a setting at ``None`` ("use the preset's value");
:func:`resolve` fills those from the notebook's preset table and keeps explicit values.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from vidlab.recipes.lessons import Lesson

__all__ = ["Lesson", "lessons_for", "resolve", "table_for"]


def _tables() -> dict[str, dict[str, Any]]:
    """notebook -> its ``{preset: settings}`` table (recipe modules are imported here, on first use)."""
    from vidlab.recipes import compression, inference
    from vidlab.recipes import data_prep, distributed, finetune, mixed_precision, pretraining, transfer
    from vidlab.recipes import adversarial

    return {
        "01_data_preparation": data_prep.DATA_PREP,
        "02_self_supervised_pretraining": pretraining.PRETRAIN_PRESETS,
        "03_finetuning": finetune.FINETUNE_PRESETS,
        "04_transfer_learning": transfer.TRANSFER_PRESETS,
        "05_adversarial_training": adversarial.PRESETS,
        "06_mixed_precision": mixed_precision.PRESETS,
        "07_compression": compression.PRESETS,
        "08_inference_deployment": inference.INFERENCE_PRESETS,
        "09_distributed": distributed.PRESETS,
    }


def table_for(notebook: str) -> dict[str, Any]:
    """The ``{preset: settings}`` table of a notebook."""
    tables = _tables()
    if notebook not in tables:
        raise KeyError(f"no preset table for notebook {notebook!r}; have {', '.join(sorted(tables))}")
    return tables[notebook]


def lessons_for(notebook: str) -> tuple[Lesson, ...]:
    """The ``LESSONS`` a notebook's run must show: the tuple kept in the module that holds its
    preset table (``()`` when that module declares none)."""
    import sys

    table = table_for(notebook)
    homes = [sys.modules.get(type(s).__module__) for s in table.values()]
    homes += [m for name, m in sorted(sys.modules.items()) if name.startswith("vidlab")]
    for module in homes:
        if module is not None and any(v is table for v in vars(module).values()):
            lessons = getattr(module, "LESSONS", None)
            if lessons is not None:
                if not all(isinstance(lesson, Lesson) for lesson in lessons):
                    raise TypeError(f"{module.__name__}.LESSONS must hold vidlab.presets.Lesson items")
                return tuple(lessons)
    return ()


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
