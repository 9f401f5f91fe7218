"""Generate good and bad video files offline (PyAV and raw bytes) for the tests.

Every ``make_<kind>(dirpath) -> Path`` writes one small file into ``dirpath`` and returns its
path. Frames are 64x48 unless a maker says otherwise. Each frame carries its own index as a
16-bit pattern of black/white blocks (``frame_index_pattern``), which survives lossy
compression, so a test can tell exactly which frame the decoder returned
(``read_frame_index``).

``BAD_FILE_MAKERS`` maps every bad kind that must be refused by ``probe`` / ``open_video``
to ``(maker, expected VideoDecodeError.stage)``; dataset-level tests can iterate over it.
Files that open fine but fail later (``make_short``, ``make_corrupted_bitstream``,
``make_truncated_faststart``) are described next to their makers.
"""
from __future__ import annotations

import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Callable, Mapping, Sequence

import av
import numpy as np

FRAME_WIDTH = 64
FRAME_HEIGHT = 48
FPS = 25
INDEX_BITS = 16  # frame_index_pattern encodes indices 0 .. 2**16 - 1

# Presentation times (milliseconds, time base 1/1000) of the frames in make_vfr: gaps of
# 10 ms to 200 ms, so picking frames by index * (1 / average fps) gives the wrong frames.
VFR_PTS_MS: tuple[int, ...] = (0, 40, 50, 60, 260, 270, 280, 480, 500, 700, 710, 720)

# Frames whose H.264 slice data make_corrupted_bitstream overwrites with random bytes.
CORRUPT_FRAMES: tuple[int, ...] = (20, 21, 22)
CORRUPTED_NUM_FRAMES = 40

TRUNCATED_FASTSTART_KEPT_FRAMES = 15  # make_truncated_faststart keeps frames 0..14 whole
SHORT_NUM_FRAMES = 4  # make_short: fewer frames than any realistic clip
HUGE_WIDTH, HUGE_HEIGHT = 8192, 2056  # 16.8 M pixels > 4096 * 4096


def frame_index_pattern(index: int, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH) -> np.ndarray:
    """An RGB frame (H, W, 3) uint8 whose 2x8 grid of black/white blocks spells ``index``.

    Bit ``b`` of ``index`` is block row ``b // 8``, block column ``b % 8`` (white = 1).
    """
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index={index} does not fit in {INDEX_BITS} bits")
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for bit in range(INDEX_BITS):
        row, col = divmod(bit, 8)
        if (index >> bit) & 1:
            image[row * height // 2 : (row + 1) * height // 2, col * width // 8 : (col + 1) * width // 8] = 255
    return image


def read_frame_index(frame) -> int:
    """Recover the index written by ``frame_index_pattern`` from a decoded (H, W, C) frame.

    Accepts a numpy array or a torch tensor; each block is thresholded at mid-grey.
    """
    image = np.asarray(frame, dtype=np.float32)
    height, width = image.shape[:2]
    index = 0
    for bit in range(INDEX_BITS):
        row, col = divmod(bit, 8)
        block = image[row * height // 2 : (row + 1) * height // 2, col * width // 8 : (col + 1) * width // 8]
        if block.mean() > 127.5:
            index |= 1 << bit
    return index


def write_video(
    path: Path,
    num_frames: int,
    *,
    codec: str = "libx264",
    fps: int = FPS,
    width: int = FRAME_WIDTH,
    height: int = FRAME_HEIGHT,
    container_format: str | None = None,
    codec_options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    metadata: Mapping[str, str] | None = None,
    metadata_encoding: str = "utf-8",
    blank: bool = False,
) -> Path:
    """Encode ``num_frames`` index-pattern frames (or black ones if ``blank``) to ``path``.

    ``pts`` (in units of ``time_base``) gives explicit, possibly non-uniform timestamps;
    otherwise frames are ``1 / fps`` apart. Returns ``path``.
    """
    path = Path(path)
    if pts is not None and len(pts) != num_frames:
        raise ValueError(f"pts has {len(pts)} entries for num_frames={num_frames}")
    if codec_options is None:
        codec_options = _default_codec_options(codec)
    with av.open(
        str(path),
        "w",
        format=container_format,
        options=dict(container_options or {}),
        metadata_encoding=metadata_encoding,
    ) as container:
        for key, value in (metadata or {}).items():
            container.metadata[key] = value
        stream = container.add_stream(codec, rate=fps, options=dict(codec_options))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        black = np.zeros((height, width, 3), dtype=np.uint8)
        for index in range(num_frames):
            image = black if blank else frame_index_pattern(index, height, width)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts = int(pts[index])
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _default_codec_options(codec: str) -> dict[str, str]:
    if codec == "libx264":
        # B-frames on (preset "fast"), so tests exercise display-order reordering.
        return {"preset": "fast", "crf": "12"}
    if codec == "libvpx-vp9":
        return {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    if codec == "mjpeg":
        return {"q": "2"}
    return {}


# ----------------------------------------------------------------------------- good files
def make_h264_mp4(dirpath: Path, num_frames: int = 30, name: str = "h264.mp4") -> Path:
    """H.264 (with B-frames) in MP4, 25 fps, 64x48."""
    return write_video(Path(dirpath) / name, num_frames)


def make_vp9_webm(dirpath: Path, num_frames: int = 30) -> Path:
    """VP9 in WebM, 25 fps, 64x48."""
    return write_video(Path(dirpath) / "vp9.webm", num_frames, codec="libvpx-vp9", container_format="webm")


def make_mjpeg_avi(dirpath: Path, num_frames: int = 30) -> Path:
    """MJPEG in AVI, 25 fps, 64x48."""
    return write_video(Path(dirpath) / "mjpeg.avi", num_frames, codec="mjpeg", container_format="avi")


LONG_GOP_NUM_FRAMES = 150
LONG_GOP_SIZE = 50


def make_long_gop_mp4(dirpath: Path, num_frames: int = LONG_GOP_NUM_FRAMES) -> Path:
    """H.264 MP4 with a keyframe exactly every ``LONG_GOP_SIZE`` frames (no scene-cut keys)."""
    options = {
        "preset": "fast",
        "crf": "12",
        "x264-params": f"keyint={LONG_GOP_SIZE}:min-keyint={LONG_GOP_SIZE}:scenecut=0",
    }
    return write_video(Path(dirpath) / "long_gop.mp4", num_frames, codec_options=options)


def make_short(dirpath: Path, num_frames: int = SHORT_NUM_FRAMES) -> Path:
    """A valid H.264 MP4 with only ``SHORT_NUM_FRAMES`` frames: fewer than a clip needs.

    ``probe`` works; asking for a longer clip raises VideoDecodeError(stage="decode").
    """
    return write_video(Path(dirpath) / "short.mp4", num_frames)


def make_vfr(dirpath: Path) -> Path:
    """H.264 MP4 with variable frame rate: frame i is shown at ``VFR_PTS_MS[i]`` ms."""
    return write_video(
        Path(dirpath) / "vfr.mp4",
        len(VFR_PTS_MS),
        pts=VFR_PTS_MS,
        time_base=Fraction(1, 1000),
        codec_options={"preset": "ultrafast", "crf": "12"},
    )


def make_non_utf8_metadata(dirpath: Path) -> Path:
    """An MP4 whose title is latin-1 bytes ("café ÿ" as E9/FF), invalid as UTF-8."""
    return write_video(
        Path(dirpath) / "latin1_title.mp4",
        5,
        metadata={"title": "caf\u00e9 \u00ff"},
        metadata_encoding="latin-1",
    )


# ------------------------------------------------------------------------------ bad files
def make_empty(dirpath: Path) -> Path:
    """A zero-byte ``.mp4``."""
    path = Path(dirpath) / "empty.mp4"
    path.write_bytes(b"")
    return path


def make_truncated_moov_at_end(dirpath: Path) -> Path:
    """A regular (moov-at-end) MP4 cut in the middle of mdat: the moov header atom is gone,
    so nothing is playable (what an interrupted download or recording leaves)."""
    full = make_h264_mp4(dirpath, 30, name="_full_moov_at_end.mp4")
    data = full.read_bytes()
    full.unlink()
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    if not 0 <= mdat < moov:
        raise RuntimeError("expected the muxer to write moov after mdat")
    path = Path(dirpath) / "truncated_no_moov.mp4"
    path.write_bytes(data[: (mdat + moov) // 2])
    return path


def make_truncated_faststart(dirpath: Path) -> Path:
    """A faststart (moov-first) MP4 of 30 frames cut in the middle of mdat, inside frame 15.

    The header is intact, so FFmpeg opens it and reports 30 frames, but frames 15..29 are
    missing from the file. ``probe`` detects it from the sample index (stage "probe");
    decoding the first 15 frames still works.
    """
    full = write_video(
        Path(dirpath) / "_full_faststart.mp4", 30, container_options={"movflags": "faststart"}
    )
    with av.open(str(full)) as container:
        samples = [(entry.pos, entry.size) for entry in container.streams.video[0].index_entries]
    data = full.read_bytes()
    full.unlink()
    if not 0 <= data.find(b"moov") < data.find(b"mdat"):
        raise RuntimeError("expected the muxer to write moov before mdat (faststart)")
    position, size = samples[TRUNCATED_FASTSTART_KEPT_FRAMES]
    path = Path(dirpath) / "truncated_faststart.mp4"
    path.write_bytes(data[: position + size // 2])
    return path


def make_corrupted_bitstream(dirpath: Path) -> Path:
    """H.264 MP4 (``CORRUPTED_NUM_FRAMES`` frames, no B-frames, keyframe every 10) with the
    second half of the slice data of frames ``CORRUPT_FRAMES`` replaced by random bytes.

    The container and every NAL header stay valid, so demuxing works and FFmpeg's default
    decoder would conceal the damage; decoding through ``CORRUPT_FRAMES`` must raise.
    """
    full = write_video(
        Path(dirpath) / "_clean.mp4",
        CORRUPTED_NUM_FRAMES,
        # keyframe every 10 frames so frame 20 is a large IDR picture that frames 21.. predict from
        codec_options={"preset": "ultrafast", "crf": "12", "x264-params": "keyint=10:min-keyint=10:scenecut=0"},
    )
    with av.open(str(full)) as container:
        # Copy the entries while the container is open (PyAV frees them on close).
        samples = [(entry.pos, entry.size) for entry in container.streams.video[0].index_entries]
    data = bytearray(full.read_bytes())
    full.unlink()
    rng = np.random.default_rng(0)
    for frame_index in CORRUPT_FRAMES:
        start, size = samples[frame_index]
        offset = start
        while offset < start + size:  # walk the 4-byte length-prefixed NAL units
            nal_size = int.from_bytes(data[offset : offset + 4], "big")
            nal_type = data[offset + 4] & 0x1F
            if nal_type in (1, 5) and nal_size > 24:  # coded slice: keep the slice header
                half = nal_size // 2
                data[offset + 4 + half : offset + 4 + nal_size] = rng.integers(
                    0, 256, nal_size - half, dtype=np.uint8
                ).tobytes()
            offset += 4 + nal_size
    path = Path(dirpath) / "corrupted_bitstream.mp4"
    path.write_bytes(bytes(data))
    return path


def make_raw_h264(dirpath: Path) -> Path:
    """A raw H.264 Annex-B elementary stream (no container, no timestamps) named ``.mp4``."""
    raw = write_video(Path(dirpath) / "_raw.h264", 10, container_format="h264")
    path = Path(dirpath) / "raw_h264.mp4"
    raw.replace(path)
    return path


def make_audio_only(dirpath: Path) -> Path:
    """An MP4 holding one AAC audio stream and no video stream (0.5 s of a 440 Hz tone)."""
    path = Path(dirpath) / "audio_only.mp4"
    sample_rate = 16000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(sample_rate // 2) / sample_rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


_HUGE_CACHE: list[Path] = []  # encoding 17 M pixels takes ~1 s: do it once per process


def make_huge(dirpath: Path) -> Path:
    """A real one-frame MJPEG AVI of ``HUGE_WIDTH`` x ``HUGE_HEIGHT`` (> 4096 * 4096 pixels)."""
    if not _HUGE_CACHE or not _HUGE_CACHE[0].exists():
        cache_dir = Path(tempfile.mkdtemp(prefix="vidlab_badfiles_"))
        _HUGE_CACHE[:] = [
            write_video(
                cache_dir / "huge.avi",
                1,
                codec="mjpeg",
                container_format="avi",
                width=HUGE_WIDTH,
                height=HUGE_HEIGHT,
                codec_options={"q": "31"},
                blank=True,
            )
        ]
    return copy_to(_HUGE_CACHE[0], dirpath, "huge.avi")


def make_png_as_mp4(dirpath: Path) -> Path:
    """A PNG image renamed ``.mp4``."""
    path = Path(dirpath) / "image_png.mp4"
    av.VideoFrame.from_ndarray(frame_index_pattern(1), format="rgb24").to_image().save(path, format="PNG")
    return path


def make_jpeg_as_mp4(dirpath: Path) -> Path:
    """A JPEG image renamed ``.mp4``."""
    path = Path(dirpath) / "image_jpeg.mp4"
    av.VideoFrame.from_ndarray(frame_index_pattern(1), format="rgb24").to_image().save(path, format="JPEG")
    return path


def _target(dirpath: Path, target: Path | None) -> Path:
    return Path(target) if target is not None else make_h264_mp4(dirpath, 10, name="pointed_to.mp4")


def make_hls_playlist(dirpath: Path, target: Path | None = None) -> Path:
    """An HLS playlist (#EXTM3U) saved as ``.mp4`` that lists ``target`` (default: a real
    video ``pointed_to.mp4`` written beside it) as its only segment."""
    target = _target(dirpath, target)
    path = Path(dirpath) / "hls_playlist.mp4"
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:1.0,\n{target.resolve()}\n#EXT-X-ENDLIST\n"
    )
    return path


def make_ffconcat(dirpath: Path, target: Path | None = None) -> Path:
    """An FFmpeg concat script (``ffconcat version 1.0``) saved as ``.mp4`` naming ``target``."""
    target = _target(dirpath, target)
    path = Path(dirpath) / "ffconcat.mp4"
    path.write_text(f"ffconcat version 1.0\nfile '{target.resolve()}'\nfile '{target.resolve()}'\n")
    return path


def make_dash_manifest(dirpath: Path, target: Path | None = None) -> Path:
    """A DASH MPD (XML) saved as ``.mp4`` whose BaseURL is ``target``."""
    target = _target(dirpath, target)
    path = Path(dirpath) / "dash_manifest.mp4"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT0.4S"'
        ' profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        f"  <Period><AdaptationSet mimeType=\"video/mp4\"><Representation id=\"0\" bandwidth=\"1000\">\n"
        f"    <BaseURL>file://{target.resolve()}</BaseURL>\n"
        "  </Representation></AdaptationSet></Period>\n</MPD>\n"
    )
    return path


def make_sdp(dirpath: Path, target: Path | None = None) -> Path:
    """An SDP session description saved as ``.mp4`` (would make FFmpeg listen on RTP)."""
    del target  # an SDP names network endpoints, not files
    path = Path(dirpath) / "session_sdp.mp4"
    path.write_text("v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n"
                    "a=rtpmap:96 H264/90000\n")
    return path


# kind -> (maker, stage of the VideoDecodeError that probe()/open_video() must raise)
BAD_FILE_MAKERS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (make_empty, "open"),
    "truncated_moov_at_end": (make_truncated_moov_at_end, "open"),
    "truncated_faststart": (make_truncated_faststart, "probe"),
    "raw_h264": (make_raw_h264, "open"),
    "audio_only": (make_audio_only, "probe"),
    "huge": (make_huge, "probe"),
    "png_as_mp4": (make_png_as_mp4, "open"),
    "jpeg_as_mp4": (make_jpeg_as_mp4, "open"),
    "hls_playlist": (make_hls_playlist, "open"),
    "ffconcat": (make_ffconcat, "open"),
    "dash_manifest": (make_dash_manifest, "open"),
    "sdp": (make_sdp, "open"),
}


def copy_to(path: Path, dirpath: Path, name: str) -> Path:
    """Copy ``path`` to ``dirpath / name`` (e.g. to give a good video a misleading name)."""
    destination = Path(dirpath) / name
    shutil.copyfile(path, destination)
    return destination


# ----------------------------------------------------------------------- spying on PyAV
class AvOpenRecorder:
    """Stand-in for ``av.open`` that records every call and what is done with the containers.

    ``calls``: the file argument of each ``av.open`` call; ``attributes``: every container
    attribute used (so a test can assert ``"decode" not in recorder.attributes``);
    ``decoded_frames``: frames yielded by ``container.decode``.
    """

    def __init__(self, real_open: Callable):
        self._real_open = real_open
        self.calls: list[str] = []
        self.attributes: set[str] = set()
        self.decoded_frames = 0

    def __call__(self, file, *args, **kwargs):
        self.calls.append(str(file))
        return _ContainerSpy(self._real_open(file, *args, **kwargs), self)


class _ContainerSpy:
    def __init__(self, container, recorder: AvOpenRecorder):
        self._container = container
        self._recorder = recorder

    def __getattr__(self, name: str):
        self._recorder.attributes.add(name)
        value = getattr(self._container, name)
        if name == "decode":
            def counting_decode(*args, **kwargs):
                for frame in value(*args, **kwargs):
                    self._recorder.decoded_frames += 1
                    yield frame
            return counting_decode
        return value

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._container.close()


def spy_av_open(monkeypatch) -> AvOpenRecorder:
    """Replace ``av.open`` (for the duration of a pytest test) with an ``AvOpenRecorder``."""
    recorder = AvOpenRecorder(av.open)
    monkeypatch.setattr(av, "open", recorder)
    return recorder
