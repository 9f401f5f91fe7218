"""Showing clips: frame grids, inline HTML5 video, and sampler timelines.

Inputs are decoder frames ``(T, H, W, C)`` uint8 (use
:func:`vidlab.data.transforms.denormalize` to turn a normalised ``(C, T, H, W)`` clip back).
"""
from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from vidlab.data.samplers import ClipSampler


def _as_numpy(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if frames.ndim != 4:
        raise ValueError(f"expected frames (T, H, W, C), got shape {frames.shape}")
    return frames


def frame_grid(
    clips: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    *,
    row_titles: Sequence[str] | None = None,
    max_frames: int = 8,
    frame_titles: Sequence[str] | None = None,
    size: float = 1.2,
    gap: int = 2,
) -> Figure:
    """One row of frames per clip (each ``(T, H, W, C)`` uint8), at most ``max_frames`` per row,
    evenly spaced over the clip. Drawn as one mosaic image (fast even for many clips)."""
    if isinstance(clips, (torch.Tensor, np.ndarray)) and np.ndim(clips) == 4:
        clips = [clips]
    rows = [_as_numpy(c) for c in clips]
    if any(r.shape[-1] == 1 for r in rows):
        rows = [np.repeat(r, 3, axis=-1) if r.shape[-1] == 1 else r for r in rows]
    cols = min(max_frames, max(len(r) for r in rows))
    h = max(r.shape[1] for r in rows)
    w = max(r.shape[2] for r in rows)
    mosaic = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    picks = []
    for i, clip in enumerate(rows):
        idx = np.linspace(0, len(clip) - 1, min(cols, len(clip))).round().astype(int)
        picks.append(idx)
        for j, k in enumerate(idx):
            fh, fw = clip.shape[1:3]
            mosaic[i * (h + gap) : i * (h + gap) + fh, j * (w + gap) : j * (w + gap) + fw] = clip[k]
    fig, ax = plt.subplots(figsize=(size * cols + (1.6 if row_titles else 0), size * len(rows) * h / w + 0.4))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([j * (w + gap) + w / 2 for j in range(cols)])
    ax.set_xticklabels(list(frame_titles) if frame_titles else [f"t={k}" for k in picks[0]] + [""] * (cols - len(picks[0])), fontsize=8)
    ax.xaxis.tick_top()
    if row_titles:
        ax.set_yticks([i * (h + gap) + h / 2 for i in range(len(rows))])
        ax.set_yticklabels(list(row_titles), fontsize=8)
    else:
        ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    fig.tight_layout()
    return fig


def video_html(frames: torch.Tensor | np.ndarray, *, fps: float = 8.0, scale: int = 4, loop: bool = True) -> str:
    """An HTML5 ``<video>`` tag with the clip embedded as a base64 H.264 mp4 (nearest-neighbour
    upscaled ``scale`` times so small clips are visible)."""
    from vidlab.data.encode import encode_video

    arr = _as_numpy(frames)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = arr.shape[1] - arr.shape[1] % 2, arr.shape[2] - arr.shape[2] % 2
    arr = np.ascontiguousarray(arr[:, :h, :w])
    with tempfile.TemporaryDirectory() as tmp:
        path = encode_video(arr, Path(tmp) / "clip.mp4", fps=fps, crf=20)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    attrs = "controls autoplay muted playsinline" + (" loop" if loop else "")
    return f'<video {attrs} width="{w}" height="{h}"><source type="video/mp4" src="data:video/mp4;base64,{data}"></video>'


def show_video(frames: torch.Tensor | np.ndarray, **kw) -> "object":
    """Display a clip inline in Jupyter (see :func:`video_html`)."""
    from IPython.display import HTML

    return HTML(video_html(frames, **kw))


def plot_sampling(
    samplers: Mapping[str, ClipSampler],
    *,
    duration: float,
    fps: float,
    seed: int = 0,
    draws: int = 3,
) -> Figure:
    """Timeline of the frames each sampler picks in a ``duration``-second video at ``fps``.

    Each sampler gets ``draws`` rows (different random draws from one seeded generator);
    the grey ticks are the video's frames, the dots the sampled timestamps, one colour (and a
    small vertical offset) per clip.
    """
    fig, ax = plt.subplots(figsize=(9, 0.45 * draws * len(samplers) + 1))
    g = torch.Generator().manual_seed(seed)
    y, labels = 0, []
    frame_times = np.arange(int(round(duration * fps))) / fps
    for name, sampler in samplers.items():
        for d in range(draws):
            ax.scatter(frame_times, np.full_like(frame_times, y), marker="|", color="0.8", s=60)
            clips = sampler(duration, fps, g)
            for k, times in enumerate(clips):
                dy = 0.25 * (k - (len(clips) - 1) / 2) if len(clips) > 1 else 0.0  # overlapping clips stay visible
                ax.scatter(times, np.full_like(times, y + dy), s=18, color=plt.cm.tab10(k % 10), zorder=3)
            labels.append(f"{name} #{d + 1}")
            y += 1
        y += 0.5
    ticks = []
    t = 0.0
    for name in samplers:
        ticks += [t + d for d in range(draws)]
        t += draws + 0.5
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_xlim(-0.05, duration + 0.05)
    ax.set_title(f"which frames each sampler takes from a {duration:.1f} s video at {fps:g} fps")
    fig.tight_layout()
    return fig
