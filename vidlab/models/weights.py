"""Pretrained weights from local files only. Nothing here downloads anything.

Where ``create_model(name, pretrained=True)`` looks, first found wins:

1. ``pretrained_file=`` when given (a missing file is an error, never a fallback);
2. the vidlab weights folder: ``$VIDLAB_WEIGHTS`` (when set) and ``~/.cache/vidlab/weights``,
   file ``<name>.pth`` or ``<name>.safetensors``;
3. for models built on a timm / torchvision backbone, that backbone's weights if they already
   sit in the local cache (timm: the Hugging Face hub cache, looked up with
   ``huggingface_hub.try_to_load_from_cache``, which only reads the disk, or timm's legacy
   ``torch.hub.get_dir()/checkpoints``; torchvision: ``torch.hub.get_dir()/checkpoints``).

If none exists :class:`PretrainedWeightsNotFoundError` names the model, the expected file names
and the folders to put them in. Weights are read with ``torch.load(weights_only=True)`` (or
safetensors), so a pickle that would run code is refused.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

__all__ = [
    "PretrainedWeightsNotFoundError",
    "PretrainedWeightsError",
    "WeightsSource",
    "CacheLookup",
    "LoadReport",
    "weights_dirs",
    "register_backbone_source",
    "resolve_pretrained_source",
    "load_state_dict_file",
    "load_pretrained",
    "timm_cached_weights",
    "torchvision_cached_weights",
]


class PretrainedWeightsNotFoundError(FileNotFoundError):
    """Weights were requested but no file is on disk. Says which files to put in which folders."""

    def __init__(self, model_name: str, expected_files: list[str], folders: list[str], note: str = "") -> None:
        self.model_name = model_name
        self.expected_files = expected_files
        self.folders = folders
        lines = [f"no pretrained weights on disk for model {model_name!r} (vidlab never downloads).",
                 "Looked for:"]
        lines += [f"  - {f}" for f in expected_files]
        lines.append("Put a weights file (a state_dict saved with torch.save) in one of: "
                     + ", ".join(folders))
        lines.append("or pass pretrained_file=PATH, or use pretrained=False for a random init.")
        if note:
            lines.append(note)
        self.message = "\n".join(lines)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class PretrainedWeightsError(ValueError):
    """A weights file exists but cannot be used (refused pickle, wrong keys or shapes)."""


@dataclass
class WeightsSource:
    """Where weights come from: ``kind`` is ``"file"`` (a whole-model state_dict) or ``"backbone"``."""

    kind: str
    path: Path


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the file and the classifier keys it dropped (size mismatch)."""

    path: Path
    dropped_classifier_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


# model name -> finder(**model_kwargs) -> CacheLookup
_BACKBONE_SOURCES: dict[str, Callable[..., "CacheLookup"]] = {}


@dataclass
class CacheLookup:
    """Result of looking for library weights in a local cache: the file if present, else where it would be."""

    found: Path | None
    expected: list[str]
    folders: list[str]


def register_backbone_source(model_name: str, finder: Callable[..., CacheLookup]) -> None:
    """Declare where ``model_name``'s timm / torchvision weights live in a local cache.

    ``finder(**create_model_kwargs)`` returns a :class:`CacheLookup`.
    """
    _BACKBONE_SOURCES[model_name] = finder


def weights_dirs() -> list[Path]:
    """The vidlab weights folders searched, in order: ``$VIDLAB_WEIGHTS`` (if set), ``~/.cache/vidlab/weights``."""
    dirs = []
    env = os.environ.get("VIDLAB_WEIGHTS")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path("~/.cache/vidlab/weights").expanduser())
    return dirs


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def timm_cached_weights(backbone: str) -> CacheLookup:
    """Find a timm model's pretrained weights in the local caches (no network).

    ``backbone`` is a timm name, optionally with a tag (``"resnet18.a1_in1k"``).
    """
    import timm
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None:
        return CacheLookup(None, [f"(timm has no pretrained weights registered for {backbone!r})"], [])
    expected: list[str] = []
    folders: list[str] = []
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            hit = try_to_load_from_cache(repo_id=repo, filename=filename)
            if isinstance(hit, str) and Path(hit).is_file():
                return CacheLookup(Path(hit), expected, folders)
            cache_dir = Path(hf_constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
            expected.append(f"{cache_dir}/snapshots/<revision>/{filename} (timm 2D backbone {repo}, "
                            f"Hugging Face hub cache)")
        folders.append(f"{hf_constants.HF_HUB_CACHE} (as `hf download {repo}` would store it)")
    if cfg.url:
        legacy = _torch_hub_checkpoints() / os.path.basename(cfg.url)
        if legacy.is_file():
            return CacheLookup(legacy, expected, folders)
        expected.append(f"{legacy} (timm 2D backbone, legacy torch.hub cache)")
        folders.append(str(legacy.parent))
    return CacheLookup(None, expected, folders)


def torchvision_cached_weights(tv_name: str) -> CacheLookup:
    """Find torchvision's default weights for ``tv_name`` in ``torch.hub.get_dir()/checkpoints``."""
    import torchvision

    url = torchvision.models.get_model_weights(tv_name).DEFAULT.url
    path = _torch_hub_checkpoints() / os.path.basename(url)
    return CacheLookup(path if path.is_file() else None,
                       [f"{path} (torchvision Kinetics-400 weights)"], [str(path.parent)])


def resolve_pretrained_source(model_name: str, pretrained_file: str | os.PathLike | None = None,
                              model_kwargs: Mapping | None = None) -> WeightsSource:
    """Pick the weights file for ``model_name`` (see module docstring) or raise PretrainedWeightsNotFoundError."""
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise PretrainedWeightsNotFoundError(model_name, [str(path)], [str(path.parent)],
                                                 note="(pretrained_file was given and does not exist)")
        return WeightsSource("file", path)
    expected: list[str] = []
    for folder in weights_dirs():
        for suffix in (".pth", ".safetensors"):
            candidate = folder / f"{model_name}{suffix}"
            if candidate.is_file():
                return WeightsSource("file", candidate)
            expected.append(str(candidate))
    folders = [str(d) for d in weights_dirs()]
    finder = _BACKBONE_SOURCES.get(model_name)
    if finder is not None:
        lookup = finder(**dict(model_kwargs or {}))
        if lookup.found is not None:
            return WeightsSource("backbone", lookup.found)
        expected += lookup.expected
        folders += lookup.folders
    raise PretrainedWeightsNotFoundError(model_name, expected, folders)


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or a checkpoint dict holding one under model/state_dict/model_state."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return tensors
    raise PretrainedWeightsError(
        f"{path}: not a state_dict (expected a dict of tensors, or a checkpoint with a 'model' / "
        f"'state_dict' entry); got {type(obj).__name__}"
    )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch file with ``weights_only=True`` (pickles refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for disallowed globals, RuntimeError for junk
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise PretrainedWeightsError(
            f"refused to load {path}: not a weights-only file ({type(exc).__name__}: {first})"
        ) from exc
    return _unwrap_state_dict(obj, path)


def _classifier_prefixes(model: nn.Module) -> list[str]:
    cfg = getattr(model, "default_cfg", {}) or {}
    classifier = cfg.get("classifier", "head")
    return [classifier] if isinstance(classifier, str) else list(classifier)


def load_pretrained(model: nn.Module, path: str | os.PathLike, model_name: str = "",
                    key_prefix: str = "") -> LoadReport:
    """Load a whole-model state_dict from ``path`` into ``model`` (in place).

    Every non-classifier parameter and buffer must be present with the same shape, otherwise a
    :class:`PretrainedWeightsError` lists the missing / unexpected / mis-shaped keys. Classifier
    weights whose shape differs (another ``num_classes``) are dropped and the classifier is
    re-initialised with ``reset_classifier`` (a warning says so). ``key_prefix`` is prepended to
    every key of the file (e.g. ``"net."`` to load a torchvision checkpoint into a wrapper).
    """
    path = Path(path)
    state = load_state_dict_file(path)
    if key_prefix:
        state = {key_prefix + k: v for k, v in state.items()}
    own = model.state_dict()
    prefixes = _classifier_prefixes(model)

    def is_classifier(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    dropped, misshaped = [], []
    for key in list(state):
        if key in own and own[key].shape != state[key].shape:
            (dropped if is_classifier(key) else misshaped).append(key)
            if is_classifier(key):
                del state[key]
    label = f"model {model_name!r}" if model_name else type(model).__name__
    if misshaped:
        details = ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in misshaped[:8])
        raise PretrainedWeightsError(f"{path} does not fit {label}: shape mismatch in {details}")
    # classifier weights for a model built without a classifier (num_classes=0) are not used
    dropped += [k for k in list(state) if k not in own and is_classifier(k)]
    for key in dropped:
        state.pop(key, None)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not is_classifier(k)]
    classifier_missing = [k for k in result.missing_keys if is_classifier(k)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"{path} does not fit {label}: {len(missing)} missing keys {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, {len(unexpected)} unexpected keys {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}"
        )
    if (dropped or classifier_missing) and model.num_classes > 0:
        model.reset_classifier(model.num_classes)
        warnings.warn(
            f"{label}: classifier weights in {path} not used ({', '.join(dropped + classifier_missing)}: "
            f"other number of classes or absent); classifier freshly initialised for "
            f"num_classes={model.num_classes}",
            stacklevel=2,
        )
    return LoadReport(path=path, dropped_classifier_keys=dropped + classifier_missing,
                      missing_keys=missing, unexpected_keys=unexpected)
