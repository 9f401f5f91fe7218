"""Natural corruptions of video clips: what happens to a video on its way through the world.

Unlike an attack, a corruption does not look at the model. Each function takes clips
``(B, C, T, H, W)`` float in [0, 1] and returns corrupted clips of the same shape, in [0, 1]:

* :func:`gaussian_noise`: sensor noise, ``x + N(0, sigma^2)``;
* :func:`gaussian_blur`: defocus / motion blur within each frame;
* :func:`frame_drop`: lost frames; a dropped frame shows the last frame that arrived (a
  stalling player);
* :func:`temporal_jitter`: an unsteady capture clock; frame ``t`` shows a frame up to
  ``max_shift`` frames away;
* :func:`h264_reencode`: the clip re-encoded through H.264 at a (lower) quality with PyAV and
  decoded again, as a video is when it is uploaded, streamed or forwarded.

:func:`corrupt` applies one by name (:data:`CORRUPTIONS`), seeded.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "gaussian_noise",
    "gaussian_blur",
    "frame_drop",
    "temporal_jitter",
    "h264_reencode",
    "to_frames",
    "from_frames",
    "CORRUPTIONS",
    "corrupt",
]


def _check(clips: torch.Tensor, where: str) -> None:
    if clips.ndim != 5:
        raise ValueError(f"{where}: clips must be (B, C, T, H, W), got shape {tuple(clips.shape)}")


def gaussian_noise(clips: torch.Tensor, *, sigma: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add independent Gaussian noise of standard deviation ``sigma`` to every pixel, then clamp."""
    _check(clips, "gaussian_noise")
    noise = torch.randn(clips.shape, generator=generator, device=clips.device if generator is None else generator.device)
    return (clips + sigma * noise.to(clips.device)).clamp(0, 1)


def gaussian_blur(clips: torch.Tensor, *, sigma: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur every frame with a Gaussian of ``sigma`` pixels (kernel ``2 * ceil(2 sigma) + 1``)."""
    _check(clips, "gaussian_blur")
    b, c, t, h, w = clips.shape
    size = 2 * math.ceil(2 * sigma) + 1
    frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    blurred = TF.gaussian_blur(frames, kernel_size=[size, size], sigma=[sigma, sigma])
    return blurred.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()


def _gather_frames(clips: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b, :, t] = clips[b, :, index[b, t]]`` for an index ``(B, T)``."""
    b, c, t, h, w = clips.shape
    idx = index.to(clips.device).view(b, 1, t, 1, 1).expand(b, c, t, h, w)
    return clips.gather(2, idx)


def frame_drop(clips: torch.Tensor, *, drop: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lose each frame but the first with probability ``drop``; a lost frame repeats the last one received."""
    _check(clips, "frame_drop")
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"frame_drop: drop must be in [0, 1), got {drop}")
    b, _, t = clips.shape[:3]
    keep = torch.rand(b, t, generator=generator, device=generator.device if generator is not None else "cpu") >= drop
    keep[:, 0] = True
    positions = torch.arange(t, device=keep.device).expand(b, t)
    last_kept = torch.where(keep, positions, torch.zeros_like(positions)).cummax(dim=1).values
    return _gather_frames(clips, last_kept)


def temporal_jitter(clips: torch.Tensor, *, max_shift: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frame ``t`` shows frame ``t + s`` with ``s`` uniform in ``-max_shift..max_shift`` (clamped to the clip)."""
    _check(clips, "temporal_jitter")
    b, _, t = clips.shape[:3]
    shift = torch.randint(-max_shift, max_shift + 1, (b, t), generator=generator,
                          device=generator.device if generator is not None else "cpu")
    index = (torch.arange(t, device=shift.device) + shift).clamp(0, t - 1)
    return _gather_frames(clips, index)


def to_frames(clip: torch.Tensor) -> torch.Tensor:
    """One clip ``(C, T, H, W)`` in [0, 1] -> decoder-layout frames ``(T, H, W, C)`` uint8."""
    return (clip.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().contiguous()


def from_frames(frames: torch.Tensor) -> torch.Tensor:
    """Decoder-layout frames ``(T, H, W, C)`` uint8 -> one clip ``(C, T, H, W)`` float in [0, 1]."""
    return frames.permute(3, 0, 1, 2).float().div(255)


def h264_reencode(clips: torch.Tensor, *, crf: int = 40, fps: float = 8.0, preset: str = "medium",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode each clip as an H.264 ``.mp4`` at constant-rate factor ``crf`` (x264: 0 lossless,
    23 default, 51 worst) with PyAV, decode it again and return the decoded clips.

    Frames go through 8-bit quantisation and 4:2:0 chroma subsampling as well as the codec's
    block transform, so even a low ``crf`` changes some pixels. Width and height must be even.
    """
    _check(clips, "h264_reencode")
    from vidlab.data.encode import encode_video
    from vidlab.data.io import decode_all

    out = []
    with tempfile.TemporaryDirectory(prefix="vidlab-h264-") as tmp:
        path = Path(tmp) / "clip.mp4"
        for clip in clips:
            encode_video(to_frames(clip), path, fps, crf=crf, options={"preset": preset})
            frames, _ = decode_all(path, threads=False)
            if frames.shape[0] != clip.shape[1]:
                raise RuntimeError(f"h264_reencode: {clip.shape[1]} frames went in, {frames.shape[0]} came out of {path}")
            out.append(from_frames(frames))
    return torch.stack(out).to(clips.device)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "blur": gaussian_blur,
    "frame_drop": frame_drop,
    "temporal_jitter": temporal_jitter,
    "h264": h264_reencode,
}


def corrupt(clips: torch.Tensor, name: str, *, seed: int = 0, **kwargs: Any) -> torch.Tensor:
    """Apply corruption ``name`` (a key of :data:`CORRUPTIONS`) with its keyword arguments
    (``sigma=``, ``drop=``, ``max_shift=``, ``crf=``), seeded by ``seed``."""
    if name not in CORRUPTIONS:
        raise ValueError(f"corrupt: unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    g = torch.Generator().manual_seed(seed)
    return CORRUPTIONS[name](clips.cpu(), generator=g, **kwargs)
