"""Safe video decoding with PyAV: probe metadata, decode frames by timestamp, decode clips.

Frames come back as ``(T, H, W, C)`` uint8 RGB tensors. Times are seconds from the first
frame of the video stream (the first frame is at ``t = 0``, whatever the container's start
offset), and a time ``t`` selects the frame being displayed at ``t``: the last frame whose
presentation timestamp is ``<= t``. A video shows frames for ``t`` in ``[0, duration)``;
asking for ``t >= duration`` is an error, never padding.

Untrusted files are handled defensively:

* only local regular files (no URLs, ``proto:`` strings, directories, devices or FIFOs);
* the container is sniffed from its first bytes *before* FFmpeg sees the file, and the
  demuxer is chosen explicitly from ``ALLOWED_FORMATS``; FFmpeg never auto-probes, so a
  playlist / concat script / DASH manifest / SDP / image / raw stream renamed ``.mp4`` is
  refused and nothing it points to is ever opened (protocols are also restricted to
  ``file`` and MP4 external data references are disabled);
* ``width * height`` is capped (``max_pixels``) from the stream metadata before decoding,
  and again inside the decoder (FFmpeg's ``max_pixels``) in case the metadata lies;
* the decoder runs with ``err_detect=explode``: a damaged bitstream raises instead of
  being silently concealed; frames FFmpeg still flags as corrupt raise too;
* metadata that is not valid UTF-8 is decoded with replacement characters.

Every failure is a ``VideoDecodeError`` naming the file, the stage and the reason.
"""
from __future__ import annotations

import math
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

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

STAGES = frozenset({"open", "probe", "seek", "decode"})

# FFmpeg demuxers we are willing to run (``av.open(format=...)`` names; "mov" is FFmpeg's
# mov/mp4/m4a/3gp/3g2/mj2 demuxer and "matroska" also reads WebM, so both aliases appear).
ALLOWED_FORMATS: frozenset[str] = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts"})
# Short demuxer names passed to ``av.open(format=...)``, keyed by what the sniffer found.
_DEMUXER = {"mp4/mov": "mov", "matroska/webm": "matroska", "avi": "avi", "mpegts": "mpegts"}

DEFAULT_MAX_PIXELS: int = 4096 * 4096

# Two timestamps closer than this (seconds) are the same instant (float rounding of k / fps).
_TIME_EPS = 1e-6
_SNIFF_BYTES = 4096
_MP4_TOP_LEVEL_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class VideoDecodeError(Exception):
    """A video that cannot be opened, probed, seeked or decoded.

    ``path`` is the file, ``stage`` one of ``"open"``, ``"probe"``, ``"seek"``, ``"decode"``,
    and ``reason`` says what went wrong in words.
    """

    def __init__(self, path, stage: str, reason: str):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {sorted(STAGES)}, got {stage!r}")
        self.path = path
        self.stage = stage
        self.reason = reason
        super().__init__(f"{path}: {stage} failed: {reason}")

    def __reduce__(self):  # keep the three fields when sent across DataLoader workers
        return (type(self), (self.path, self.stage, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of the first video stream, read without decoding any frame.

    ``duration`` is in seconds (``num_frames`` frames shown over ``[0, duration)``),
    ``fps`` is the average frame rate, ``codec`` the FFmpeg codec name (``"h264"``, ...).
    """

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str


# ---------------------------------------------------------------------------- opening
def _describe_head(head: bytes) -> str:
    """Say what a file that is not an allowed container looks like, from its first bytes."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    lowered = stripped[:256].lower()
    if stripped.startswith(b"#EXTM3U") or stripped.startswith(b"#EXT"):
        return "an HLS playlist (#EXTM3U)"
    if lowered.startswith(b"ffconcat"):
        return "an FFmpeg concat script (ffconcat)"
    if b"<mpd" in lowered or (lowered.startswith(b"<?xml") and b"mpd" in lowered):
        return "a DASH manifest (MPD XML)"
    if lowered.startswith(b"<?xml") or lowered.startswith(b"<"):
        return "an XML/HTML document"
    if stripped.startswith(b"v=0"):
        return "an SDP session description"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF image"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "a WAV audio file"
    if head.startswith(b"\x00\x00\x00\x01") or head.startswith(b"\x00\x00\x01"):
        return "a raw video elementary stream (Annex-B start code, no container, no timestamps)"
    if head.startswith(b"OggS"):
        return "an Ogg file"
    if head.startswith(b"ID3") or head.startswith(b"fLaC"):
        return "an audio file"
    if head.startswith(b"FLV"):
        return "an FLV file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised bytes {head[:8].hex(' ')}"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "a text file"
    return f"unrecognised bytes {head[:8].hex(' ')}"


def _sniff_container(head: bytes) -> str | None:
    """Return the allowed container family the bytes start with, or None."""
    if len(head) >= 8 and head[4:8] in _MP4_TOP_LEVEL_BOXES:
        return "mp4/mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska/webm"
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    return None


def _check_local_file(path) -> tuple[str, int]:
    """Validate that ``path`` names a local regular file; return (absolute path, size)."""
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError as error:
        raise VideoDecodeError(path, "open", f"not a file path: {error}") from None
    if _URL_LIKE.match(name) and not (len(name) > 1 and name[1] == ":" and os.name == "nt"):
        scheme = name.split(":", 1)[0]
        raise VideoDecodeError(
            path,
            "open",
            f"looks like a URL or FFmpeg protocol ({scheme!r}:); only local files are accepted "
            f"(write ./{name} for a local file with a colon in its name)",
        )
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise VideoDecodeError(path, "open", "no such file") from None
    except (OSError, ValueError) as error:  # ValueError: embedded NUL byte
        raise VideoDecodeError(path, "open", f"cannot stat: {getattr(error, 'strerror', None) or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise VideoDecodeError(path, "open", "is a directory, not a video file")
    if not stat.S_ISREG(info.st_mode):
        raise VideoDecodeError(path, "open", "not a regular file (device, FIFO or socket)")
    if info.st_size == 0:
        raise VideoDecodeError(path, "open", "file is empty (0 bytes)")
    return os.path.abspath(name), info.st_size


def _mp4_top_level_boxes(abs_path: str, size: int) -> list[tuple[bytes, int, int]]:
    """Walk the top-level MP4 boxes (8/16-byte headers only): ``(type, offset, size)``."""
    boxes: list[tuple[bytes, int, int]] = []
    offset = 0
    with open(abs_path, "rb") as handle:
        while offset + 8 <= size and len(boxes) < 64:
            handle.seek(offset)
            header = handle.read(16)
            box_size = int.from_bytes(header[:4], "big")
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:  # box runs to the end of the file
                box_size = size - offset
            boxes.append((header[4:8], offset, box_size))
            if box_size < 8:
                break
            offset += box_size
    return boxes


def _open_failure_reason(error: Exception | None, family: str, abs_path: str, size: int) -> str:
    """FFmpeg's error (if any) plus, for MP4, what the top-level boxes say about the file."""
    reasons = [_ffmpeg_reason(error)] if error is not None else []
    if family == "mp4/mov":
        boxes = _mp4_top_level_boxes(abs_path, size)
        names = ", ".join(box.decode("latin-1") for box, _, _ in boxes)
        moov = [(offset, box_size) for box, offset, box_size in boxes if box == b"moov"]
        cut = [(box, offset, box_size) for box, offset, box_size in boxes if offset + box_size > size]
        if not moov:
            reasons.append(f"no 'moov' header atom (top-level boxes: {names}); the file is probably "
                           f"truncated before its header was written")
        elif cut:
            box, offset, box_size = cut[0]
            reasons.append(f"the '{box.decode('latin-1')}' atom at byte {offset} needs {box_size} bytes but "
                           f"the file ends after {size - offset}; the file is truncated")
    return "; ".join(reasons)


def _ffmpeg_reason(error: Exception) -> str:
    strerror = getattr(error, "strerror", None)
    return f"{type(error).__name__}: {strerror or error}"


@contextmanager
def open_video(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[av.container.InputContainer]:
    """Open a local video file safely and yield the PyAV input container; always closes it.

    The demuxer is chosen from the file's magic bytes (allow-list ``ALLOWED_FORMATS``);
    every video stream is checked against ``max_pixels`` and its decoder is configured to
    refuse larger frames and to raise on bitstream errors.
    Raises ``VideoDecodeError`` (stage ``"open"`` or ``"probe"``).
    """
    abs_path, size = _check_local_file(path)
    try:
        with open(abs_path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as error:
        raise VideoDecodeError(path, "open", f"cannot read: {error.strerror or error}") from None
    family = _sniff_container(head)
    if family is None:
        raise VideoDecodeError(
            path,
            "open",
            f"not an allowed video container: looks like {_describe_head(head)} "
            f"(allowed: {', '.join(sorted(_DEMUXER))})",
        )
    container_options = {"protocol_whitelist": "file"}
    if family == "mp4/mov":
        container_options["enable_drefs"] = "0"  # never follow external data references
    try:
        container = av.open(
            abs_path,
            mode="r",
            format=_DEMUXER[family],
            container_options=container_options,
            metadata_errors="replace",
        )
    except (av.error.FFmpegError, OSError, ValueError, UnicodeError) as error:
        raise VideoDecodeError(path, "open", _open_failure_reason(error, family, abs_path, size)) from None
    try:
        if container.format.name.split(",")[0] not in ALLOWED_FORMATS:
            raise VideoDecodeError(path, "open", f"demuxer {container.format.name!r} is not allowed")
        if not container.streams:
            reason = "the container holds no streams"
            if family == "mp4/mov":
                reason = _open_failure_reason(None, family, abs_path, size) or reason
            raise VideoDecodeError(path, "open", reason)
        for stream in container.streams.video:
            _check_pixels(path, stream, max_pixels)
            stream.codec_context.options = {"max_pixels": str(int(max_pixels)), "err_detect": "explode"}
        yield container
    finally:
        container.close()


def _check_pixels(path, stream, max_pixels: int) -> None:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise VideoDecodeError(
            path,
            "probe",
            f"frame size {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}",
        )


def _video_stream(container, path):
    if not container.streams.video:
        kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "none"
        raise VideoDecodeError(path, "probe", f"no video stream (streams: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
        raise VideoDecodeError(path, "probe", "the video stream has no frame size in its metadata")
    return stream


# ------------------------------------------------------------------------------ probe
def probe(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Read the first video stream's metadata without decoding any frame.

    When the container does not store a frame count (Matroska/WebM), the video packets are
    counted by demuxing only. An MP4 whose sample table points past the end of the file
    (truncated download) is refused. Raises ``VideoDecodeError`` (stage ``"open"``/``"probe"``).
    """
    abs_path, size = _check_local_file(path)
    with open_video(path, max_pixels=max_pixels) as container:
        stream = _video_stream(container, path)
        time_base = stream.time_base
        num_frames = int(stream.frames or 0)
        duration = float(stream.duration * time_base) if stream.duration and time_base else 0.0
        _check_not_truncated(path, stream, size, num_frames)
        if num_frames <= 0 or duration <= 0.0:
            num_frames, duration = _count_packets(container, stream, path)
        fps = _stream_rate(stream)
        if fps <= 0.0:
            fps = num_frames / duration if duration > 0 else 0.0
        if duration <= 0.0 and fps > 0.0:
            duration = num_frames / fps
        if num_frames <= 0 or fps <= 0.0:
            raise VideoDecodeError(path, "probe", f"no frames or no frame rate in the metadata "
                                                  f"(num_frames={num_frames}, fps={fps})")
        return VideoInfo(
            path=os.fspath(path),
            num_frames=num_frames,
            fps=fps,
            duration=duration,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
        )


def _stream_rate(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _check_not_truncated(path, stream, size: int, num_frames: int) -> None:
    """Refuse a file whose sample index (MP4 sample table, AVI/MKV index) points past its end."""
    entries = stream.index_entries
    missing = 0
    needed = 0
    for entry in entries:  # entries are only valid while the container is open
        end = entry.pos + entry.size
        if end > size:
            missing += 1
            needed = max(needed, end)
    if missing:
        total = max(num_frames, len(entries))
        raise VideoDecodeError(
            path,
            "probe",
            f"file is truncated: its index needs {needed} bytes but the file has {size}; "
            f"{missing} of {total} frames are missing",
        )


def _count_packets(container, stream, path) -> tuple[int, float]:
    """Count video packets and the stream's end time by demuxing only (no decoding)."""
    start = stream.start_time or 0
    count = 0
    end = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # flush packet
                continue
            count += 1
            if packet.pts is not None:
                packet_end = packet.pts + (packet.duration or 0)
                end = packet_end if end is None else max(end, packet_end)
    except av.error.FFmpegError as error:
        raise VideoDecodeError(path, "probe", f"cannot read packets: {_ffmpeg_reason(error)}") from None
    duration = float((end - start) * stream.time_base) if end is not None and stream.time_base else 0.0
    if duration <= 0.0 and container.duration:
        duration = container.duration / av.time_base
    return count, duration


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

    ``frame.to_ndarray(format="rgb24")`` builds a new conversion context per frame, which
    measured 3-5x slower at 112x112 with bit-identical output; swscale runs single-threaded
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
