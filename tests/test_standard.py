"""Standard datasets: resumable checked downloads from a local server, safe extraction,
and manifests for UCF101 / HMDB51 / Kinetics / SSv2 fixtures in the official layouts."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import runpy
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures_http import serve_files

from vidlab.data.encode import encode_video
from vidlab.data.manifest import read_manifest
from vidlab.data.standard import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    build_hmdb51_manifest,
    build_kinetics_manifest,
    build_ssv2_manifest,
    build_ucf101_manifest,
    download,
    extract,
    parse_hmdb51_splits,
    parse_ucf101_splits,
)

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def video_bytes(tmp_path: Path, suffix: str, codec: str, seed: int) -> bytes:
    """A tiny (8 frames, 32x24, 8 fps) video file's bytes."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, t, axis=0) for t in range(8)])
    path = encode_video(frames, tmp_path / f"tmp_{seed}{suffix}", 8, codec=codec)
    data = path.read_bytes()
    path.unlink()
    return data


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def load_cli(name: str) -> dict:
    return runpy.run_path(str(ROOT / "data_scripts" / f"{name}.py"), run_name=f"{name}_cli")


# --------------------------------------------------------------------------- download


def test_download_full_with_checksums(tmp_path):
    with serve_files({"data.bin": PAYLOAD}) as server:
        path = download(server.url("data.bin"), tmp_path / "data.bin", sha256=SHA256, md5=MD5,
                        chunk=8192, progress=False)
        assert path.read_bytes() == PAYLOAD
        assert [r.range_header for r in server.requests] == [None]
        assert not (tmp_path / "data.bin.part").exists()
        # Already there and verified: no second request.
        assert download(server.url("data.bin"), tmp_path, sha256=SHA256, progress=False) == path
        assert len(server.requests) == 1


def test_interrupted_download_resumes_with_range(tmp_path):
    dest = tmp_path / "data.bin"
    with serve_files({"data.bin": PAYLOAD}, drop_after=100_000) as server:
        with pytest.raises(DownloadError, match="run again to resume"):
            download(server.url("data.bin"), dest, sha256=SHA256, retries=0, progress=False)
        assert not dest.exists()
        assert (tmp_path / "data.bin.part").stat().st_size == 100_000
        download(server.url("data.bin"), dest, sha256=SHA256, retries=0, progress=False)
        first, second = server.requests
        assert first.range_header is None and first.status == 200
        assert second.range_header == "bytes=100000-" and second.status == 206
    assert dest.read_bytes() == PAYLOAD


def test_download_retries_and_resumes_within_one_call(tmp_path):
    with serve_files({"data.bin": PAYLOAD}, drop_after=50_000, drop_count=2) as server:
        path = download(server.url("data.bin"), tmp_path / "d.bin", md5=MD5, retries=2, progress=False)
        assert [r.range_header for r in server.requests] == [None, "bytes=50000-", "bytes=100000-"]
    assert path.read_bytes() == PAYLOAD


def test_download_restarts_when_server_ignores_range(tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from another file")
    with serve_files({"data.bin": PAYLOAD}, honor_range=False) as server:
        download(server.url("data.bin"), dest, sha256=SHA256, progress=False)
        assert server.requests[0].range_header is not None and server.requests[0].status == 200
    assert dest.read_bytes() == PAYLOAD


def test_download_finishes_a_complete_part_file_and_restarts_an_oversized_one(tmp_path):
    with serve_files({"data.bin": PAYLOAD}) as server:
        (tmp_path / "a.bin.part").write_bytes(PAYLOAD)  # complete, but never moved into place
        assert download(server.url("data.bin"), tmp_path / "a.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD
        assert [(r.range_header, r.status) for r in server.requests] == [(f"bytes={len(PAYLOAD)}-", 416)]
        (tmp_path / "b.bin.part").write_bytes(PAYLOAD + b"extra")  # longer than the file: start over
        assert download(server.url("data.bin"), tmp_path / "b.bin", sha256=SHA256, progress=False).read_bytes() == PAYLOAD
        assert [r.status for r in server.requests[1:]] == [416, 200]


def test_download_checksum_mismatch_deletes_file(tmp_path):
    wrong = "0" * 64
    with serve_files({"data.bin": PAYLOAD}) as server:
        url = server.url("data.bin")
        with pytest.raises(ChecksumError) as info:
            download(url, tmp_path / "data.bin", sha256=wrong, progress=False)
    message = str(info.value)
    assert url in message and wrong in message and SHA256 in message
    assert (info.value.expected, info.value.actual) == (wrong, SHA256)
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_other_schemes_and_reports_http_errors(tmp_path):
    for url in ("file:///etc/passwd", "ftp://example.org/x.zip", "/local/path.zip"):
        with pytest.raises(ValueError, match="http"):
            download(url, tmp_path / "x", progress=False)
    with serve_files({}) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(server.url("missing.zip"), tmp_path / "x", progress=False)
        assert len(server.requests) == 1  # a 404 is not retried


# --------------------------------------------------------------------------- extract


def test_extract_zip_and_tar_gz(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"top/a.txt": b"A", "top/sub/b.txt": b"B"}))
    out = extract(archive, tmp_path / "zip_out")
    assert (out / "top" / "sub" / "b.txt").read_bytes() == b"B"
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("dir/c.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"C"))
        link = tarfile.TarInfo("dir/inner_link")
        link.type, link.linkname = tarfile.SYMTYPE, "c.txt"
        tf.addfile(link)
    out = extract(tgz, tmp_path / "tar_out")
    assert (out / "dir" / "c.txt").read_bytes() == b"C"
    assert (out / "dir" / "inner_link").read_bytes() == b"C"


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil_abs.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_extract_zip_refuses_unsafe_members(tmp_path, name):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(zip_bytes({"ok.txt": b"ok", name: b"evil"}))
    with pytest.raises(ArchiveError, match=re.escape(name)):
        extract(archive, tmp_path / "out" / "inside")
    assert not (tmp_path / "out" / "inside" / "ok.txt").exists()  # checked before writing anything
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", ["dotdot", "symlink_out", "abs_symlink", "hardlink_out"])
def test_extract_tar_refuses_unsafe_members(tmp_path, kind):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tf:
        member = tarfile.TarInfo({"dotdot": "../evil.txt"}.get(kind, "dir/link"))
        if kind == "dotdot":
            member.size = 4
            tf.addfile(member, io.BytesIO(b"evil"))
        else:
            member.type = tarfile.LNKTYPE if kind == "hardlink_out" else tarfile.SYMTYPE
            member.linkname = {"symlink_out": "../../outside", "abs_symlink": "/etc/passwd",
                               "hardlink_out": "../outside"}[kind]
            tf.addfile(member)
    with pytest.raises(ArchiveError, match="refusing to extract"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "dir").exists()


def test_extract_rar_without_a_tool_says_what_to_install(tmp_path, monkeypatch):
    archive = tmp_path / "UCF101.rar"
    archive.write_bytes(b"Rar!\x1a\x07\x00" + b"\x00" * 32)
    monkeypatch.setattr("vidlab.data.standard.fetch.shutil.which", lambda name: None)
    with pytest.raises(ArchiveError, match="unrar") as info:
        extract(archive, tmp_path / "out")
    assert "bsdtar" in str(info.value) and "install" in str(info.value)


def test_extract_rar_goes_through_the_tool_and_checks_its_listing(tmp_path, monkeypatch):
    """A stand-in `unrar` (a Python script handling `lb` and `x` on a zip) checks the calls."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    tool = fake_bin / "unrar"
    tool.write_text(
        "#!" + sys.executable + "\n"
        "import sys, zipfile\n"
        "args = sys.argv[1:]\n"
        "zf = zipfile.ZipFile([a for a in args if a.endswith('.rar')][0])\n"
        "if args[0] == 'lb':\n"
        "    print('\\n'.join(zf.namelist()))\n"
        "elif args[0] == 'x':\n"
        "    zf.extractall(args[-1])\n"
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    good = tmp_path / "good.rar"
    good.write_bytes(zip_bytes({"HandstandPushups/v_HandStandPushups_g01_c01.avi": b"x"}))
    out = extract(good, tmp_path / "out")
    assert (out / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi").read_bytes() == b"x"
    bad = tmp_path / "bad.rar"
    bad.write_bytes(zip_bytes({"../escape.txt": b"x"}))
    with pytest.raises(ArchiveError, match="escape.txt"):
        extract(bad, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()


# --------------------------------------------------------------------------- UCF101

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]


def ucf_filename(cls: str, group: int, clip: int) -> str:
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls  # the real data set's quirk
    return f"{cls}/v_{stem}_g{group:02d}_c{clip:02d}.avi"


def make_ucf_archives(tmp_path: Path) -> tuple[bytes, bytes]:
    """(videos zip, split lists zip) in the official layout: 3 classes x groups 1-4 x 1-2 clips."""
    lists: dict[str, bytes] = {
        "ucfTrainTestlist/classInd.txt": "".join(f"{i + 1} {c}\r\n" for i, c in enumerate(UCF_CLASSES)).encode()
    }
    videos: dict[str, bytes] = {}
    names = [(c, g, k) for c in UCF_CLASSES for g in range(1, 5) for k in range(1, 3 if g == 2 else 2)]
    seed = 0
    for cls, group, clip in names:
        rel = ucf_filename(cls, group, clip)
        videos[f"UCF-101/{rel}"] = video_bytes(tmp_path, ".avi", "mjpeg", seed)
        seed += 1
    videos["UCF-101/" + ucf_filename("Archery", 3, 1)] = b"RIFF....AVI LIST garbage"  # a corrupt video
    for split in (1, 2, 3):
        train = [(c, g, k) for c, g, k in names if g != split]
        test = [(c, g, k) for c, g, k in names if g == split]
        train_lines = [f"{ucf_filename(c, g, k)} {UCF_CLASSES.index(c) + 1}" for c, g, k in train]
        if split == 1:
            train_lines.append(f"{ucf_filename('Archery', 9, 1)} 2")  # listed, not in the archive
        lists[f"ucfTrainTestlist/trainlist0{split}.txt"] = "\r\n".join(train_lines).encode()
        lists[f"ucfTrainTestlist/testlist0{split}.txt"] = "\r\n".join(ucf_filename(*t) for t in test).encode()
    return zip_bytes(videos), zip_bytes(lists)


def group_of(path: str) -> int:
    return int(re.search(r"_g(\d+)_", path).group(1))


def test_ucf101_download_extract_and_manifest(tmp_path):
    videos_zip, lists_zip = make_ucf_archives(tmp_path)
    data_dir = tmp_path / "ucf101"
    cli = load_cli("ucf101")
    files = {"UCF101.zip": videos_zip, "splits.zip": lists_zip}
    with serve_files(files, drop_after=20_000, drop_names={"UCF101.zip"}) as server:
        code = cli["main"]([
            "--data-dir", str(data_dir), "--url", server.url("UCF101.zip"),
            "--sha256", hashlib.sha256(videos_zip).hexdigest(), "--splits-url", server.url("splits.zip"),
            "--splits-md5", hashlib.md5(lists_zip).hexdigest(), "--val-fraction", "0.34",
            "--workers", "1", "--quiet",
        ])
        assert code == 0
        video_requests = [(r.range_header, r.status) for r in server.requests if r.path == "/UCF101.zip"]
        assert video_requests == [(None, 200), ("bytes=20000-", 206)]  # the dropped download was resumed

    rows = read_manifest(data_dir)
    assert {(r.label, r.label_name) for r in rows} == {(i, c) for i, c in enumerate(UCF_CLASSES)}
    for row in rows:
        assert (data_dir / row.path).is_file() and row.path.startswith("UCF-101/")
        assert row.label == UCF_CLASSES.index(row.path.split("/")[1])
        assert (row.num_frames, row.width, row.height) == (8, 32, 24)
    groups = {split: {group_of(r.path) for r in rows if r.split == split} for split in ("train", "val", "test")}
    assert groups["test"] == {1}
    assert len(groups["val"]) == 1 and not groups["val"] & groups["train"]  # whole groups
    assert groups["train"] | groups["val"] == {2, 3, 4}
    assert len(rows) == 14  # 15 videos, one corrupt
    rejected = list(csv.DictReader(open(data_dir / "rejected.csv", encoding="utf-8")))
    assert [Path(r["path"]).name for r in rejected] == ["v_Archery_g03_c01.avi"]

    report = build_ucf101_manifest(data_dir, tmp_path / "split2", split=2, workers=1, progress=False)
    assert report.missing == []
    split2 = read_manifest(report.manifest)
    assert {group_of(r.path) for r in split2 if r.split == "test"} == {2}
    assert all((tmp_path / "split2" / r.path).is_file() for r in split2)  # relative paths via ..
    report1 = build_ucf101_manifest(data_dir, data_dir, split=1, workers=1, progress=False)
    assert report1.missing == ["Archery/v_Archery_g09_c01.avi"]


def test_parse_ucf101_splits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="classInd.txt"):
        parse_ucf101_splits(tmp_path, 1)
    with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
        parse_ucf101_splits(tmp_path, 4)


# --------------------------------------------------------------------------- HMDB51

HMDB_VIDEOS = {
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1), ("April_09_brush_hair_u_nm_np1_ba_goo_1.avi", 1),
                   ("Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi", 1),
                   ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", 2),
                   ("Aussie_Brushing_brush_hair_u_nm_np1_fr_goo_0.avi", 0)],
    "cartwheel": [("Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi", 1),
                  ("Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi", 1),
                  ("Cartwheel_Tutorial_cartwheel_f_cm_np1_fr_med_0.avi", 2)],
}


def test_hmdb51_nested_archives_and_manifest(tmp_path):
    inner = {}
    seed = 0
    for cls, videos in HMDB_VIDEOS.items():
        members = {}
        for name, _ in videos:
            members[f"{cls}/{name}"] = video_bytes(tmp_path, ".avi", "mjpeg", seed)
            seed += 1
        inner[f"{cls}.zip"] = zip_bytes(members)  # the official archive nests one archive per class
    local_archive = tmp_path / "hmdb51_org.zip"
    local_archive.write_bytes(zip_bytes(inner))
    splits = {}
    for split in (1, 2, 3):
        for cls, videos in HMDB_VIDEOS.items():
            body = "".join(f"{name} {flag if split == 1 else (1 if flag == 2 else 2 if flag == 1 else 0)} \n"
                           for name, flag in videos)
            splits[f"testTrainMulti_7030_splits/{cls}_test_split{split}.txt"] = body.encode()
    data_dir = tmp_path / "hmdb51"
    cli = load_cli("hmdb51")
    with serve_files({"test_train_splits.zip": zip_bytes(splits)}) as server:
        code = cli["main"]([
            "--data-dir", str(data_dir), "--archive", str(local_archive), "--splits-url",
            server.url("test_train_splits.zip"), "--val-fraction", "0.3", "--workers", "1", "--quiet",
        ])
    assert code == 0
    rows = read_manifest(data_dir)
    flags = {name: (cls, flag) for cls, videos in HMDB_VIDEOS.items() for name, flag in videos}
    assert len(rows) == sum(1 for _, flag in flags.values() if flag)  # flag 0 = unused
    for row in rows:
        cls, flag = flags[Path(row.path).name]
        assert row.label == sorted(HMDB_VIDEOS).index(cls) and row.label_name == cls
        assert (row.split == "test") == (flag == 2)
    val = [r for r in rows if r.split == "val"]
    assert val, "some training source film must be carved out for val"
    sources = lambda split: {Path(r.path).name.split(f"_{r.label_name}_")[0] for r in rows if r.split == split}
    assert not sources("val") & sources("train")  # both April_09 clips land on the same side

    classes, entries = parse_hmdb51_splits(data_dir / "testTrainMulti_7030_splits", 2)
    assert classes == ["brush_hair", "cartwheel"]
    assert ("cartwheel", "Cartwheel_Tutorial_cartwheel_f_cm_np1_fr_med_0.avi", 1) in entries
    report = build_hmdb51_manifest(data_dir, tmp_path / "s2", split=2, workers=1, progress=False)
    assert report.split_counts.get("test") == 5 and report.missing == []


# --------------------------------------------------------------------------- Kinetics


def test_kinetics_manifest_counts_missing_videos(tmp_path):
    root = tmp_path / "k400"
    rows = [
        ("abseiling", "AAAAAAAAAAA", 14, 24, "train"),
        ('passing American football (in game)', "BBBBBBBBBBB", 0, 10, "train"),
        ("abseiling", "CCCCCCCCCCC", 5, 15, "validate"),
        ("zumba", "DDDDDDDDDDD", 30, 40, "validate"),  # not downloaded
        ("zumba", "EEEEEEEEEEE", 1, 11, "train"),
    ]
    root.mkdir()
    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        writer.writerows(r + (0,) for r in rows)
    with open(tmp_path / "test.csv", "w", encoding="utf-8") as fh:
        fh.write("youtube_id,time_start,time_end,split\nFFFFFFFFFFF,2,12,test\n")
    blob = video_bytes(tmp_path, ".mp4", "libx264", 0)
    (root / "train" / "abseiling").mkdir(parents=True)
    (root / "train" / "abseiling" / "AAAAAAAAAAA_000014_000024.mp4").write_bytes(blob)
    (root / "train" / "BBBBBBBBBBB_000000_000010.mp4").write_bytes(blob)
    (root / "val").mkdir()
    (root / "val" / "CCCCCCCCCCC.mp4").write_bytes(blob)  # {youtube_id}.mp4 is accepted too
    (root / "train" / "EEEEEEEEEEE_000001_000011.mp4").write_bytes(b"")  # broken download
    (root / "FFFFFFFFFFF_000002_000012.mp4").write_bytes(blob)

    cli = load_cli("kinetics")
    code = cli["main"](["--videos", str(root), "--annotations", str(tmp_path / "train.csv"),
                        str(tmp_path / "test.csv"), "--workers", "1", "--quiet"])
    assert code == 0
    manifest = {Path(r.path).name: r for r in read_manifest(root)}
    names = ["abseiling", "passing American football (in game)", "zumba"]
    assert manifest["AAAAAAAAAAA_000014_000024.mp4"].label == 0
    assert manifest["BBBBBBBBBBB_000000_000010.mp4"].label_name == names[1]
    assert manifest["BBBBBBBBBBB_000000_000010.mp4"].label == 1
    assert manifest["CCCCCCCCCCC.mp4"].split == "val"
    assert manifest["FFFFFFFFFFF_000002_000012.mp4"].label == -1
    assert manifest["FFFFFFFFFFF_000002_000012.mp4"].split == "test"
    report = build_kinetics_manifest(root, tmp_path / "k_out", annotations=tmp_path / "train.csv",
                                     workers=1, progress=False)
    assert report.missing == ["DDDDDDDDDDD_000030_000040"]
    assert [Path(p).name for p, _ in report.rejected] == ["EEEEEEEEEEE_000001_000011.mp4"]
    assert report.accepted == 3 and "missing 1" in report.summary()


# --------------------------------------------------------------------------- SSv2


def test_ssv2_manifest_from_json(tmp_path):
    root = tmp_path / "ssv2"
    root.mkdir()
    labels = {"Approaching something with your camera": "0", "Putting something onto something": "1"}
    (root / "labels.json").write_text(json.dumps(labels))
    train = [{"id": "101", "label": "approaching a cup with your camera",
              "template": "Approaching [something] with your camera", "placeholders": ["a cup"]},
             {"id": "102", "label": "putting a pen onto a book",
              "template": "Putting [something] onto [something]", "placeholders": ["a pen", "a book"]},
             {"id": "103", "label": "missing one", "template": "Putting [something] onto [something]"}]
    validation = [{"id": "201", "label": "putting x onto y", "template": "Putting [something] onto [something]"}]
    (root / "something-something-v2-train.json").write_text(json.dumps(train))
    (root / "something-something-v2-validation.json").write_text(json.dumps(validation))
    videos = root / "20bn-something-something-v2"
    videos.mkdir()
    for i, vid in enumerate(("101", "102", "201")):
        (videos / f"{vid}.webm").write_bytes(video_bytes(tmp_path, ".webm", "libvpx-vp9", i))
    cli = load_cli("ssv2")
    assert cli["main"](["--videos", str(videos), "--annotations", str(root), "--out", str(root),
                        "--workers", "1", "--quiet"]) == 0
    rows = {Path(r.path).stem: r for r in read_manifest(root)}
    assert (rows["101"].label, rows["101"].split) == (0, "train")
    assert (rows["102"].label, rows["102"].label_name) == (1, "Putting something onto something")
    assert rows["201"].split == "val" and rows["201"].codec == "vp9"
    assert rows["101"].path == "20bn-something-something-v2/101.webm"
    report = build_ssv2_manifest(videos, tmp_path / "o", annotations=root, workers=1, progress=False)
    assert report.missing == ["103.webm"]
    assert Counter(r.split for r in read_manifest(report.manifest)) == Counter(train=2, val=1)
