"""Notebook 01's settings: clip geometry and the loader benchmark, per preset."""
from __future__ import annotations

from dataclasses import dataclass

from vidlab.recipes.lessons import Lesson

__all__ = ["DATA_PREP", "DataPrepSettings", "LESSONS"]


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

# What notebook 01's run must show (checked by ``python -m vidlab run --check``)
LESSONS = (
    Lesson("loader_vs_decode", ">=", 0.7, why="the DataLoader (LOADER_WORKERS processes) keeps up with raw PyAV decoding"),
)
