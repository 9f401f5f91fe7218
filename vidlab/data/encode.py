"""Write frames to a video file with PyAV (FFmpeg), atomically and reproducibly.

``encode_video(frames, path, fps)`` takes decoder-layout frames ``(T, H, W, C)`` uint8 RGB and
writes e.g. an H.264 ``.mp4``. The file appears only once it is complete: it is written to a
temporary file in the same folder and moved into place with ``os.replace``.

Reproducibility. x264's macroblock-tree rate control (on in every preset but ``ultrafast``)
runs its ``mbtree_propagate`` kernels in float SIMD code chosen for the CPU at run time: the
AVX2, AVX-512 and SSE2 versions round differently, so the same frames gave a different
bitstream on every CPU feature level, and with AVX-512 even from one call to the next in one
process. x264's ``cpu-independent`` option makes it use its reference C kernels there, so
libx264 output here is single-threaded (``threads=1``) and ``cpu-independent``: the same
frames and settings give the same bytes, hence the same decoded frames, on any x86 CPU with
the same FFmpeg/x264 build (``tests/test_encode.py`` checks it across CPU feature levels by
masking x264's ``asm`` flags, and across forked worker processes). Other builds of x264 may
encode differently; no promise is made across them.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Mapping

import av
import numpy as np
import torch

from vidlab.utils import atomic_path

# Pixel format each encoder gets; codecs not listed use yuv420p.
_PIX_FMT = {"mjpeg": "yuvj420p", "png": "rgb24", "ffv1": "yuv444p", "libx264rgb": "rgb24"}
# Codecs whose quality is set with ``-crf``.
_CRF_CODECS = {"libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"}
# x264 settings that make its output independent of the CPU and of the run (see the module doc).
X264_REPRODUCIBLE = "threads=1:cpu-independent=1"


def _to_uint8_frames(frames: np.ndarray | torch.Tensor, path: Path) -> np.ndarray:
    """Validate and return ``frames`` as a C-contiguous ``(T, H, W, 3)`` uint8 numpy array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"encode_video({path}): frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"encode_video({path}): frames must have shape (T, H, W, 3) RGB, got {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"encode_video({path}): frames must be uint8 (0..255), got dtype {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError(f"encode_video({path}): frames is empty (T = 0)")
    return np.ascontiguousarray(frames)


def encode_video(
    frames: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 18,
    gop: int | None = None,
    options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> Path:
    """Encode ``frames`` ``(T, H, W, 3)`` uint8 RGB into the video file ``path``; returns ``path``.

    Args:
        frames: decoder-layout frames ``(T, H, W, C)`` with ``C == 3`` (RGB), uint8.
        path: output file; the container format follows its suffix (``.mp4``, ``.mkv``, ...).
        fps: frame rate (frame ``i`` is shown at ``i / fps`` seconds).
        codec: FFmpeg encoder name (``libx264``, ``libvpx-vp9``, ``mjpeg``, ...).
        crf: constant-rate-factor quality for x264/x265/VP9/AV1 (lower = better, larger files).
        gop: keyframe interval in frames (``None``: the encoder's default).
        options: extra encoder options, e.g. ``{"preset": "veryfast", "tune": "zerolatency"}``;
            an ``x264-params`` string is appended to the reproducibility settings.
        container_options: muxer options, e.g. ``{"movflags": "+faststart"}``.

    4:2:0 encoders (the default ``yuv420p`` for x264) need an even width and height; odd sizes
    raise ``ValueError``. With libx264 the output bytes depend only on the frames, the settings
    and the x264 build, not on the CPU or the run (see the module docstring).
    """
    path = Path(path)
    frames = _to_uint8_frames(frames, path)
    if not (isinstance(fps, (int, float, Fraction)) and fps > 0):
        raise ValueError(f"encode_video({path}): fps must be a positive number, got {fps!r}")
    num_frames, height, width, _ = frames.shape
    pix_fmt = _PIX_FMT.get(codec, "yuv420p")
    if pix_fmt.endswith("420p") and (height % 2 or width % 2):
        raise ValueError(
            f"encode_video({path}): {codec} with {pix_fmt} needs an even width and height, got "
            f"{width}x{height}; crop or pad the frames first"
        )
    if gop is not None and gop < 1:
        raise ValueError(f"encode_video({path}): gop must be >= 1 or None, got {gop}")
    rate = Fraction(fps).limit_denominator(1001)
    codec_options = {}
    if codec in _CRF_CODECS:
        codec_options["crf"] = str(int(crf))
    codec_options.update({str(k): str(v) for k, v in (options or {}).items()})
    if codec in ("libx264", "libx264rgb"):
        extra = codec_options.get("x264-params", "")
        codec_options["x264-params"] = X264_REPRODUCIBLE + (f":{extra}" if extra else "")

    # the generator publishes whole dataset folders atomically, so no per-file fsync
    with atomic_path(path, fsync=False) as tmp:
        with av.open(str(tmp), mode="w", options=dict(container_options or {})) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width = width
            stream.height = height
            stream.pix_fmt = pix_fmt
            stream.codec_context.thread_count = 1
            if gop is not None:
                stream.codec_context.gop_size = int(gop)
            stream.options = codec_options
            for index in range(num_frames):
                frame = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
                frame.pts = index
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
