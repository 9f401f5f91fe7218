"""timm-style model registry: ``register_model``, ``create_model``, ``list_models``.

Every registered entry point is a function ``name(num_classes=..., **kwargs) -> nn.Module``
whose result takes ``(B, C, T, H, W)`` float clips and has ``forward_features``,
``forward_head(feats, pre_logits=False)``, ``reset_classifier(num_classes)``, ``num_classes``,
``num_features`` and a ``default_cfg`` dict (at least ``num_frames``, ``img_size``, ``in_chans``,
``classifier``).
"""
from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path
from typing import Callable

from torch import nn

__all__ = ["UnknownModelError", "register_model", "create_model", "list_models", "is_model", "model_entrypoint"]

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(KeyError):
    """Raised by :func:`create_model` for a name that is not registered; lists the known names."""

    def __init__(self, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        self.name = name
        self.message = f"unknown model {name!r}.{hint} Known models: {', '.join(known)}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under ``fn.__name__``. A duplicate name is an error."""
    name = fn.__name__
    if name in _MODEL_ENTRYPOINTS and _MODEL_ENTRYPOINTS[name] is not fn:
        raise ValueError(f"model name {name!r} is registered twice ({fn.__module__} and "
                         f"{_MODEL_ENTRYPOINTS[name].__module__})")
    _MODEL_ENTRYPOINTS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching the fnmatch ``pattern`` (e.g. ``"x3d_*"``)."""
    return sorted(n for n in _MODEL_ENTRYPOINTS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """True when ``name`` is registered."""
    return name in _MODEL_ENTRYPOINTS


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered builder for ``name``; :class:`UnknownModelError` if there is none."""
    try:
        return _MODEL_ENTRYPOINTS[name]
    except KeyError:
        raise UnknownModelError(name, list_models()) from None


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = False,
    pretrained_file: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered video model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier size; ``None`` keeps the entry point's default, ``0`` removes the
            classifier (``forward`` then returns pooled features).
        pretrained: load weights. Sources, first found wins: ``pretrained_file``; the vidlab weights
            folder (``$VIDLAB_WEIGHTS`` or ``~/.cache/vidlab/weights``) holding ``<name>.pth``; an
            existing local timm / torchvision cache for the backbone. Nothing is ever downloaded;
            if no file exists, :class:`~vidlab.models.weights.PretrainedWeightsNotFoundError` says
            which files to put where.
        pretrained_file: explicit weights file (implies ``pretrained=True``).
        **kwargs: passed to the model builder (e.g. ``img_size``, ``num_frames``, ``drop_rate``).

    Returns:
        the model (train mode, on CPU unless built inside ``with torch.device(...)``).
    """
    entry = model_entrypoint(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained_file is not None:
        pretrained = True
    spec = {"name": name, "kwargs": dict(kwargs)}  # what save_model stores to rebuild it
    if not pretrained:
        return _with_spec(entry(**kwargs), spec)

    from vidlab.models.weights import load_pretrained, resolve_pretrained_source

    source = resolve_pretrained_source(name, pretrained_file, kwargs)
    if source.kind == "backbone":
        # 2D / torchvision backbone weights from a local cache: the builder loads them before
        # lifting; the classifier stays freshly initialised unless the sizes match.
        return _with_spec(entry(backbone_checkpoint=Path(source.path), **kwargs), spec)
    model = entry(**kwargs)
    load_pretrained(model, source.path, model_name=name)
    return _with_spec(model, spec)


def _with_spec(model: nn.Module, spec: dict) -> nn.Module:
    model.vidlab_spec = spec
    return model
