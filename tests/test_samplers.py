import numpy as np
import pytest
import torch

from vidlab.data.samplers import MultiClipSampler, RandomClipSampler, UniformSegmentSampler, make_sampler


def test_random_clip_inside_video_and_seeded():
    s = RandomClipSampler(num_frames=8, stride=2)
    a = s(3.0, 16, torch.Generator().manual_seed(1))
    b = s(3.0, 16, torch.Generator().manual_seed(1))
    c = s(3.0, 16, torch.Generator().manual_seed(2))
    assert len(a) == 1 and a[0].shape == (8,)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert a[0].min() >= 0 and a[0].max() <= 3.0
    # stride 2 at 16 fps: 0.125 s between frames
    np.testing.assert_allclose(np.diff(a[0]), 0.125)


def test_times_sit_mid_frame():
    """Timestamps fall in the middle of a frame interval, so rounding cannot pick a neighbour."""
    s = RandomClipSampler(num_frames=4, stride=1)
    np.testing.assert_allclose(s.clip_times(0.0, 15) * 15, np.arange(4) + 0.5)
    np.testing.assert_allclose(RandomClipSampler(num_frames=3, stride=2).clip_times(1.0, 10) * 10, [10.5, 12.5, 14.5])


def test_resampled_fps_sets_spacing():
    s = RandomClipSampler(num_frames=5, stride=1, fps=5)
    times = s(4.0, 30, torch.Generator().manual_seed(0))[0]
    np.testing.assert_allclose(np.diff(times), 0.2)


def test_multi_clip_spreads_over_video():
    s = MultiClipSampler(num_frames=4, stride=2, num_clips=3)
    clips = s(4.0, 10)
    assert len(clips) == 3
    starts = [c[0] for c in clips]
    assert starts[0] < 0.2 and clips[-1][-1] > 3.7
    assert np.all(np.diff(starts) > 0)
    centre = MultiClipSampler(num_frames=4, stride=2, num_clips=1)(4.0, 10)[0]
    assert abs((centre[0] + centre[-1]) / 2 - 2.0) <= 0.1  # centred to within half a 0.2 s step


def test_segments_cover_whole_video_one_per_segment():
    s = UniformSegmentSampler(num_frames=8, random=True)
    times = s(4.0, 16, torch.Generator().manual_seed(0))[0]
    seg = np.floor(times / 0.5)
    np.testing.assert_array_equal(seg, np.arange(8))
    mid = UniformSegmentSampler(num_frames=8, random=False)(4.0, 16)[0]
    np.testing.assert_allclose(mid, np.arange(8) * 0.5 + 0.25)


def test_short_video_asks_past_end():
    # the sampler does not invent frames: the decoder will refuse, the dataset will skip
    times = RandomClipSampler(num_frames=16, stride=2)(1.0, 16, torch.Generator().manual_seed(0))[0]
    assert times.max() > 1.0


def test_make_sampler_errors():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("nope", num_frames=4)
    with pytest.raises(ValueError, match="num_frames"):
        RandomClipSampler(num_frames=0)
