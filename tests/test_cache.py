"""The decode-once cache serves the same frames the decoder would, and reuses its file."""
import subprocess
import sys

import torch

import badfiles
import vidlab.data.cache as cache_module
from vidlab.data.cache import CachedClipDataset, DecodedVideos, resize_frames
from vidlab.data.io import decode_frames
from vidlab.data.manifest import ManifestRow, write_manifest


def _dataset(root):
    vids = root / "videos"
    vids.mkdir(parents=True)
    rows = []
    for i in range(3):
        p = badfiles.make_h264_mp4(vids, num_frames=30, name=f"v{i}.mp4")
        rows.append(ManifestRow(f"videos/{p.name}", i % 2, "train", 30, 25.0, 64, 48, 1.2))
    bad = badfiles.make_empty(vids)
    rows.append(ManifestRow(f"videos/{bad.name}", 0, "train", 30, 25.0, 64, 48, 1.2))
    write_manifest(rows, root)
    return root


def test_cache_matches_decoder_and_skips_bad(tmp_path):
    root = _dataset(tmp_path / "d")
    videos = DecodedVideos(root, "train", size=48, workers=1, progress=False)
    assert len(videos) == 3 and len(videos.report.skipped) == 1
    assert videos.report.skipped[0].path.endswith("empty.mp4")
    ds = CachedClipDataset(videos, num_frames=5, stride=2, sampler="center")
    times = ds.sampler(videos.rows[1].duration, videos.rows[1].fps)[0]
    expected = decode_frames(root / videos.rows[1].path, times)
    assert torch.equal(ds.clip_frames(1)[0], expected)
    item = ds[1]
    assert item["video"].shape == (3, 5, 48, 64) and item["label"] == 1


def test_second_construction_uses_the_disk_cache_not_the_videos(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "d")
    videos = DecodedVideos(root, "train", size=48, workers=1, progress=False)
    assert len(list((root / ".cache").glob("decoded-48px-*.pt"))) == 1
    # from here on, any decoding fails loudly: the videos are gone and the decoder refuses
    for path in (root / "videos").iterdir():
        path.write_bytes(b"")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a video was decoded although its frames are cached")

    monkeypatch.setattr(cache_module, "decode_all", no_decoding)
    again = DecodedVideos(root, "train", size=48, workers=1, progress=False)
    assert [r.path for r in again.rows] == [r.path for r in videos.rows]
    assert all(torch.equal(a, b) for a, b in zip(videos.frames, again.frames))
    assert len(again.report.skipped) == 1
    ds = CachedClipDataset(again, num_frames=5, stride=2, sampler="random")
    assert ds[0]["video"].shape == (3, 5, 48, 64)  # serving clips decodes nothing either


def test_cache_dir_relative_absolute_or_none(tmp_path):
    root = _dataset(tmp_path / "d")
    DecodedVideos(root, "train", size=24, workers=1, progress=False, cache_dir=None)
    assert not (root / ".cache").exists()
    DecodedVideos(root, "train", size=24, workers=1, progress=False, cache_dir="frames")
    assert len(list((root / "frames").glob("decoded-24px-*.pt"))) == 1
    DecodedVideos(root, "train", size=24, workers=1, progress=False, cache_dir=tmp_path / "elsewhere")
    assert len(list((tmp_path / "elsewhere").glob("decoded-24px-*.pt"))) == 1


def test_cache_submodule_reachable_from_vl_data():
    code = "import vidlab as vl; print(vl.data.cache.cached_loader.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "cached_loader", out.stderr


def test_resize_short_side():
    f = torch.randint(0, 255, (2, 48, 64, 3), dtype=torch.uint8)
    assert resize_frames(f, 24).shape == (2, 24, 32, 3)
    assert resize_frames(f, 48) is f
