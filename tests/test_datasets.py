"""VideoDataset and its loader: no decoding at build time, skips recorded (never replaced),
too many skips raise, workers under fork and spawn, a dead worker is named."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import badfiles
from vidlab.data import io as vio
from vidlab.data.datasets import (
    TooManySkipsError,
    VideoDataset,
    WorkerDiedError,
    make_loader,
    subsample_per_class,
)
from vidlab.data.cache import CachedClipDataset, DecodedVideos, cached_loader
from vidlab.data.encode import encode_video
from vidlab.data.manifest import ManifestRow, write_manifest
from vidlab.data.transforms import eval_transform, train_transform

GOOD = 6


def _row(path: Path, root: Path, label: int, split: str = "train") -> ManifestRow:
    # metadata as the manifest would have recorded it for a healthy 30-frame file
    return ManifestRow(str(path.relative_to(root)), label, split, 30, 25.0, 64, 48, 1.2, label_name=f"c{label}")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, list[str]]:
    """A manifest whose files went bad after it was written: 6 good videos and 3 bad ones."""
    root = tmp_path_factory.mktemp("mixed")
    vids = root / "videos"
    vids.mkdir()
    rows = []
    for i in range(GOOD):
        p = badfiles.make_h264_mp4(vids, num_frames=30, name=f"good{i}.mp4")
        rows.append(_row(p, root, i % 2))
    bad = [badfiles.make_empty(vids), badfiles.make_short(vids), badfiles.make_hls_playlist(vids)]
    rows += [_row(p, root, 0) for p in bad]
    write_manifest(rows, root)
    return root, [str(p) for p in bad]


def test_build_decodes_nothing(mixed, monkeypatch):
    root, _ = mixed

    def boom(*a, **k):
        raise AssertionError("building a dataset must not open any video")

    monkeypatch.setattr(vio.av, "open", boom)
    ds = VideoDataset(root, split="train", num_frames=8)
    assert len(ds) == GOOD + 3 and ds.classes == ["c0", "c1"]


def test_skips_are_recorded_never_replaced(mixed):
    root, bad = mixed
    ds = VideoDataset(root, split="train", num_frames=8, max_skip_fraction=0.5)
    seen = []
    for batch in make_loader(ds, batch_size=4):
        assert batch["video"].shape[1:] == (3, 8, 48, 64)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(GOOD))  # every good item once, nothing substituted
    assert ds.report.seen == GOOD + 3
    skipped = {s.path: s for s in ds.report.skipped}
    assert set(skipped) == set(bad)
    short = next(s for p, s in skipped.items() if p.endswith("short.mp4"))
    assert short.stage == "decode" and "frame" in short.reason
    assert "3 of 9 items skipped" in ds.report.summary()


def test_too_many_skips_raise(mixed):
    root, _ = mixed
    ds = VideoDataset(root, split="train", num_frames=8, max_skip_fraction=0.1, min_seen=4)
    with pytest.raises(TooManySkipsError, match="could not be loaded"):
        for _ in make_loader(ds, batch_size=3):
            pass


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_give_same_items_as_main_process(mixed, context):
    root, _ = mixed
    ds = VideoDataset(root, split="train", num_frames=4, sampler="center", transform=eval_transform(size=32), max_skip_fraction=0.5)
    main = {i: v for b in make_loader(ds, batch_size=2) for i, v in zip(b["index"].tolist(), b["video"])}
    ds2 = VideoDataset(root, split="train", num_frames=4, sampler="center", transform=eval_transform(size=32), max_skip_fraction=0.5)
    loader = make_loader(ds2, batch_size=2, num_workers=2, multiprocessing_context=context)
    workers = {i: v for b in loader for i, v in zip(b["index"].tolist(), b["video"])}
    assert main.keys() == workers.keys()
    assert all(torch.equal(main[i], workers[i]) for i in main)
    assert len(ds2.report.skipped) == 3


def test_same_seed_same_batches(mixed):
    root, _ = mixed

    def run(seed):
        torch.manual_seed(seed)
        ds = VideoDataset(root, split="train", num_frames=4, max_skip_fraction=0.5)
        return [b["video"] for b in make_loader(ds, batch_size=3, shuffle=True, seed=seed, num_workers=1)]

    a, b = run(1), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


class _KillOn:
    """A transform that kills its worker process when it sees one particular clip."""

    def __init__(self, calls_before_death: int) -> None:
        self.calls = calls_before_death

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls -= 1
        if self.calls < 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return frames.permute(3, 0, 1, 2).float()


def test_dead_worker_names_files_in_flight(mixed):
    root, _ = mixed
    ds = VideoDataset(root, split="train", num_frames=4, transform=_KillOn(1), max_skip_fraction=0.9)
    with pytest.raises(WorkerDiedError, match=r"Files in flight:\n  worker-0: .*good\d\.mp4"):
        for _ in make_loader(ds, batch_size=1, num_workers=1):
            pass


def test_multi_view_and_subsample(mixed):
    root, _ = mixed
    ds = VideoDataset(root, split="train", num_frames=4, sampler="multi", num_clips=2, transform=eval_transform(size=32, crops=3))
    assert ds[0]["video"].shape == (6, 3, 4, 32, 32)
    rows = subsample_per_class(ds.rows, 2, seed=0)
    assert sorted(r.label for r in rows) == [0, 0, 1, 1]
    assert subsample_per_class(ds.rows, 2, seed=0) == rows


def test_unknown_split_lists_present_ones(mixed):
    root, _ = mixed
    with pytest.raises(ValueError, match="splits present: train"):
        VideoDataset(root, split="val")


@pytest.fixture(scope="module")
def aspect_ratios(tmp_path_factory) -> Path:
    """Videos of three shapes (4:3, 2:1 and portrait 3:4), as prepare_folder leaves real videos."""
    root = tmp_path_factory.mktemp("aspect")
    rows = []
    t = torch.arange(12, dtype=torch.float32)[:, None, None, None]
    for i, (h, w) in enumerate([(48, 64), (48, 96), (64, 48), (48, 64), (48, 96), (64, 48)]):
        y = torch.arange(h, dtype=torch.float32)[None, :, None, None]
        x = torch.arange(w, dtype=torch.float32)[None, None, :, None]
        frames = ((x * 3 + y * 2 + t * 9 + torch.tensor([0.0, 60.0, 120.0])) % 256).to(torch.uint8)
        path = encode_video(frames, root / "videos" / f"v{i}.mp4", fps=12)
        rows.append(ManifestRow(str(path.relative_to(root)), i % 2, "train", 12, 12.0, w, h, 1.0, label_name=f"c{i % 2}"))
    write_manifest(rows, root)
    return root


@pytest.mark.parametrize("make_transform", [
    lambda: train_transform(size=32, hflip=False),
    lambda: eval_transform(size=32),
    lambda: eval_transform(size=32, resize=40),
])
def test_mixed_aspect_ratios_batch_at_the_configured_size(aspect_ratios, make_transform):
    ds = VideoDataset(aspect_ratios, split="train", num_frames=4, stride=2, transform=make_transform())
    batches = list(make_loader(ds, batch_size=6))
    assert len(batches) == 1 and batches[0]["video"].shape == (6, 3, 4, 32, 32)


def test_mixed_aspect_ratios_three_crop_and_cached(aspect_ratios):
    ds = VideoDataset(aspect_ratios, split="train", num_frames=4, stride=2, sampler="multi", num_clips=2,
                      transform=eval_transform(size=32, crops=3))
    assert next(iter(make_loader(ds, batch_size=6)))["video"].shape == (6, 6, 3, 4, 32, 32)  # 2 clips x 3 crops
    videos = DecodedVideos(aspect_ratios, "train", size=40, workers=1, cache_dir=None, progress=False)
    assert {tuple(f.shape[1:3]) for f in videos.frames} == {(40, 53), (40, 80), (53, 40)}
    cached = CachedClipDataset(videos, num_frames=4, stride=2, transform=train_transform(size=32, hflip=False))
    assert next(iter(cached_loader(cached, batch_size=6)))["video"].shape == (6, 3, 4, 32, 32)


def test_mixed_sizes_without_transform_name_the_files(aspect_ratios):
    ds = VideoDataset(aspect_ratios, split="train", num_frames=4, stride=2)
    with pytest.raises(ValueError, match=r"(?s)different sizes.*eval_transform.*v1\.mp4"):
        next(iter(make_loader(ds, batch_size=3)))


def test_every_vl_data_name_resolves():
    import vidlab.data as data

    missing = [name for name in data._EXPORTS if getattr(data, name, None) is None]
    assert not missing, f"vl.data names that no longer resolve: {missing}"
    assert data.synthetic.CLASSES and data.standard.download is data.download  # submodules resolve too
