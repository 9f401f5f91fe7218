"""Bad and hostile inputs: each gives a clear VideoDecodeError naming the file and the stage,
or is handled correctly (variable frame rate, non-UTF-8 metadata). All files are generated
offline by tests/badfiles.py.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

import badfiles
from vidlab.data import io
from vidlab.data.io import VideoDecodeError


def assert_refused(call, path, stage: str, *reason_parts: str) -> VideoDecodeError:
    with pytest.raises(VideoDecodeError) as caught:
        call()
    error = caught.value
    assert error.stage == stage, str(error)
    assert str(path) in str(error) and error.path == path
    for part in reason_parts:
        assert part.lower() in error.reason.lower(), str(error)
    return error


REASONS = {
    "empty": ("empty",),
    "truncated_moov_at_end": ("moov", "truncated"),
    "truncated_faststart": ("truncated", "15 of 30 frames"),
    "raw_h264": ("raw video elementary stream", "no container"),
    "audio_only": ("no video stream", "audio aac"),
    "huge": (f"{badfiles.HUGE_WIDTH}x{badfiles.HUGE_HEIGHT}", "exceeds max_pixels"),
    "png_as_mp4": ("PNG image",),
    "jpeg_as_mp4": ("JPEG image",),
    "hls_playlist": ("HLS playlist",),
    "ffconcat": ("concat script",),
    "dash_manifest": ("DASH manifest",),
    "sdp": ("SDP",),
}


@pytest.mark.parametrize("kind", sorted(badfiles.BAD_FILE_MAKERS))
def test_probe_refuses_bad_file_with_a_clear_error(kind, tmp_path):
    maker, stage = badfiles.BAD_FILE_MAKERS[kind]
    path = maker(tmp_path)
    assert_refused(lambda: io.probe(path), path, stage, *REASONS[kind])


@pytest.mark.parametrize("kind", sorted(set(badfiles.BAD_FILE_MAKERS) - {"truncated_faststart"}))
def test_decoding_refuses_bad_file_at_the_same_stage(kind, tmp_path):
    maker, stage = badfiles.BAD_FILE_MAKERS[kind]
    path = maker(tmp_path)
    assert_refused(lambda: io.decode_clip(path, 0.0, 2), path, stage, *REASONS[kind])
    assert_refused(lambda: io.decode_frames(path, [0.0]), path, stage)
    assert_refused(lambda: io.decode_all(path), path, stage)


def test_truncated_faststart_decodes_the_part_that_is_there(tmp_path):
    path = badfiles.make_truncated_faststart(tmp_path)
    kept = badfiles.TRUNCATED_FASTSTART_KEPT_FRAMES
    frames = io.decode_frames(path, [0.0, 5 / badfiles.FPS])
    assert [badfiles.read_frame_index(frame) for frame in frames] == [0, 5]
    assert_refused(lambda: io.decode_clip(path, 0.0, 30), path, "decode", "truncated")
    assert_refused(lambda: io.decode_frames(path, [(kept + 5) / badfiles.FPS]), path, "decode", "truncated")


@pytest.mark.parametrize("kind", ["hls_playlist", "ffconcat", "dash_manifest"])
def test_manifest_is_refused_before_ffmpeg_sees_it_and_its_target_is_never_opened(kind, tmp_path, monkeypatch):
    target = badfiles.make_h264_mp4(tmp_path, 10, name="pointed_to.mp4")
    maker, _ = badfiles.BAD_FILE_MAKERS[kind]
    manifest = maker(tmp_path, target=target)
    assert str(target.resolve()) in manifest.read_text()
    canary = _AccessCanary(target, control=badfiles.make_h264_mp4(tmp_path, 2, name="control.mp4"))
    recorder = badfiles.spy_av_open(monkeypatch)
    for call in (
        lambda: io.probe(manifest),
        lambda: io.decode_frames(manifest, [0.0]),
        lambda: io.decode_clip(manifest, 0.0, 4),
        lambda: io.decode_all(manifest),
    ):
        assert_refused(call, manifest, "open", "not an allowed video container")
        with pytest.raises(VideoDecodeError):
            with io.open_video(manifest):
                pass
    assert recorder.calls == []  # FFmpeg was never handed the manifest, so it opened nothing
    canary.assert_not_read()


class _AccessCanary:
    """Detect reads of ``path`` through its access time (kernel-level, so FFmpeg's reads count).

    The atime is set before the mtime; with ``strictatime``/``relatime`` mounts any read then
    updates it. A control file proves the mechanism works on this file system (else skip).
    """

    def __init__(self, path: Path, control: Path):
        self.path = path
        past = time.time() - 3600
        for file in (path, control):
            os.utime(file, (past - 3600, past))
        self.before = os.stat(path).st_atime_ns
        control_before = os.stat(control).st_atime_ns
        with open(control, "rb") as handle:
            handle.read()
        self.works = os.stat(control).st_atime_ns != control_before

    def assert_not_read(self) -> None:
        if not self.works:
            pytest.skip("this file system does not update access times (noatime)")
        assert os.stat(self.path).st_atime_ns == self.before, f"{self.path} was read"


def test_access_canary_sees_an_ffmpeg_read(tmp_path):
    """The canary above is able to fail: a direct FFmpeg read of the target trips it."""
    target = badfiles.make_h264_mp4(tmp_path, 10, name="pointed_to.mp4")
    canary = _AccessCanary(target, control=badfiles.make_h264_mp4(tmp_path, 2, name="control.mp4"))
    if not canary.works:
        pytest.skip("this file system does not update access times (noatime)")
    io.decode_all(target)
    with pytest.raises(AssertionError, match="was read"):
        canary.assert_not_read()


@pytest.mark.parametrize(
    "name",
    ["http://example.com/video.mp4", "concat:a.mp4|b.mp4", "file:video.mp4", "pipe:0", "subfile:,start,0,end,1,:x.mp4"],
)
def test_urls_and_protocols_are_refused(name, monkeypatch):
    recorder = badfiles.spy_av_open(monkeypatch)
    assert_refused(lambda: io.probe(name), name, "open", "only local files")
    assert recorder.calls == []


def test_directories_devices_fifos_and_missing_files_are_refused(tmp_path):
    assert_refused(lambda: io.probe(tmp_path), tmp_path, "open", "directory")
    assert_refused(lambda: io.probe("/dev/null"), "/dev/null", "open", "not a regular file")
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)  # opening a FIFO for reading would block: it must be refused from stat()
    assert_refused(lambda: io.decode_clip(fifo, 0.0, 2), fifo, "open", "not a regular file")
    missing = tmp_path / "missing.mp4"
    assert_refused(lambda: io.probe(missing), missing, "open", "no such file")


def test_text_saved_as_mp4_is_refused(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("just some notes, not a video\n")
    assert_refused(lambda: io.probe(path), path, "open", "text file")


def test_huge_frame_is_refused_before_anything_is_decoded(tmp_path, monkeypatch):
    path = badfiles.make_huge(tmp_path)
    recorder = badfiles.spy_av_open(monkeypatch)
    assert_refused(lambda: io.decode_frames(path, [0.0]), path, "probe", "exceeds max_pixels")
    assert "decode" not in recorder.attributes and recorder.decoded_frames == 0
    with io.open_video(path, max_pixels=badfiles.HUGE_WIDTH * badfiles.HUGE_HEIGHT) as container:
        assert container.streams.video[0].codec_context.width == badfiles.HUGE_WIDTH


def test_corrupted_bitstream_raises_instead_of_concealing(tmp_path):
    path = badfiles.make_corrupted_bitstream(tmp_path)
    first_bad = badfiles.CORRUPT_FRAMES[0]
    error = assert_refused(lambda: io.decode_all(path), path, "decode", "bitstream error")
    assert "InvalidDataError" in error.reason
    assert_refused(lambda: io.decode_clip(path, 0.0, 30), path, "decode")
    # frames before the damage decode fine and exactly
    clip = io.decode_clip(path, 0.0, first_bad - 2)
    assert [badfiles.read_frame_index(frame) for frame in clip] == list(range(first_bad - 2))


def test_ffmpeg_default_would_conceal_the_corruption(tmp_path):
    """Why io uses err_detect=explode: with FFmpeg's defaults all 40 frames come back, the
    damaged ones silently concealed (their pixels differ from what was encoded)."""
    path = badfiles.make_corrupted_bitstream(tmp_path)
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == badfiles.CORRUPTED_NUM_FRAMES
    error = [int(np.abs(frame.astype(int) - badfiles.frame_index_pattern(i)).max()) for i, frame in enumerate(frames)]
    clean = [i for i in range(len(frames)) if i < badfiles.CORRUPT_FRAMES[0]]
    assert max(error[i] for i in clean) < 32
    assert max(error[i] for i in badfiles.CORRUPT_FRAMES) > 128


def test_too_short_video_is_an_error_never_padded(tmp_path):
    path = badfiles.make_short(tmp_path)
    n = badfiles.SHORT_NUM_FRAMES
    end = n / badfiles.FPS
    assert io.probe(path).num_frames == n
    assert [badfiles.read_frame_index(f) for f in io.decode_clip(path, 0.0, n)] == list(range(n))
    assert_refused(lambda: io.decode_clip(path, 0.0, n + 1), path, "decode", f"clip needs {n + 1} frames",
                   f"only {n} frames remain", f"{end:.4f}s")
    assert_refused(lambda: io.decode_clip(path, 0.0, 3, stride=2), path, "decode", "stride 2")
    assert_refused(lambda: io.decode_clip(path, 0.0, n + 1, fps=badfiles.FPS), path, "decode",
                   f"ends at {end:.4f}s")
    # t = end is the first instant no frame is shown: an error, not a repeat of the last frame
    assert_refused(lambda: io.decode_frames(path, [0.0, end]), path, "decode", f"t={end:.4f}s")
    last = io.decode_frames(path, [end - 0.5 / badfiles.FPS])
    assert badfiles.read_frame_index(last[0]) == n - 1


def test_variable_frame_rate_is_decoded_by_timestamp(tmp_path):
    path = badfiles.make_vfr(tmp_path)
    pts = np.asarray(badfiles.VFR_PTS_MS) / 1000.0
    frames, decoded_pts = io.decode_all(path)
    np.testing.assert_allclose(decoded_pts, pts, atol=1e-6)
    assert [badfiles.read_frame_index(f) for f in frames] == list(range(len(pts)))

    def picked(times):
        return [badfiles.read_frame_index(f) for f in io.decode_frames(path, times)]

    assert picked(pts) == list(range(len(pts)))
    # t = 0.1 .. 0.6 s at 10 fps: frames shown then, chosen by pts (0, 40, 50, 60, 260 ... ms)
    assert picked([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == [0, 3, 3, 6, 6, 8, 8]
    # index * (1 / average fps) would pick frames 0..6 here: check we did not do that
    info = io.probe(path)
    naive = [int(round(t * info.fps)) for t in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]
    assert naive != [0, 3, 3, 6, 6, 8, 8]
    assert [badfiles.read_frame_index(f) for f in io.decode_clip(path, 0.1, 3)] == [4, 5, 6]
    assert [badfiles.read_frame_index(f) for f in io.decode_clip(path, 0.0, 4, fps=5.0)] == [0, 3, 6, 8]
    assert picked([0.75]) == [len(pts) - 1]  # last frame (0.72 s) is shown until 0.76 s
    assert_refused(lambda: io.decode_frames(path, [0.8]), path, "decode", "ends at 0.7600s")
    assert info.num_frames == len(pts) and info.duration == pytest.approx(0.76)


def test_non_utf8_metadata_does_not_crash(tmp_path):
    path = badfiles.make_non_utf8_metadata(tmp_path)
    with pytest.raises(UnicodeDecodeError):  # the file really holds invalid UTF-8
        av.open(str(path)).close()
    info = io.probe(path)
    assert info.num_frames == 5
    with io.open_video(path) as container:
        title = container.metadata["title"]
    assert title.startswith("caf") and "\ufffd" in title
    assert io.decode_all(path)[0].shape[0] == 5
