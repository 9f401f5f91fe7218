"""Video data: PyAV I/O, clip samplers, transforms, manifests, datasets, synthetic data.

Names are imported lazily, so ``import vidlab`` stays quick and each piece can be used alone.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

_EXPORTS = {
    # io
    "VideoDecodeError": "io", "VideoInfo": "io", "probe": "io", "decode_frames": "io",
    "decode_clip": "io", "decode_all": "io", "open_video": "io",
    # manifests
    "ManifestRow": "manifest", "ManifestError": "manifest", "read_manifest": "manifest",
    "write_manifest": "manifest", "class_names": "manifest",
    # samplers
    "ClipSampler": "samplers", "RandomClipSampler": "samplers", "MultiClipSampler": "samplers",
    "UniformSegmentSampler": "samplers", "make_sampler": "samplers",
    # transforms
    "train_transform": "transforms", "eval_transform": "transforms", "denormalize": "transforms",
    # datasets
    "VideoDataset": "datasets", "VideoLoader": "datasets", "make_loader": "datasets",
    "SkipReport": "datasets", "TooManySkipsError": "datasets", "WorkerDiedError": "datasets",
    "subsample_per_class": "datasets",
    # decode-once cache
    "DecodedVideos": "cache", "CachedClipDataset": "cache", "cached_loader": "cache",
    # data sources
    "encode_video": "encode", "ensure_dataset": "synthetic", "prepare_folder": "prepare",
    "PrepareReport": "prepare", "download": "standard", "extract": "standard",
    "build_ucf101_manifest": "standard", "build_hmdb51_manifest": "standard",
    "build_kinetics_manifest": "standard", "build_ssv2_manifest": "standard",
}

__all__ = sorted(_EXPORTS)


_SUBMODULES = frozenset(m.name for m in pkgutil.iter_modules(__path__))


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vidlab.data.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:  # vl.data.cache.cached_loader works without importing vidlab.data.cache first
        return importlib.import_module(f"vidlab.data.{name}")
    raise AttributeError(f"module 'vidlab.data' has no attribute {name!r}")
