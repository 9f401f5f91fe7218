"""The decode-once cache serves the same frames the decoder would, and reuses its file."""
import torch

import badfiles
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
    # second construction loads the .pt cache instead of decoding
    again = DecodedVideos(root, "train", size=48, workers=1, progress=False)
    assert list((root / ".cache").glob("decoded-48px-*.pt"))
    assert all(torch.equal(a, b) for a, b in zip(videos.frames, again.frames))
    assert len(again.report.skipped) == 1


def test_resize_short_side():
    f = torch.randint(0, 255, (2, 48, 64, 3), dtype=torch.uint8)
    assert resize_frames(f, 24).shape == (2, 24, 32, 3)
    assert resize_frames(f, 48) is f
