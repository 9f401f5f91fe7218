"""Re-encoding one video to a clean H.264 mp4: even sizes, an optional short side, a constant
frame rate (frames repeated or dropped by presentation time), no audio."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av

from vidlab.data.container import VideoDecodeError, open_video, probe
from vidlab.data.encode import X264_REPRODUCIBLE
from vidlab.utils import atomic_path

__all__ = ["reencode_video"]


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Even output size; scaled so the short side is ``short_side`` when given."""
    if short_side is not None:
        scale = short_side / min(width, height)
        width, height = width * scale, height * scale
    return max(2, int(round(width / 2)) * 2), max(2, int(round(height / 2)) * 2)


def reencode_video(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    short_side: int | None = None,
    fps: float | None = None,
    crf: int = 18,
    preset: str = "veryfast",
) -> Path:
    """Re-encode ``src`` to an H.264 mp4 (yuv420p, even sizes, constant frame rate).

    ``short_side`` resizes so the shorter side has that many pixels (aspect kept, both
    sides rounded to even); ``fps`` resamples to that rate by repeating/dropping frames
    (``None`` keeps the source's average rate). Audio is dropped. The output is written
    to a temporary file beside ``dest`` (``utils.atomic_path``) and moved into place, so ``dest``
    is never half-written and concurrent runs never share a temporary name. libx264 runs with
    the same reproducibility settings as :func:`~vidlab.data.encode.encode_video`.
    """
    src, dest = Path(src), Path(dest)
    if short_side is not None and short_side < 2:
        raise ValueError(f"short_side must be >= 2, got {short_side}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    info = probe(src)
    in_fps = info.fps if info.fps and info.fps > 0 else (fps or 25.0)
    out_rate = Fraction(fps if fps is not None else in_fps).limit_denominator(1001)
    step = 1.0 / float(out_rate)
    # Guard against broken timestamps producing an endless run of duplicated frames.
    max_frames = int(((info.duration or 0.0) + 2.0) * float(out_rate) * 2) + int(info.num_frames or 0) + 16

    written = 0
    with atomic_path(dest) as tmp:
        with open_video(src) as container, av.open(str(tmp), "w", format="mp4") as output:
            stream = container.streams.video[0]
            out_stream = None
            previous, previous_t, t0 = None, 0.0, None

            def emit(frame) -> None:
                nonlocal written, out_stream
                if out_stream is None:
                    width, height = _target_size(frame.width, frame.height, short_side)
                    out_stream = output.add_stream("libx264", rate=out_rate)
                    out_stream.width, out_stream.height = width, height
                    out_stream.pix_fmt = "yuv420p"
                    out_stream.codec_context.thread_count = 1  # parallelism comes from the worker processes
                    out_stream.options = {"crf": str(crf), "preset": preset, "x264-params": X264_REPRODUCIBLE}
                if written >= max_frames:
                    raise VideoDecodeError(src, "decode", f"timestamps run past {max_frames} output frames")
                out = frame.reformat(
                    width=out_stream.width, height=out_stream.height, format="yuv420p", interpolation="AREA"
                )
                out.pts = written
                out.time_base = 1 / out_rate
                for packet in out_stream.encode(out):
                    output.mux(packet)
                written += 1

            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index / in_fps
                if t0 is None:
                    t0 = t
                t -= t0
                if previous is not None:
                    # Each output slot k (time k*step) shows the latest frame shown by then.
                    while written * step < t - 1e-9:
                        emit(previous)
                previous, previous_t = frame, max(t, previous_t)
            if previous is None:
                raise VideoDecodeError(src, "decode", "no video frame could be decoded")
            end = previous_t + 1.0 / in_fps
            while written * step < end - 1e-9 or written == 0:
                emit(previous)
            for packet in out_stream.encode(None):
                output.mux(packet)
    return dest
