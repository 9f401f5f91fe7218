"""Training checkpoints that hold only tensors and primitives, written atomically, loaded weights-only.

A checkpoint is a dict::

    {"format": "vidlab-train-checkpoint", "version": 1, "epoch", "step",
     "model", "optimizer", "scheduler", "scaler",      # state dicts (or None)
     "config", "history", "extra",                     # primitives
     "rng": {"torch", "cuda", "numpy", "python", "generator"}}

Because it loads with ``torch.load(weights_only=True)`` (via :func:`vidlab.utils.load_checkpoint`),
a file that smuggles in a pickled object (``__reduce__`` -> ``os.system``) is refused, not run.
"""
from __future__ import annotations

import dataclasses
import enum
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidlab.utils import atomic_torch_save, load_checkpoint, unwrap_model

CHECKPOINT_FORMAT = "vidlab-train-checkpoint"
CHECKPOINT_VERSION = 1

_PRIMITIVES = (bool, int, float, str, type(None))


def to_primitives(obj: Any, *, where: str = "value") -> Any:
    """Convert dataclasses / tuples / paths / dtypes / enums into dicts, lists and primitives.

    Tensors are kept. Anything else raises ``TypeError`` naming where it was found.
    """
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, enum.Enum):
        return to_primitives(obj.value, where=where)
    if isinstance(obj, _PRIMITIVES):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_primitives(getattr(obj, f.name), where=f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool)):
                raise TypeError(f"checkpoint: {where} has a non-primitive key {key!r} ({type(key).__name__})")
            out[key] = to_primitives(value, where=f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_primitives(v, where=f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (os.PathLike, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(
        f"checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}; only tensors and "
        f"primitives (bool/int/float/str/None, lists, dicts, dataclasses) can be stored"
    )


def _check_weights_only_safe(obj: Any, where: str) -> None:
    """Raise ``TypeError`` if ``obj`` holds anything but tensors, primitives, lists, tuples and dicts."""
    if isinstance(obj, (torch.Tensor,) + _PRIMITIVES):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool)):
                raise TypeError(f"checkpoint: {where} has a non-primitive key {key!r}")
            _check_weights_only_safe(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_weights_only_safe(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint: {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which a weights-only "
        f"load refuses; convert it to tensors/primitives first"
    )


def capture_rng_state(generator: torch.Generator | None = None) -> dict:
    """RNG states of torch (CPU and CUDA), numpy, python ``random`` and an optional generator, as tensors/primitives."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {
            "bit_generator": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "state": [int(v) for v in py_state], "gauss_next": py_gauss},
        "generator": generator.get_state() if generator is not None else None,
    }


def restore_rng_state(state: Mapping, generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"].cpu())


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int,
    step: int,
    config: Any = None,
    history: Any = None,
    extra: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> Path:
    """Write a resumable training checkpoint atomically (temp file + fsync + ``os.replace``).

    ``epoch``: the last COMPLETED epoch (0-based); ``step``: optimizer steps done so far.
    ``config``/``history`` may be dataclasses (converted to dicts of primitives); ``extra`` must
    hold tensors/primitives. The RNG states (torch, CUDA, numpy, python, ``generator``) are
    stored so a resumed run continues the same random streams. Returns the path.
    """
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "step": int(step),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": to_primitives(scheduler.state_dict(), where="scheduler") if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "config": to_primitives(config, where="config"),
        "history": to_primitives(history.as_dict() if hasattr(history, "as_dict") else history, where="history"),
        "extra": to_primitives(dict(extra) if extra is not None else {}, where="extra"),
        "rng": capture_rng_state(generator),
    }
    _check_weights_only_safe(checkpoint, "checkpoint")
    return atomic_torch_save(checkpoint, path)


def load_checkpoint_into(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    generator: torch.Generator | None = None,
    restore_rng: bool = True,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``) into the given objects.

    Restores the RNG states unless ``restore_rng=False``. Returns the whole checkpoint dict
    (``epoch``, ``step``, ``config``, ``history``, ``extra``...). Raises ``ValueError`` for a file
    that is not a weights-only checkpoint (e.g. a malicious pickle) or not one of ours.
    """
    checkpoint = load_checkpoint(path, map_location=map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vidlab training checkpoint (missing format={CHECKPOINT_FORMAT!r})")
    unwrap_model(model).load_state_dict(checkpoint["model"], strict=strict)
    if optimizer is not None:
        if checkpoint.get("optimizer") is None:
            raise ValueError(f"{path} holds no optimizer state, but an optimizer was given to restore")
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    if restore_rng:
        restore_rng_state(checkpoint["rng"], generator)
    return checkpoint
