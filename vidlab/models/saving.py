"""Self-contained model files: ``save_model`` / ``load_model``.

One file holds everything needed to rebuild and use a model, and nothing executable::

    {"format": "vidlab-model", "version": 1,
     "name": registry name, "kwargs": constructor arguments (primitives),
     "state_dict": weights, "class_names": [str] or None,
     "mean": (3,) floats, "std": (3,) floats,          # input normalisation of [0, 1] pixels
     "num_frames", "img_size", "frame_stride",          # the clip geometry the model expects
     "meta": free-form primitives (metrics, provenance)}

:func:`load_model` rebuilds the model with :func:`~vidlab.models.create_model` and loads the
file with ``torch.load(weights_only=True)``, so no other file and no pickled code is involved.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidlab.utils import atomic_torch_save, load_checkpoint

MODEL_FORMAT = "vidlab-model"
MODEL_VERSION = 1
_PRIMITIVES = (bool, int, float, str, type(None))


@dataclass
class ModelInfo:
    """What :func:`load_model` knows about a model besides its weights."""

    name: str
    kwargs: dict[str, Any]
    class_names: list[str] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_frames: int
    img_size: int
    frame_stride: int
    meta: dict[str, Any] = field(default_factory=dict)


def _primitive(value: Any, where: str) -> Any:
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)):
        return [_primitive(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _primitive(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"save_model: {where} is a {type(value).__name__}; only numbers, strings, lists and dicts are stored")


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"name", "kwargs"}`` recorded by :func:`~vidlab.models.create_model` on the model it built."""
    spec = getattr(model, "vidlab_spec", None)
    if spec is None:
        raise ValueError(
            f"save_model: this {type(model).__name__} was not built by vidlab.models.create_model, so its "
            "registry name and arguments are unknown; pass name= and model_kwargs= explicitly"
        )
    return spec


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_frames: int | None = None,
    img_size: int | None = None,
    frame_stride: int = 2,
    name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as one self-contained, weights-only file (atomically).

    ``name`` / ``model_kwargs`` default to what ``create_model`` recorded. ``mean`` / ``std``
    (per channel, for clips in [0, 1]) default to the data pipeline's; ``num_frames`` /
    ``img_size`` default to the model's ``default_cfg``. ``meta`` holds extra primitives
    (metrics, where it came from). DDP / ``torch.compile`` wrappers are unwrapped.
    """
    from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD
    from vidlab.utils import unwrap_model

    model = unwrap_model(model)
    if name is None or model_kwargs is None:
        spec = model_spec(model)
        name = spec["name"] if name is None else name
        model_kwargs = spec["kwargs"] if model_kwargs is None else model_kwargs
    cfg = getattr(model, "default_cfg", {}) or {}
    img_size = img_size if img_size is not None else cfg.get("img_size")
    if isinstance(img_size, (tuple, list)):
        img_size = int(img_size[-1])
    num_frames = num_frames if num_frames is not None else cfg.get("num_frames")
    if num_frames is None or img_size is None:
        raise ValueError("save_model: pass num_frames= and img_size= (the model's default_cfg does not say)")
    record = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": str(name),
        "kwargs": _primitive(dict(model_kwargs), "model_kwargs"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": [str(c) for c in class_names] if class_names is not None else None,
        "mean": [float(v) for v in (mean if mean is not None else DEFAULT_MEAN)],
        "std": [float(v) for v in (std if std is not None else DEFAULT_STD)],
        "num_frames": int(num_frames),
        "img_size": int(img_size),
        "frame_stride": int(frame_stride),
        "meta": _primitive(dict(meta or {}), "meta"),
    }
    return atomic_torch_save(record, path)


def read_model_info(path: str | os.PathLike) -> tuple[ModelInfo, dict[str, torch.Tensor]]:
    """The :class:`ModelInfo` and state dict of a :func:`save_model` file, without building the model."""
    record = load_checkpoint(path)
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model file written by vidlab.models.save_model")
    if record.get("version", 0) > MODEL_VERSION:
        raise ValueError(f"{path}: model file version {record['version']} is newer than this vidlab reads ({MODEL_VERSION})")
    info = ModelInfo(
        name=record["name"], kwargs=dict(record["kwargs"]), class_names=record["class_names"],
        mean=tuple(record["mean"]), std=tuple(record["std"]), num_frames=record["num_frames"],
        img_size=record["img_size"], frame_stride=record["frame_stride"], meta=dict(record.get("meta") or {}),
    )
    return info, record["state_dict"]


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
               with_info: bool = False) -> nn.Module | tuple[nn.Module, ModelInfo]:
    """Rebuild a :func:`save_model` file: ``create_model(name, **kwargs)`` plus its weights, in eval mode.

    The model gets ``.class_names``, ``.mean``, ``.std`` and ``.clip_geometry`` attributes;
    ``with_info=True`` also returns the :class:`ModelInfo`.
    """
    from vidlab.models.registry import create_model

    info, state = read_model_info(path)
    model = create_model(info.name, **info.kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit {info.name}({info.kwargs}): missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    model.to(map_location).eval()
    model.class_names = info.class_names
    model.mean, model.std = info.mean, info.std
    model.clip_geometry = {"num_frames": info.num_frames, "img_size": info.img_size, "frame_stride": info.frame_stride}
    return (model, info) if with_info else model


class Normalized(nn.Module):
    """Wrap a model that expects normalised clips so it takes clips in [0, 1] ``(B, C, T, H, W)``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model((clips - self.mean) / self.std)
