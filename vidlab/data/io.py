"""Decoding video frames with PyAV: by timestamp, as a clip, or all of them.

Frames come back as ``(T, H, W, C)`` uint8 RGB tensors. Times are seconds from the first
frame of the video stream (the first frame is at ``t = 0``, whatever the container's start
offset), and a time ``t`` selects the frame being displayed at ``t``: the last frame whose
presentation timestamp is ``<= t``. A video shows frames for ``t`` in ``[0, duration)``;
asking for ``t >= duration`` is an error, never padding.

Files are opened by :mod:`vidlab.data.container` (local files only, an allow-list of
container formats, size caps, strict error detection); its names (``probe``,
``open_video``, ``VideoDecodeError``, ...) are importable from here too. Every failure is a
``VideoDecodeError`` naming the file, the stage and the reason.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from vidlab.data.container import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    VideoDecodeError,
    VideoInfo,
    _ffmpeg_reason,
    _stream_rate,
    _video_stream,
    open_video,
    probe,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "VideoDecodeError",
    "VideoInfo",
    "decode_all",
    "decode_clip",
    "decode_frames",
    "open_video",
    "probe",
]

# Two timestamps closer than this (seconds) are the same instant (float rounding of k / fps).
_TIME_EPS = 1e-6


# ----------------------------------------------------------------------------- decode
class _Clock:
    """Frame times in seconds relative to the stream start; per-frame display durations."""

    def __init__(self, stream):
        self.time_base = stream.time_base
        # exact integer numerator, one float division: same result as float(Fraction), faster
        self._tb_num = self.time_base.numerator if self.time_base else 1
        self._tb_den = self.time_base.denominator if self.time_base else 1
        self.start_pts = stream.start_time or 0
        rate = _stream_rate(stream)
        self.nominal_duration = 1.0 / rate if rate > 0 else 0.0
        self.header_duration = (
            float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        )
        self.header_frames = int(stream.frames or 0)
        self._last_time: float | None = None

    def time(self, frame) -> float:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:  # no timestamp at all: assume the nominal rate after the previous frame
            value = 0.0 if self._last_time is None else self._last_time + self.nominal_duration
        else:
            value = (pts - self.start_pts) * self._tb_num / self._tb_den
        self._last_time = value
        return value

    def duration(self, frame) -> float:
        if frame.duration and self.time_base:
            return float(frame.duration * self.time_base)
        return self.nominal_duration

    def seek_target(self, seconds: float) -> int:
        # + 1e-6 tick: a time that is exactly a frame's pts must not round down below it
        return self.start_pts + math.floor(seconds * self._tb_den / self._tb_num + 1e-6)


def _prepare_decoding(container, path, threads: bool):
    stream = _video_stream(container, path)
    if threads:
        stream.thread_type = "AUTO"
    return stream, _Clock(stream)


def _frames(container, stream, path) -> Iterator:
    """Decode the stream, turning FFmpeg errors and frames flagged corrupt into VideoDecodeError."""
    iterator = container.decode(stream)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError) as error:
            raise VideoDecodeError(path, "decode", f"bitstream error: {_ffmpeg_reason(error)}") from None
        if frame.is_corrupt:
            raise VideoDecodeError(path, "decode", f"frame at pts={frame.pts} is corrupt")
        yield frame


def _seek(container, stream, clock: _Clock, seconds: float, path) -> bool:
    """Seek to the keyframe at or before ``seconds``; return False when no seek was needed."""
    if seconds <= 0.0:
        return False
    try:
        container.seek(clock.seek_target(seconds), stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, "seek", f"cannot seek to t={seconds:.4f}s: {_ffmpeg_reason(error)}") from None
    return True


def _rewind(container, stream, path) -> None:
    try:
        container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(path, "seek", f"cannot seek to the start: {_ffmpeg_reason(error)}") from None


class _RGBConverter:
    """Convert decoded frames to (H, W, 3) uint8 RGB with one reused swscale context.

    ``frame.to_ndarray(format="rgb24")`` builds a new conversion context per frame, which is
    several times slower with bit-identical output; swscale runs single-threaded
    (parallelism comes from DataLoader workers and the decoder's own threads).
    """

    def __init__(self):
        self._reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _video_extent(clock: _Clock, last_time: float, last_frame, decoded_from_start: int | None) -> str:
    end = last_time + clock.duration(last_frame)
    count = f"{decoded_from_start} frames" if decoded_from_start is not None else (
        f"{clock.header_frames} frames" if clock.header_frames else "its frames")
    text = f"the video has {count} and ends at {end:.4f}s (last frame at {last_time:.4f}s)"
    if clock.header_duration is not None and end < clock.header_duration - clock.nominal_duration / 2:
        text += f"; its header promises {clock.header_duration:.4f}s, so the file is probably truncated"
    return text


class _SeekOvershot(Exception):
    """The first frame after a seek lies after the target: the seek was not precise."""


def _select_by_time(container, stream, clock: _Clock, sorted_times: np.ndarray, path, *, seek: bool) -> list:
    """For ascending times, return the array of the frame displayed at each (see module doc)."""
    seeked = _seek(container, stream, clock, float(sorted_times[0]), path) if seek else False
    to_array = _RGBConverter()
    results: list[np.ndarray] = []
    previous = None
    previous_array: np.ndarray | None = None
    previous_time = 0.0
    decoded = 0
    total = len(sorted_times)
    for frame in _frames(container, stream, path):
        frame_time = clock.time(frame)
        decoded += 1
        if seeked and previous is None and frame_time > sorted_times[0] + _TIME_EPS:
            raise _SeekOvershot
        while len(results) < total and sorted_times[len(results)] + _TIME_EPS < frame_time:
            if previous is None:  # before the first frame of the video: the first frame
                previous, previous_array, previous_time = frame, None, frame_time
            if previous_array is None:
                previous_array = to_array(previous)
            results.append(previous_array)
        frame_array = previous_array if previous is frame else None
        while len(results) < total and abs(sorted_times[len(results)] - frame_time) <= _TIME_EPS:
            if frame_array is None:
                frame_array = to_array(frame)
            results.append(frame_array)
        if len(results) == total:
            return results
        previous, previous_array, previous_time = frame, frame_array, frame_time
    if previous is None:
        raise VideoDecodeError(path, "decode", "no frame could be decoded")
    end = previous_time + clock.duration(previous)
    remaining = sorted_times[len(results):]
    past_end = remaining[remaining >= end - _TIME_EPS]
    if past_end.size:
        extent = _video_extent(clock, previous_time, previous, None if seeked else decoded)
        raise VideoDecodeError(
            path,
            "decode",
            f"asked for a frame at t={float(past_end[-1]):.4f}s ({past_end.size} of {total} requested "
            f"times at or past the end), but {extent}",
        )
    if previous_array is None:
        previous_array = to_array(previous)
    results.extend([previous_array] * len(remaining))
    return results


def decode_frames(
    path,
    times: Sequence[float],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: bool = True,
) -> torch.Tensor:
    """Decode the frames displayed at ``times`` (seconds; any order, repeats allowed).

    Seeks once to the keyframe before ``min(times)`` and decodes forward until ``max(times)``
    is covered, selecting by presentation timestamp (correct for variable frame rate).
    A time before the first frame gives the first frame; a time at or past the end of the
    video raises ``VideoDecodeError(stage="decode")``.
    Returns ``(T, H, W, 3)`` uint8 with ``T = len(times)``, in the order of ``times``.
    """
    requested = np.asarray(times, dtype=np.float64)
    if requested.ndim != 1 or requested.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence of seconds, got shape {requested.shape}")
    if not np.all(np.isfinite(requested)):
        raise ValueError(f"times must be finite, got {requested.tolist()}")
    order = np.argsort(requested, kind="stable")
    sorted_times = requested[order]
    with open_video(path, max_pixels=max_pixels) as container:
        stream, clock = _prepare_decoding(container, path, threads)
        try:
            selected = _select_by_time(container, stream, clock, sorted_times, path, seek=True)
        except _SeekOvershot:
            _rewind(container, stream, path)
            selected = _select_by_time(container, stream, clock, sorted_times, path, seek=False)
    frames: list[np.ndarray] = [None] * len(selected)  # type: ignore[list-item]
    for sorted_position, original_position in enumerate(order):
        frames[original_position] = selected[sorted_position]
    return torch.from_numpy(np.stack(frames))


def _native_clip(container, stream, clock: _Clock, start: float, needed: int, stride: int, path, *, seek: bool):
    seeked = _seek(container, stream, clock, start, path) if seek else False
    to_array = _RGBConverter()
    collected: list[np.ndarray] = []
    kept = 0  # frames at or after ``start``
    last = None
    last_time = 0.0
    decoded = 0
    first = True
    for frame in _frames(container, stream, path):
        frame_time = clock.time(frame)
        decoded += 1
        if seeked and first and frame_time > start + _TIME_EPS:
            raise _SeekOvershot
        first = False
        last, last_time = frame, frame_time
        if frame_time < start - _TIME_EPS:
            continue
        if kept % stride == 0:
            collected.append(to_array(frame))
            if len(collected) == needed:
                return collected
        kept += 1
    if last is None:
        raise VideoDecodeError(path, "decode", "no frame could be decoded")
    extent = _video_extent(clock, last_time, last, None if seeked else decoded)
    raise VideoDecodeError(
        path,
        "decode",
        f"clip needs {needed} frames (stride {stride}, i.e. {(needed - 1) * stride + 1} frames) from "
        f"t={start:.4f}s but only {kept} frames remain after it; {extent}",
    )


def decode_clip(
    path,
    start: float,
    num_frames: int,
    *,
    fps: float | None = None,
    stride: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: bool = True,
) -> torch.Tensor:
    """Decode a clip of ``num_frames`` frames starting at ``start`` seconds.

    ``fps=None``: the native frames from the first one with timestamp ``>= start``, keeping
    every ``stride``-th. ``fps`` given: the frames displayed at ``start + i * stride / fps``
    (resampling, see ``decode_frames``). A video too short for the clip raises
    ``VideoDecodeError(stage="decode")``. Returns ``(num_frames, H, W, 3)`` uint8.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if not math.isfinite(start):
        raise ValueError(f"start must be a finite number of seconds, got {start!r}")
    if fps is not None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be positive, got {fps!r}")
        times = start + np.arange(num_frames, dtype=np.float64) * (stride / fps)
        return decode_frames(path, times, max_pixels=max_pixels, threads=threads)
    with open_video(path, max_pixels=max_pixels) as container:
        stream, clock = _prepare_decoding(container, path, threads)
        try:
            frames = _native_clip(container, stream, clock, float(start), int(num_frames), int(stride), path, seek=True)
        except _SeekOvershot:
            _rewind(container, stream, path)
            frames = _native_clip(container, stream, clock, float(start), int(num_frames), int(stride), path, seek=False)
    return torch.from_numpy(np.stack(frames))


def decode_all(
    path,
    *,
    max_frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: bool = True,
) -> tuple[torch.Tensor, np.ndarray]:
    """Decode every frame (or the first ``max_frames``) in display order.

    Returns ``frames`` ``(T, H, W, 3)`` uint8 and ``pts`` ``(T,)`` float64 seconds from the
    first frame; ``decode_frames(path, pts)`` returns the same frames.
    """
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    arrays: list[np.ndarray] = []
    times: list[float] = []
    to_array = _RGBConverter()
    with open_video(path, max_pixels=max_pixels) as container:
        stream, clock = _prepare_decoding(container, path, threads)
        for frame in _frames(container, stream, path):
            arrays.append(to_array(frame))
            times.append(clock.time(frame))
            if max_frames is not None and len(arrays) >= max_frames:
                break
    if not arrays:
        raise VideoDecodeError(path, "decode", "no frame could be decoded")
    return torch.from_numpy(np.stack(arrays)), np.asarray(times, dtype=np.float64)
