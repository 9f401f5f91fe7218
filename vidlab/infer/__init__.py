"""Inference and deployment (notebook 08): export paths, runtimes, a video predictor, streaming
with online TSM, dynamic batching, CUDA inference paths and ``python -m vidlab predict``.

Names are imported lazily, so ``import vidlab`` stays quick and each piece can be used alone.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # export paths
    "ExportPath": "export", "deploy_info": "export", "export_program": "export", "compile_aoti": "export",
    "export_onnx": "export", "compile_model": "export", "build_paths": "export", "max_abs_diff": "export",
    # runtimes
    "Runtime": "runtime", "ModelFileError": "runtime", "detect_kind": "runtime", "load_runtime": "runtime",
    # video-level prediction
    "ClipSpec": "predictor", "Task": "predictor", "VideoResult": "predictor", "PredictReport": "predictor",
    "VideoPredictor": "predictor", "decode_views": "predictor",
    # streaming
    "FrameSource": "streaming", "frame_transform": "streaming", "OnlineStream": "streaming",
    "WindowRerun": "streaming", "causal_reference": "streaming", "StreamTrace": "streaming", "run_stream": "streaming",
    # dynamic batching
    "DynamicBatcher": "batching", "LoadResult": "batching", "simulate_load": "batching",
    # GPU paths
    "gpu_skip_reason": "cuda", "cuda_inference_paths": "cuda",
    # processes vs threads
    "ScalingResult": "scaling", "process_throughput": "scaling", "thread_latency": "scaling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vidlab.infer.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vidlab.infer' has no attribute {name!r}")
