import pytest
import torch

from vidlab.data.transforms import denormalize, eval_transform, train_transform


def _frames(t=8, h=48, w=64):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g)


def test_train_output_layout():
    out = train_transform(size=32)(_frames())
    assert out.shape == (3, 8, 32, 32) and out.dtype == torch.float32


def test_same_params_for_every_frame():
    """A still video stays still after augmentation: crop, flip and jitter are shared by all frames."""
    still = _frames(t=1).repeat(8, 1, 1, 1)
    torch.manual_seed(0)
    out = train_transform(size=32, color_jitter=0.4)(still)
    assert torch.allclose(out[:, 1:], out[:, :-1])


def test_flip_switch():
    frames = torch.zeros(4, 32, 32, 3, dtype=torch.uint8)
    frames[:, :, :8] = 255  # bright left edge
    tf = train_transform(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False, color_jitter=0)
    for seed in range(10):
        torch.manual_seed(seed)
        assert tf(frames)[0, 0, 0, 0] > tf(frames)[0, 0, 0, -1]
    flipping = train_transform(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=True, color_jitter=0)
    flips = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = flipping(frames)
        flips += bool(out[0, 0, 0, -1] > out[0, 0, 0, 0])
    assert 0 < flips < 20


def test_eval_center_and_three_crop():
    f = _frames(h=48, w=96)
    one = eval_transform(size=32)(f)
    three = eval_transform(size=32, crops=3)(f)
    assert one.shape == (3, 8, 32, 32)
    assert three.shape == (3, 3, 8, 32, 32)
    assert torch.allclose(three[1], one)  # the middle of the three crops is the centre crop
    assert not torch.allclose(three[0], three[2])


def test_denormalize_round_trip():
    f = _frames(h=32, w=32)
    back = denormalize(eval_transform(size=32)(f))
    assert back.shape == f.shape
    assert (back.int() - f.int()).abs().max() <= 1


def test_bad_layout_is_clear():
    with pytest.raises(ValueError, match=r"\(T, H, W, C\)"):
        train_transform()(torch.zeros(3, 8, 32, 32, dtype=torch.uint8))


def test_clip_transforms_run_on_one_thread_and_restore_the_setting():
    from torchvision.transforms import v2

    from vidlab.data.transforms import VideoTransform

    seen = []

    def record(video):
        seen.append(torch.get_num_threads())
        return video

    tf = VideoTransform(v2.Compose([v2.Lambda(record), v2.ToDtype(torch.float32, scale=True)]))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = tf(torch.zeros(4, 8, 8, 3, dtype=torch.uint8))
        assert seen == [1] and torch.get_num_threads() == 2 and out.shape == (3, 4, 8, 8)
    finally:
        torch.set_num_threads(before)
