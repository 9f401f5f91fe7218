"""Opening untrusted video files safely with PyAV, and reading their metadata (:func:`probe`).

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

import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import av

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "VideoDecodeError",
    "VideoInfo",
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
