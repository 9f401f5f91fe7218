"""Clip samplers: where in a video to take the frames of a clip.

A sampler looks only at metadata (``duration`` in seconds and ``fps``) and returns a list of
clips, each a float64 array of ``num_frames`` timestamps in seconds. The decoder then returns,
for every timestamp, the frame on screen at that time, so sampling is correct for variable
frame rate too. Timestamps sit in the middle of a frame interval, never on its edge, so
rounding cannot pick the neighbouring frame.

* :class:`RandomClipSampler` - one clip at a random start (training).
* :class:`UniformSegmentSampler` - TSN: split the video into ``num_frames`` equal segments and
  take one frame per segment (random offset when training, the middle when testing).
* :class:`MultiClipSampler` - ``num_clips`` evenly spaced clips (dense multi-view testing);
  ``num_clips=1`` is the centre clip.

Randomness comes only from the ``torch.Generator`` passed in, so a seed fixes every choice.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ClipSampler(ABC):
    """Base: ``num_frames`` frames ``stride`` frames apart at ``fps`` (None: the native rate)."""

    num_frames: int = 8
    stride: int = 1
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def step(self, native_fps: float) -> float:
        """Seconds between two sampled frames."""
        return self.stride / (self.fps or native_fps)

    def span(self, native_fps: float) -> float:
        """Seconds one clip covers."""
        return self.num_frames * self.step(native_fps)

    def clip_times(self, start: float, native_fps: float) -> np.ndarray:
        """Timestamps of a clip starting at ``start``, each half a native frame past its step,
        so a clip starting on a frame boundary asks for the middle of every frame it takes."""
        dt = self.step(native_fps)
        return start + np.arange(self.num_frames) * dt + 0.5 / native_fps

    @abstractmethod
    def __call__(self, duration: float, native_fps: float, generator: torch.Generator | None = None) -> list[np.ndarray]:
        """Clips for a video of ``duration`` seconds at ``native_fps``: a list of timestamp arrays."""


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


@dataclass(frozen=True)
class RandomClipSampler(ClipSampler):
    """One clip whose start is uniform over the video (training)."""

    def __call__(self, duration: float, native_fps: float, generator: torch.Generator | None = None) -> list[np.ndarray]:
        slack = max(0.0, duration - self.span(native_fps))
        return [self.clip_times(slack * _uniform(generator), native_fps)]


@dataclass(frozen=True)
class MultiClipSampler(ClipSampler):
    """``num_clips`` clips spread evenly from the start to the end (testing; 1 = centre clip)."""

    num_clips: int = 1

    def __call__(self, duration: float, native_fps: float, generator: torch.Generator | None = None) -> list[np.ndarray]:
        slack = max(0.0, duration - self.span(native_fps))
        if self.num_clips == 1:
            starts = [slack / 2]
        else:
            starts = np.linspace(0.0, slack, self.num_clips).tolist()
        return [self.clip_times(s, native_fps) for s in starts]


@dataclass(frozen=True)
class UniformSegmentSampler(ClipSampler):
    """TSN segments: ``num_frames`` equal segments over the whole video, one frame in each.

    ``random=True`` picks a random time inside each segment (training), else its middle.
    ``stride`` and ``fps`` are ignored: the segments set the spacing.
    """

    random: bool = True

    def __call__(self, duration: float, native_fps: float, generator: torch.Generator | None = None) -> list[np.ndarray]:
        seg = duration / self.num_frames
        if self.random:
            offsets = torch.rand(self.num_frames, generator=generator, dtype=torch.float64).numpy()
        else:
            offsets = np.full(self.num_frames, 0.5)
        # keep away from the segment edges by half a frame so rounding stays inside it
        edge = min(0.5 / native_fps, seg / 2)
        times = np.arange(self.num_frames) * seg + edge + offsets * max(seg - 2 * edge, 0.0)
        return [times]


def make_sampler(
    kind: str,
    *,
    num_frames: int,
    stride: int = 1,
    fps: float | None = None,
    num_clips: int = 1,
) -> ClipSampler:
    """Build a sampler by name: ``random``, ``center``, ``multi``, ``segments``, ``segments_eval``."""
    if kind == "random":
        return RandomClipSampler(num_frames, stride, fps)
    if kind == "center":
        return MultiClipSampler(num_frames, stride, fps, num_clips=1)
    if kind == "multi":
        return MultiClipSampler(num_frames, stride, fps, num_clips=num_clips)
    if kind == "segments":
        return UniformSegmentSampler(num_frames, stride, fps, random=True)
    if kind == "segments_eval":
        return UniformSegmentSampler(num_frames, stride, fps, random=False)
    raise ValueError(f"unknown sampler {kind!r}; choose random, center, multi, segments or segments_eval")
