"""prepare_folder: validation of every file, placement, re-encode, stratified splits, CLI."""
from __future__ import annotations

import csv
import os
import runpy
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vidlab.data.encode import encode_video
from vidlab.data.manifest import read_manifest
from vidlab.data.prepare import prepare_folder, reencode_video, stratified_split

ROOT = Path(__file__).resolve().parents[1]
W, H, T, FPS = 32, 24, 8, 8

# container suffix -> encoder
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".avi": "mjpeg", ".mov": "libx264", ".webm": "libvpx-vp9"}


def make_video(path: Path, *, seed: int = 0, frames: int = T, width: int = W, height: int = H) -> Path:
    """A tiny video of moving noise, (T, H, W, 3) uint8, in the container named by the suffix."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    video = np.stack([np.roll(base, shift=2 * t, axis=1) for t in range(frames)])
    return encode_video(video, path, FPS, codec=CODECS[path.suffix])


def read_rejected(out: Path) -> dict[str, str]:
    with open(out / "rejected.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {row["path"]: row["reason"] for row in rows}


@pytest.fixture()
def mixed_src(tmp_path: Path) -> tuple[Path, dict[str, int], set[Path]]:
    """src/<class>/ with good videos in several containers and a few bad files."""
    src = tmp_path / "src"
    layout = {
        "birds": [".mp4", ".mkv", ".avi"],
        "cats": [".mp4", ".mkv", ".avi", ".mov", ".mp4", ".webm"],
        "dogs": [".avi", ".mp4", ".mkv", ".mp4", ".mov"],
    }
    seed = 0
    for name, suffixes in layout.items():
        for i, suffix in enumerate(suffixes):
            make_video(src / name / f"clip{i}{suffix}", seed=seed)
            seed += 1
    make_video(src / "dogs" / "outdoor" / "nested.mp4", seed=99)  # sub-folders belong to the class
    bad = {
        src / "cats" / "empty.mp4",
        src / "dogs" / "notes.mp4",
        src / "birds" / "readme.txt",
        src / "loose.mp4",
    }
    (src / "cats" / "empty.mp4").write_bytes(b"")
    (src / "dogs" / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    (src / "birds" / "readme.txt").write_text("hello")
    make_video(src / "loose.mp4", seed=100)  # not in a class folder
    (src / "cats" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are ignored
    (src / "empty_class").mkdir()
    counts = {"birds": 3, "cats": 6, "dogs": 6}
    return src, counts, bad


def test_prepare_folder_accepts_good_rejects_bad(mixed_src, tmp_path):
    src, counts, bad = mixed_src
    out = tmp_path / "out"
    report = prepare_folder(src, out, workers=2, progress=False)

    assert report.accepted == sum(counts.values())
    rejected = read_rejected(out)
    assert set(rejected) == {str(p) for p in bad}
    assert {p for p, _ in report.rejected} == set(rejected)
    assert all(reason.strip() for reason in rejected.values())
    assert "extension" in rejected[str(src / "birds" / "readme.txt")]
    assert "class folder" in rejected[str(src / "loose.mp4")]

    rows = read_manifest(out)
    assert len(rows) == report.accepted
    names = ["birds", "cats", "dogs"]  # empty_class has no video: left out of the labels
    assert {(r.label, r.label_name) for r in rows} == {(i, n) for i, n in enumerate(names)}
    for row in rows:
        placed = out / row.path
        assert placed.is_file() and row.path.startswith(f"videos/{row.label_name}/")
        source = src / Path(row.path).relative_to("videos")
        assert os.path.samefile(placed, source)  # hardlinked, not re-encoded
        assert (row.num_frames, row.width, row.height) == (T, W, H)
        assert row.fps == pytest.approx(FPS)
        assert row.duration == pytest.approx(T / FPS, abs=0.13)
    per_class = {n: Counter(r.split for r in rows if r.label_name == n) for n in names}
    for name, split_counts in per_class.items():
        assert sum(split_counts.values()) == counts[name]
        assert split_counts["val"] >= 1 and split_counts["test"] >= 1 and split_counts["train"] >= 1, name
    assert report.class_counts == {n: dict(c) for n, c in per_class.items()}
    text = report.summary()
    assert "accepted 15" in text and "rejected 4" in text and "cats" in text


def test_prepare_folder_is_deterministic_and_idempotent(mixed_src, tmp_path):
    src, _, _ = mixed_src
    first = read_manifest(prepare_folder(src, tmp_path / "a", seed=3, workers=1, progress=False).manifest)
    second = read_manifest(prepare_folder(src, tmp_path / "b", seed=3, workers=1, progress=False).manifest)
    assert [(r.path, r.split) for r in first] == [(r.path, r.split) for r in second]
    again = read_manifest(prepare_folder(src, tmp_path / "a", seed=3, workers=1, progress=False).manifest)
    assert [(r.path, r.split) for r in again] == [(r.path, r.split) for r in first]


def test_prepare_folder_reencodes_to_short_side_and_fps(tmp_path):
    src = tmp_path / "src"
    for name in ("jump", "run"):
        make_video(src / name / "a.mp4", seed=1)
        make_video(src / name / "a.mkv", seed=2)  # same stem: must not overwrite a.mp4's output
        make_video(src / name / "b.avi", seed=3)
    (src / "run" / "broken.mov").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    out = tmp_path / "out"
    report = prepare_folder(src, out, short_side=16, fps=4, workers=1, progress=False)
    assert report.accepted == 6
    assert [p for p, _ in report.rejected] == [str(src / "run" / "broken.mov")]
    rows = read_manifest(out)
    assert len({r.path for r in rows}) == 6
    for row in rows:
        assert row.path.endswith(".mp4") and (out / row.path).is_file()
        assert (row.width, row.height) == (22, 16)  # 32x24 scaled to short side 16, even sizes
        assert row.fps == pytest.approx(4)
        assert row.num_frames == 4  # 1 s of video at 4 fps
        assert row.codec == "h264"


def test_reencode_video_keeps_rate_and_makes_sizes_even(tmp_path):
    from vidlab.data.io import decode_frames, probe

    src = make_video(tmp_path / "odd.avi", width=30, height=22)
    dest = reencode_video(src, tmp_path / "out" / "odd.mp4")
    info = probe(dest)
    assert (info.width, info.height, info.num_frames) == (30, 22, T)
    assert info.fps == pytest.approx(FPS)
    assert decode_frames(dest, [0.0]).shape == (1, 22, 30, 3)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_stratified_split_counts_and_determinism():
    keys = {"a": [f"a{i}" for i in range(10)], "b": ["b0", "b1", "b2"], "c": ["c0", "c1"], "d": ["d0"]}
    split = stratified_split(keys, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert split == stratified_split(keys, val_fraction=0.1, test_fraction=0.2, seed=0)
    by_class = {name: Counter(split[k] for k in ks) for name, ks in keys.items()}
    assert by_class["a"] == Counter(train=7, val=1, test=2)
    assert by_class["b"] == Counter(train=1, val=1, test=1)
    assert by_class["c"]["train"] >= 1 and by_class["d"] == Counter(train=1)
    assert stratified_split(keys, val_fraction=0.0, test_fraction=0.0)["a0"] == "train"
    other_seeds = [stratified_split(keys, seed=s) for s in range(1, 6)]
    assert any(o != split for o in other_seeds)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(keys, val_fraction=1.5)
    with pytest.raises(ValueError, match="must be < 1"):
        stratified_split(keys, val_fraction=0.5, test_fraction=0.5)


def test_prepare_folder_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        prepare_folder(tmp_path / "does_not_exist", tmp_path / "out", progress=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match="no class folders"):
        prepare_folder(flat, tmp_path / "out", progress=False)
    (flat / "cls").mkdir()
    with pytest.raises(ValueError, match="must not contain each other"):
        prepare_folder(flat, flat / "out", progress=False)
    with pytest.raises(ValueError, match="test_fraction"):
        prepare_folder(flat, tmp_path / "out", test_fraction=-0.1, progress=False)


def test_prepare_folder_cli_exit_codes(tmp_path, capsys):
    cli = runpy.run_path(str(ROOT / "data_scripts" / "prepare_folder.py"), run_name="prepare_folder_cli")
    src = tmp_path / "src"
    make_video(src / "a" / "x.mp4")
    make_video(src / "b" / "y.mkv", seed=1)
    (src / "b" / "bad.mp4").write_bytes(b"")
    assert cli["main"]([str(src), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "accepted 2" in printed and "rejected 1" in printed
    assert len(read_manifest(tmp_path / "out")) == 2

    only_bad = tmp_path / "only_bad"
    (only_bad / "a").mkdir(parents=True)
    (only_bad / "a" / "x.mp4").write_text("not a video")
    assert cli["main"]([str(only_bad), "--out", str(tmp_path / "out2"), "--quiet", "--workers", "1"]) == 1
    assert "no usable video" in capsys.readouterr().err
    assert cli["main"]([str(tmp_path / "nope"), "--out", str(tmp_path / "out3"), "--quiet"]) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on forked workers seeing the patch")
def test_a_crashing_worker_is_pinned_on_its_file(tmp_path, monkeypatch):
    import vidlab.data.prepare as prepare

    real = prepare.validate_video

    def crash_on_marked(path):
        if "crash" in Path(path).name:
            os._exit(3)  # a hard crash inside the worker, like a segfault in FFmpeg
        return real(path)

    monkeypatch.setattr(prepare, "validate_video", crash_on_marked)
    src = tmp_path / "src"
    for i in range(3):
        make_video(src / "a" / f"ok{i}.mp4", seed=i)
        make_video(src / "b" / f"ok{i}.mp4", seed=10 + i)
    make_video(src / "b" / "crash.mp4", seed=20)
    report = prepare_folder(src, tmp_path / "out", workers=2, progress=False)
    assert report.accepted == 6
    assert report.rejected == [(str(src / "b" / "crash.mp4"), "the worker process crashed while decoding this file")]
