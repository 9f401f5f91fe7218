"""Streaming: frames arrive one at a time and the model answers after every frame.

Two ways to classify the last ``window`` frames of a live stream with a causal (online) TSM
(:class:`vidlab.models.OnlineTSM`):

* :class:`WindowRerun` keeps the last ``window`` frames and re-runs the whole clip after every
  new frame: ``window`` frames of backbone work per frame.
* :class:`OnlineStream` runs the backbone on the NEW frame only. Each residual block keeps the
  channels it will hand to the next frame (the shift buffers are the temporal cache), and the
  head keeps the pooled features of the last ``window`` frames. One frame of work per frame.

:func:`causal_reference` computes, from ONE run of the clip model over the whole stream, what
the online stream must output at every frame; the two agree to float rounding. While the
stream is shorter than the window, that is exactly ``model(frames so far)``.

:class:`FrameSource` reads a video file as a live source (as fast as possible, or paced at its
frame rate). Layouts: decoder frames ``(H, W, C)`` uint8, model frames ``(B, C, H, W)``
normalised, clips ``(B, C, T, H, W)``.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
from torch import nn

from vidlab.data.io import VideoDecodeError, open_video

__all__ = ["FrameSource", "frame_transform", "OnlineStream", "WindowRerun", "causal_reference", "StreamTrace",
           "run_stream"]


class FrameSource:
    """A video file read as a live source: yields ``(t_seconds, frame (H, W, C) uint8)`` one at a time.

    ``realtime=True`` paces frames at the file's own timestamps (a camera); otherwise frames come
    as fast as they decode. ``every=k`` passes on every k-th decoded frame only (a model that runs
    at 1/k of the camera's frame rate, as one trained on clips with frame stride k must); ``max_frames``
    counts the frames passed on. Decoding errors raise :class:`~vidlab.data.VideoDecodeError` naming the file.
    """

    def __init__(self, path: str | os.PathLike, *, realtime: bool = False, max_frames: int | None = None,
                 every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"FrameSource: every must be >= 1, got {every}")
        self.path, self.realtime, self.max_frames, self.every = path, realtime, max_frames, int(every)

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        with open_video(self.path) as container:
            if not container.streams.video:
                raise VideoDecodeError(self.path, "probe", "no video stream")
            stream = container.streams.video[0]
            first, started, count, decoded = None, time.perf_counter(), 0, 0
            iterator = container.decode(stream)
            while self.max_frames is None or count < self.max_frames:
                try:
                    frame = next(iterator)
                except StopIteration:
                    return
                except (av.error.FFmpegError, OSError) as err:
                    raise VideoDecodeError(self.path, "decode", f"bitstream error: {err}") from None
                if frame.pts is None or frame.time is None:
                    raise VideoDecodeError(self.path, "decode", "a frame without a timestamp")
                first = frame.time if first is None else first
                decoded += 1
                if (decoded - 1) % self.every:
                    continue
                t = float(frame.time - first)
                if self.realtime:
                    delay = started + t - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                count += 1
                yield t, frame.to_ndarray(format="rgb24")


def frame_transform(img_size: int, mean: Sequence[float], std: Sequence[float]):
    """Decoder frame ``(H, W, C)`` uint8 -> model frame ``(1, C, img_size, img_size)``: resize the
    short side, centre crop, normalise (the same as the clip model's evaluation transform)."""
    from vidlab.data.transforms import eval_transform

    clip_transform = eval_transform(size=img_size, resize=img_size, mean=mean, std=std)

    def apply(frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        frames = torch.as_tensor(frame)[None]  # (1, H, W, C)
        return clip_transform(frames)[:, 0][None]  # (C, 1, h, w) -> (1, C, h, w)

    return apply


def _check_online(model: nn.Module) -> None:
    if not (hasattr(model, "stream_features") and hasattr(model, "reset_stream")):
        raise TypeError(f"streaming needs an online (causal) model with stream_features / reset_stream, "
                        f"e.g. vidlab.models.OnlineTSM; got {type(model).__name__}")


class OnlineStream:
    """Classify a stream one frame at a time with a temporal cache (``model``: an OnlineTSM in eval mode).

    ``step(frame (B, C, H, W)) -> logits (B, K)``: the class scores of the last ``window`` frames.
    """

    def __init__(self, model: nn.Module, window: int) -> None:
        _check_online(model)
        if window < 1:
            raise ValueError(f"OnlineStream: window must be >= 1, got {window}")
        self.model, self.window = model.eval(), int(window)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next frame starts a new stream."""
        self.model.reset_stream()
        self.features: deque[torch.Tensor] = deque(maxlen=self.window)

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        self.features.append(self.model.stream_features(frame))
        return self.model.forward_head(torch.stack(tuple(self.features), dim=-1)[..., None, None])

    def cache_bytes(self) -> int:
        """Bytes of state kept between frames: the blocks' shift buffers plus the window of pooled features."""
        return self.model.cache_bytes() + sum(f.numel() * f.element_size() for f in self.features)


class WindowRerun:
    """The baseline: keep the last ``window`` frames and run the clip model on all of them after each frame."""

    def __init__(self, model: nn.Module, window: int) -> None:
        self.model, self.window = model.eval(), int(window)
        self.reset()

    def reset(self) -> None:
        self.frames: deque[torch.Tensor] = deque(maxlen=self.window)

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        self.frames.append(frame)
        return self.model(torch.stack(tuple(self.frames), dim=2))


@torch.no_grad()
def causal_reference(model: nn.Module, clip: torch.Tensor, window: int) -> torch.Tensor:
    """What :class:`OnlineStream` must output after each frame of ``clip`` ``(B, C, T, H, W)``:
    ONE clip-model pass over all ``T`` frames, then the head on the mean of the last ``window``
    frames' pooled features. Returns ``(T, B, num_classes)``."""
    _check_online(model)
    feats = model.eval().forward_features(clip).mean(dim=(3, 4))  # (B, F, T)
    out = []
    for t in range(clip.shape[2]):
        recent = feats[..., max(0, t - window + 1):t + 1]
        out.append(model.forward_head(recent[..., None, None]))
    return torch.stack(out)


@dataclass
class StreamTrace:
    """Per frame: its time in the video (s), the logits after it ``(N, K)``, and the compute latency (ms)."""

    times: np.ndarray
    logits: torch.Tensor
    latency_ms: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(-1).numpy()


def run_stream(source: FrameSource, runner: OnlineStream | WindowRerun, transform, *, progress: bool = False) -> StreamTrace:
    """Feed every frame of ``source`` through ``transform`` and ``runner.step`` (after ``runner.reset()``);
    the latency of a frame is from its arrival (decoded) to its prediction (preprocessing included)."""
    from tqdm.auto import tqdm

    runner.reset()
    times, logits, latency = [], [], []
    for t, frame in tqdm(source, desc="frames", disable=not progress):
        start = time.perf_counter()
        logits.append(runner.step(transform(frame))[0])
        latency.append((time.perf_counter() - start) * 1000.0)
        times.append(t)
    if not logits:
        raise VideoDecodeError(source.path, "decode", "no frame could be decoded")
    return StreamTrace(np.asarray(times), torch.stack(logits), np.asarray(latency))
