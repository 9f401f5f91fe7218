"""Normal-path tests of vidlab.data.io: probe, decode_frames, decode_clip, decode_all.

Every frame written by tests/badfiles.py carries its index as a block pattern, so these
tests check exactly which frame came back, not just shapes.
"""
from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import badfiles
from vidlab.data import io
from vidlab.data.io import VideoDecodeError

NUM_FRAMES = 30
FPS = badfiles.FPS


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("videos")
    return {
        "h264_mp4": badfiles.make_h264_mp4(directory, NUM_FRAMES),
        "vp9_webm": badfiles.make_vp9_webm(directory, NUM_FRAMES),
        "mjpeg_avi": badfiles.make_mjpeg_avi(directory, NUM_FRAMES),
        "h264_mpegts": badfiles.write_video(directory / "h264.ts", NUM_FRAMES, container_format="mpegts"),
        "long_gop": badfiles.make_long_gop_mp4(directory),
    }


def indices(frames: torch.Tensor) -> list[int]:
    return [badfiles.read_frame_index(frame) for frame in frames]


FORMATS = ["h264_mp4", "vp9_webm", "mjpeg_avi", "h264_mpegts"]
EXPECTED_CODEC = {"h264_mp4": "h264", "vp9_webm": "vp9", "mjpeg_avi": "mjpeg", "h264_mpegts": "h264"}


@pytest.mark.parametrize("kind", FORMATS)
def test_probe_reads_metadata(videos, kind):
    info = io.probe(videos[kind])
    assert info == io.VideoInfo(
        path=str(videos[kind]),
        num_frames=NUM_FRAMES,
        fps=pytest.approx(FPS),
        duration=pytest.approx(NUM_FRAMES / FPS),
        width=badfiles.FRAME_WIDTH,
        height=badfiles.FRAME_HEIGHT,
        codec=EXPECTED_CODEC[kind],
    )


@pytest.mark.parametrize("kind", ["h264_mp4", "vp9_webm"])
def test_probe_decodes_nothing(videos, kind, monkeypatch):
    recorder = badfiles.spy_av_open(monkeypatch)
    io.probe(videos[kind])
    assert recorder.calls == [str(videos[kind].resolve())]
    assert "decode" not in recorder.attributes
    assert recorder.decoded_frames == 0


def test_probe_does_not_touch_a_corrupted_bitstream(tmp_path):
    # Decoding frames 20..22 raises (see test_bad_inputs); probe must not get that far.
    path = badfiles.make_corrupted_bitstream(tmp_path)
    assert io.probe(path).num_frames == badfiles.CORRUPTED_NUM_FRAMES


@pytest.mark.parametrize("kind", FORMATS)
def test_decode_frames_returns_exact_frames_in_request_order(videos, kind):
    wanted = [17, 3, 3, 29, 0, 12, 17, 28]
    frames = io.decode_frames(videos[kind], [index / FPS for index in wanted])
    assert frames.shape == (len(wanted), badfiles.FRAME_HEIGHT, badfiles.FRAME_WIDTH, 3)
    assert frames.dtype == torch.uint8
    assert indices(frames) == wanted


def test_decode_frames_picks_the_frame_on_display(videos):
    path = videos["h264_mp4"]
    # Between two frames -> the earlier one; before the first frame -> the first frame;
    # inside the display interval of the last frame -> the last frame.
    times = [(5 + 0.5) / FPS, (5 + 0.999) / FPS, -3.0, 0.0, (NUM_FRAMES - 0.01) / FPS]
    assert indices(io.decode_frames(path, times)) == [5, 5, 0, 0, NUM_FRAMES - 1]


def test_decode_frames_without_threads_matches(videos):
    path = videos["h264_mp4"]
    times = [0.1, 0.5, 0.9]
    assert torch.equal(io.decode_frames(path, times, threads=False), io.decode_frames(path, times))


@pytest.mark.parametrize("kind", FORMATS)
def test_decode_all_round_trips_through_decode_frames(videos, kind):
    frames, pts = io.decode_all(videos[kind])
    assert frames.shape == (NUM_FRAMES, badfiles.FRAME_HEIGHT, badfiles.FRAME_WIDTH, 3)
    assert frames.dtype == torch.uint8
    assert indices(frames) == list(range(NUM_FRAMES))
    np.testing.assert_allclose(pts, np.arange(NUM_FRAMES) / FPS, atol=1e-6)
    again = io.decode_frames(videos[kind], pts[::-1])
    assert torch.equal(again, frames.flip(0))


def test_decode_all_max_frames(videos):
    frames, pts = io.decode_all(videos["h264_mp4"], max_frames=7)
    assert indices(frames) == list(range(7))
    assert pts.shape == (7,)


def test_decode_clip_native_frames_and_stride(videos):
    path = videos["h264_mp4"]
    assert indices(io.decode_clip(path, 5 / FPS, 8)) == list(range(5, 13))
    # start between frames 5 and 6 -> the first frame with pts >= start is 6
    assert indices(io.decode_clip(path, 5.4 / FPS, 4)) == [6, 7, 8, 9]
    assert indices(io.decode_clip(path, 0.0, 5, stride=3)) == [0, 3, 6, 9, 12]
    clip = io.decode_clip(path, 0.0, 4)
    assert clip.shape == (4, badfiles.FRAME_HEIGHT, badfiles.FRAME_WIDTH, 3) and clip.dtype == torch.uint8


def test_decode_clip_resamples_at_the_requested_fps(videos):
    path = videos["h264_mp4"]
    assert indices(io.decode_clip(path, 0.0, 6, fps=FPS / 2)) == [0, 2, 4, 6, 8, 10]
    assert indices(io.decode_clip(path, 0.2, 6, fps=FPS * 2)) == [5, 5, 6, 6, 7, 7]
    assert indices(io.decode_clip(path, 0.0, 4, fps=FPS, stride=3)) == [0, 3, 6, 9]
    assert indices(io.decode_clip(path, 0.0, 5, fps=10.0)) == [0, 2, 5, 7, 10]


def test_seek_into_the_middle_of_a_long_gop(videos, monkeypatch):
    path = videos["long_gop"]
    recorder = badfiles.spy_av_open(monkeypatch)
    frames = io.decode_frames(path, [122 / FPS, 121 / FPS, 127 / FPS])
    assert indices(frames) == [122, 121, 127]
    # keyframes every 50 frames: seeking lands on frame 100, so about 28 frames are
    # decoded (plus decoder look-ahead), not the 128 a decode from the start would need
    assert recorder.decoded_frames <= 40
    assert "seek" in recorder.attributes
    assert indices(io.decode_clip(path, 75 / FPS, 6, stride=2)) == [75, 77, 79, 81, 83, 85]
    assert indices(io.decode_clip(path, 149 / FPS, 1)) == [149]


def test_open_video_yields_a_container_and_propagates_errors(videos):
    path = videos["h264_mp4"]
    with io.open_video(path) as container:
        assert container.format.name in io.ALLOWED_FORMATS
        stream = container.streams.video[0]
        assert stream.codec_context.options["max_pixels"] == str(io.DEFAULT_MAX_PIXELS)
        assert stream.codec_context.options["err_detect"] == "explode"
    with pytest.raises(KeyError, match="inside the with block"):
        with io.open_video(path):
            raise KeyError("inside the with block")


def test_max_pixels_cap_is_checked_from_metadata(videos):
    path = videos["h264_mp4"]
    pixels = badfiles.FRAME_WIDTH * badfiles.FRAME_HEIGHT
    assert io.probe(path, max_pixels=pixels).width == badfiles.FRAME_WIDTH
    with pytest.raises(VideoDecodeError) as caught:
        io.decode_frames(path, [0.0], max_pixels=pixels - 1)
    assert caught.value.stage == "probe"
    assert "64x48" in caught.value.reason and f"max_pixels={pixels - 1}" in caught.value.reason


def test_mp4_with_a_start_offset_is_timed_from_its_first_frame(tmp_path):
    # pts start at 1 s: t = 0 must still be the first frame.
    path = badfiles.write_video(
        tmp_path / "offset.mkv",
        10,
        container_format="matroska",
        pts=[1000 + 40 * index for index in range(10)],
        time_base=Fraction(1, 1000),
        codec_options={"preset": "ultrafast", "crf": "12"},
    )
    assert indices(io.decode_frames(path, [0.0, 0.2, 0.36])) == [0, 5, 9]
    _, pts = io.decode_all(path)
    np.testing.assert_allclose(pts, np.arange(10) * 0.04, atol=1e-6)


def test_video_decode_error_fields_and_pickling():
    error = VideoDecodeError("/data/a.mp4", "seek", "cannot seek")
    assert (error.path, error.stage, error.reason) == ("/data/a.mp4", "seek", "cannot seek")
    assert str(error) == "/data/a.mp4: seek failed: cannot seek"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.stage, copy.reason, str(copy)) == (error.path, error.stage, error.reason, str(error))
    with pytest.raises(ValueError, match="stage"):
        VideoDecodeError("/data/a.mp4", "render", "x")


@pytest.mark.parametrize(
    "call, parameter",
    [
        (lambda path: io.decode_frames(path, []), "times"),
        (lambda path: io.decode_frames(path, [float("nan")]), "times"),
        (lambda path: io.decode_clip(path, 0.0, 0), "num_frames"),
        (lambda path: io.decode_clip(path, 0.0, 4, stride=0), "stride"),
        (lambda path: io.decode_clip(path, 0.0, 4, fps=0.0), "fps"),
        (lambda path: io.decode_all(path, max_frames=0), "max_frames"),
    ],
)
def test_bad_arguments_name_the_parameter(videos, call, parameter):
    with pytest.raises(ValueError, match=parameter):
        call(videos["h264_mp4"])



def test_imprecise_seek_falls_back_to_decoding_from_the_start(videos, monkeypatch):
    # Make every seek land two keyframes too late: the first decoded frame is then after
    # the requested time, which io must notice and recover from (not return a wrong frame).
    real_target = io._Clock.seek_target
    monkeypatch.setattr(io._Clock, "seek_target", lambda clock, seconds: real_target(clock, seconds + 4.0))
    path = videos["long_gop"]
    assert indices(io.decode_frames(path, [60 / FPS, 61 / FPS])) == [60, 61]
    assert indices(io.decode_clip(path, 30 / FPS, 3)) == [30, 31, 32]
