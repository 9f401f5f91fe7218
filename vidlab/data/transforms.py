"""Video-consistent augmentation with torchvision.transforms.v2 on ``tv_tensors.Video``.

torchvision's v2 transforms draw their random parameters once per call, so wrapping a clip
as ``tv_tensors.Video`` of shape ``(T, C, H, W)`` applies the same crop, flip and colour
change to every frame. The presets here take decoder frames ``(T, H, W, C)`` uint8 and return
a clip ``(C, T, H, W)`` float (or ``(3, C, T, H, W)`` for three-crop testing).

A clip is small, so its transform runs on one torch thread: splitting a few thousand pixels
over OpenMP threads costs more than it saves, and on a busy machine a waiting thread can
stall each op by a scheduler time slice (``benchmarks/data_loading.py`` prints the
difference). DataLoader workers run on one thread anyway; this makes the 0-worker loader
(and the decode-once cache) behave the same.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# Kinetics-style statistics; fine for the synthetic data and for natural video.
DEFAULT_MEAN = (0.45, 0.45, 0.45)
DEFAULT_STD = (0.225, 0.225, 0.225)

Transform = Callable[[torch.Tensor], torch.Tensor]


def to_video(frames: torch.Tensor) -> tv_tensors.Video:
    """Decoder frames ``(T, H, W, C)`` uint8 -> ``tv_tensors.Video`` ``(T, C, H, W)``."""
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected frames (T, H, W, C) with C=1 or 3, got shape {tuple(frames.shape)}")
    return tv_tensors.Video(frames.permute(0, 3, 1, 2))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the previous setting."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class VideoTransform:
    """Run a v2 pipeline on decoder frames and return ``(C, T, H, W)`` (or ``(V, C, T, H, W)``).

    ``pipeline`` sees a ``tv_tensors.Video`` ``(T, C, H, W)``; if it returns a tuple/list of
    videos (three-crop), they are stacked as views.
    """

    def __init__(self, pipeline: v2.Transform, *, per_view: v2.Transform | None = None) -> None:
        self.pipeline = pipeline
        self.per_view = per_view

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        with one_thread():
            return self._apply(frames)

    def _apply(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.pipeline(to_video(frames))
        if isinstance(out, (tuple, list)):
            views = [self.per_view(v) if self.per_view else v for v in out]
            return torch.stack([v.permute(1, 0, 2, 3) for v in views])
        return out.permute(1, 0, 2, 3).contiguous()

    def __repr__(self) -> str:
        return f"VideoTransform({self.pipeline})"


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_transform(
    *,
    size: int = 32,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    color_jitter: float = 0.2,
    hue: float = 0.0,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> VideoTransform:
    """Training preset: random resized crop, optional flip, colour jitter, normalise.

    ``color_jitter`` scales brightness, contrast and saturation; ``hue`` shifts are off by
    default because they cost several times the rest of the pipeline on a CPU.

    Set ``hflip=False`` when labels depend on left/right direction: a mirrored
    "move left" clip is a "move right" clip, so flipping would corrupt the labels.
    """
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color_jitter > 0 or hue > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=hue or None))
    return VideoTransform(v2.Compose(steps + _finish(mean, std)))


def eval_transform(
    *,
    size: int = 32,
    resize: int | None = None,
    crops: int = 1,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> VideoTransform:
    """Testing preset: resize the short side to ``resize`` (default ``size``), then a centre crop
    (``crops=1``, output ``(C, T, H, W)``) or three crops along the long side (``crops=3``,
    output ``(3, C, T, H, W)``)."""
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    resize = resize or size
    steps: list[v2.Transform] = [v2.Resize(resize, antialias=True)]
    if crops == 1:
        steps.append(v2.CenterCrop(size))
        return VideoTransform(v2.Compose(steps + _finish(mean, std)))
    steps.append(ThreeCrop(size))
    return VideoTransform(v2.Compose(steps), per_view=v2.Compose(_finish(mean, std)))


class ThreeCrop(v2.Transform):
    """Three ``size`` x ``size`` crops along the longer side (start, centre, end), as in SlowFast testing."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        h, w = video.shape[-2:]
        s = self.size
        if min(h, w) < s:
            raise ValueError(f"ThreeCrop({s}) needs frames at least {s}px, got {h}x{w}")
        if w >= h:
            offsets = [((h - s) // 2, x) for x in (0, (w - s) // 2, w - s)]
        else:
            offsets = [(y, (w - s) // 2) for y in (0, (h - s) // 2, h - s)]
        return tuple(tv_tensors.wrap(video[..., y : y + s, x : x + s], like=video) for y, x in offsets)


def denormalize(clip: torch.Tensor, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD) -> torch.Tensor:
    """Invert the normalisation of a clip ``(C, T, H, W)`` -> frames ``(T, H, W, C)`` uint8 for display."""
    m = torch.tensor(mean).view(-1, 1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1, 1)
    x = (clip.detach().cpu().float() * s + m).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(1, 2, 3, 0)
