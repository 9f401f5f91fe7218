"""The synthetic action dataset: encoder, renderer, generator, ensure_dataset and the CLI."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import av
import numpy as np
import pytest

import vidlab.data.synthetic as syn
import vidlab.data.synthetic.generator as syn_generator
import vidlab.data.synthetic.world as syn_world
from vidlab.data.encode import encode_video
from vidlab.data.manifest import REQUIRED_COLUMNS, OPTIONAL_COLUMNS, read_manifest, splits
from vidlab.utils import project_root

# 12 classes x 1 video per labelled split + 6 unlabelled = 78 tiny videos (~1 s to make).
TINY = dataclasses.replace(
    syn.PRESETS["smoke"], name="tiny", size=32, num_frames=8, train_per_class=1, val_per_class=1,
    test_per_class=1, unlabeled=6, shift_train_per_class=1, shift_val_per_class=1, shift_test_per_class=1,
)


def decode(path: Path) -> np.ndarray:
    """All frames of a video as ``(T, H, W, 3)`` uint8, decoded with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    syn.generate(out, preset=TINY, seed=3, workers=1, progress=False)
    return out


# ----------------------------------------------------------------------------- encoder


def test_encode_video_roundtrip_is_deterministic_and_atomic(tmp_path):
    t = np.linspace(0, 1, 6)[:, None, None, None]
    y, x = np.mgrid[0:24, 0:40]
    frames = (np.stack([x * 2, y * 3, 100 + 0 * x], -1)[None] + 60 * t).clip(0, 255).astype(np.uint8)
    a = encode_video(frames, tmp_path / "a.mp4", fps=12)
    b = encode_video(frames, tmp_path / "b.mp4", fps=12)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]  # no temp files left
    decoded = decode(a)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(float) - frames).mean() < 2.0
    with av.open(str(a)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 12


def test_encode_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even width and height"):
        encode_video(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "odd.mp4", fps=8)
    with pytest.raises(ValueError, match="uint8"):
        encode_video(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "f.mp4", fps=8)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        encode_video(np.zeros((16, 16, 3), np.uint8), tmp_path / "s.mp4", fps=8)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- renderer


def test_render_video_shape_and_arguments():
    frames = syn.render_video(0, np.random.default_rng(0), TINY)
    assert frames.shape == (TINY.num_frames, TINY.size, TINY.size, 3) and frames.dtype == np.uint8
    assert len(syn.CLASSES) >= 10 and len(set(syn.CLASSES)) == len(syn.CLASSES)
    with pytest.raises(ValueError, match="label"):
        syn.render_video(-1, np.random.default_rng(0), TINY)
    with pytest.raises(ValueError, match="label"):
        syn.render_video(len(syn.CLASSES), np.random.default_rng(0), TINY)
    with pytest.raises(ValueError, match="domain"):
        syn.render_video(0, np.random.default_rng(0), TINY, domain="C")


@pytest.mark.parametrize("domain", ["A", "B"])
def test_single_frame_carries_no_class_information(domain):
    """Scene and start pose are drawn before the motion: the first frame is the same for every class."""
    cfg = dataclasses.replace(TINY, size=48, num_frames=6)
    for seed in range(4):
        videos = [syn.render_video(c, np.random.default_rng(seed), cfg, domain=domain) for c in range(len(syn.CLASSES))]
        for v in videos[1:]:
            np.testing.assert_array_equal(v[0], videos[0][0])
        # ...while the motion makes the last frames differ between classes.
        assert len({v[-1].tobytes() for v in videos}) == len(syn.CLASSES)


def test_direction_pairs_have_the_same_position_statistics():
    """Start positions are uniform for every class, so left and right movers start alike on average."""
    cfg = dataclasses.replace(TINY, size=48, num_frames=4, max_distractors=0, occlusion_prob=0.0)

    def darkest_column(label: int, seed: int) -> float:
        first = syn.render_video(label, np.random.default_rng(seed), cfg)[0].astype(float).mean(-1)
        return float(np.argmin(first.mean(0)))  # domain A actors are darker than the background

    left = [darkest_column(syn.CLASSES.index("move_left"), s) for s in range(40)]
    right = [darkest_column(syn.CLASSES.index("move_right"), s + 1000) for s in range(40)]
    # Uniform on 48 columns: sd of a mean of 40 is ~2.2 px; both should sit near the middle.
    assert abs(np.mean(left) - 23.5) < 8 and abs(np.mean(right) - 23.5) < 8


def test_motions_move_the_actor_as_named():
    cfg = dataclasses.replace(TINY, size=64, num_frames=8, max_distractors=0, occlusion_prob=0.0,
                              max_noise_std=0.0, jitter_px=0.0)

    def traj(name: str):
        scene_seed, motion_seed, _ = np.random.default_rng(7).integers(0, 2**63, size=3)
        scene = syn_world._draw_scene(np.random.default_rng(scene_seed), cfg, "A")
        return syn_world._actor_trajectory(syn.CLASSES.index(name), np.random.default_rng(motion_seed), scene, cfg)

    x, y, angle, radius = traj("move_left")
    assert np.all(np.diff(x) < 0) and np.all(np.diff(y) == 0)
    x, y, angle, radius = traj("move_down")
    assert np.all(np.diff(y) > 0)
    assert np.all(np.diff(traj("rotate_clockwise")[2]) > 0) and np.all(np.diff(traj("rotate_counterclockwise")[2]) < 0)
    assert np.all(np.diff(traj("grow")[3]) > 0) and np.all(np.diff(traj("shrink")[3]) < 0)
    y = traj("fall_and_bounce")[1]
    assert y.argmax() not in (0, len(y) - 1)  # falls, then bounces back up


# ----------------------------------------------------------------------------- generate


def test_manifest_columns_splits_and_classes(tiny_dataset):
    header = (tiny_dataset / "manifest.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    rows = read_manifest(tiny_dataset)
    assert splits(rows) == {k: v for k, v in TINY.split_sizes().items()}
    n = len(syn.CLASSES)
    for split in ("train", "val", "test", "shift_train", "shift_val", "shift_test"):
        split_rows = [r for r in rows if r.split == split]
        assert sorted(r.label for r in split_rows) == list(range(n))
        assert all(r.label_name == syn.CLASSES[r.label] for r in split_rows)
        assert all(r.path == f"videos/{split}/{r.label_name}/{Path(r.path).name}" for r in split_rows)
        assert {r.domain for r in split_rows} == {"B" if split.startswith("shift") else "A"}
    unlabeled = [r for r in rows if r.split == "unlabeled"]
    assert all(r.label == -1 and r.path.startswith("videos/unlabeled/") for r in unlabeled)
    for r in rows:
        assert (tiny_dataset / r.path).is_file()
        assert (r.num_frames, r.width, r.height, r.fps, r.codec) == (8, 32, 32, TINY.fps, "h264")
    info = json.loads((tiny_dataset / "dataset.json").read_text())
    assert info["preset"] == "tiny" and info["seed"] == 3 and info["classes"] == syn.CLASSES
    assert info["config"]["size"] == 32 and info["generator_version"] == syn.GENERATOR_VERSION
    assert [p.name for p in tiny_dataset.parent.iterdir()] == ["tiny"]  # temp folder removed


def test_decoded_frames_match_the_renderer(tiny_dataset):
    rows = read_manifest(tiny_dataset)
    for row in [rows[0], rows[-1], next(r for r in rows if r.split == "unlabeled")]:
        index = int(Path(row.path).stem.rsplit("_", 1)[1])
        rng = syn.video_rng(3, row.split, index)
        label = syn.video_label(row.split, index, rng)
        assert row.label in (label, -1)
        expected = syn.render_video(label, rng, TINY, domain=row.domain)
        decoded = decode(tiny_dataset / row.path)
        assert decoded.shape == expected.shape
        assert np.abs(decoded.astype(float) - expected).mean() < 6.0, row.path


def test_same_seed_same_dataset_regardless_of_workers(tiny_dataset, tmp_path):
    again = syn.generate(tmp_path / "again", preset=TINY, seed=3, workers=2, progress=False)
    rows, rows_again = read_manifest(tiny_dataset), read_manifest(again)
    assert rows == rows_again
    # every file byte-identical (encode_video is CPU- and run-independent), so decoded frames are too
    differ = [r.path for r in rows if (tiny_dataset / r.path).read_bytes() != (tmp_path / "again" / r.path).read_bytes()]
    assert not differ, f"{len(differ)} of {len(rows)} videos differ: {differ[:5]}"
    for row in rows[::7]:
        np.testing.assert_array_equal(decode(tiny_dataset / row.path), decode(tmp_path / "again" / row.path))
    other = syn.generate(tmp_path / "other", preset=TINY, seed=4, workers=1, progress=False)
    rows_other = read_manifest(other)
    assert [r.label for r in rows_other if r.split != "unlabeled"] == [r.label for r in rows if r.split != "unlabeled"]
    assert not np.array_equal(decode(tiny_dataset / rows[0].path), decode(tmp_path / "other" / rows[0].path))


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = syn.render_video

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(syn_generator, "render_video", failing)
    with pytest.raises(KeyboardInterrupt):
        syn.generate(tmp_path / "data", preset=TINY, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_non_empty_folder_and_keeps_a_concurrent_result(tiny_dataset, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        syn.generate(tiny_dataset, preset=TINY, progress=False)
    # Another run finished first: our finished copy is discarded, theirs is kept.
    theirs = (tiny_dataset / "manifest.csv").read_bytes()
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "manifest.csv").write_text("not used\n")
    assert syn_generator._move_into_place(ours, tiny_dataset, overwrite=False) is False
    assert (tiny_dataset / "manifest.csv").read_bytes() == theirs


# ----------------------------------------------------------------------------- ensure_dataset


def test_ensure_dataset_generates_reuses_and_refuses(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(syn.PRESETS, "tiny", TINY)
    data_dir = tmp_path / "data"
    manifest = syn.ensure_dataset(data_dir, preset="tiny", seed=1, workers=1, progress=False)
    assert manifest == data_dir / "manifest.csv" and manifest.is_file()
    out = capsys.readouterr().out
    assert f"no dataset at {data_dir}: generating the synthetic tiny dataset (seed 1)" in out

    def no_generation(*args, **kwargs):
        raise AssertionError("ensure_dataset regenerated an existing dataset")

    monkeypatch.setattr(syn_generator, "generate", no_generation)
    assert syn.ensure_dataset(data_dir, preset="tiny", seed=1) == manifest
    assert capsys.readouterr().out == ""

    foreign = tmp_path / "my_videos"
    foreign.mkdir()
    (foreign / "clip.mp4").write_bytes(b"")
    with pytest.raises(FileExistsError, match="prepare_folder.py"):
        syn.ensure_dataset(foreign, preset="tiny")
    assert [p.name for p in foreign.iterdir()] == ["clip.mp4"]


def test_ensure_dataset_fills_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(syn.PRESETS, "tiny", dataclasses.replace(TINY, train_per_class=0, val_per_class=0,
                                                                 test_per_class=0, unlabeled=2))
    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = syn.ensure_dataset(empty, preset="tiny", workers=1, progress=False)
    assert len(read_manifest(manifest)) == 2 + 3 * len(syn.CLASSES)


def test_presets_sizes():
    smoke, cpu = syn.PRESETS["smoke"], syn.PRESETS["cpu"]
    assert smoke.num_frames == 16 and sum(smoke.split_sizes().values()) < 250
    assert (cpu.size, cpu.num_frames, cpu.fps) == (64, 32, 16.0)
    assert cpu.split_sizes()["train"] == 100 * len(syn.CLASSES) and cpu.unlabeled == 3000
    assert syn.PRESETS["full"].size > cpu.size
    with pytest.raises(ValueError, match="size"):
        dataclasses.replace(cpu, size=33)
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        syn.resolve_config("huge")


# ----------------------------------------------------------------------------- CLI


def test_make_synthetic_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_synthetic", project_root() / "data_scripts" / "make_synthetic.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "cli"
    tiny = ["--set", "size=32", "--set", "num_frames=6", "--set", "unlabeled=3", "--set", "train_per_class=1",
            "--set", "val_per_class=0", "--set", "test_per_class=0", "--set", "shift_train_per_class=0",
            "--set", "shift_val_per_class=0", "--set", "shift_test_per_class=1"]
    args = ["--out", str(out), "--preset", "smoke", "--seed", "2", "--workers", "1", "--quiet", *tiny]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "train" in text and "unlabeled" in text and "shift_test" in text and "12 classes" in text
    first = (out / "manifest.csv").read_bytes()
    assert cli.main(args) == 0
    assert "already holds a complete dataset" in capsys.readouterr().out
    assert cli.main([*args, "--force", "--seed", "5"]) == 0
    assert json.loads((out / "dataset.json").read_text())["seed"] == 5
    assert (out / "manifest.csv").read_bytes() == first  # same labels and paths, new videos
    assert [p.name for p in tmp_path.iterdir()] == ["cli"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli.main(["--out", str(tmp_path / "mine"), "--force", "--quiet", *tiny]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit):
        cli.main(["--out", str(out), "--set", "colour=red"])


def test_make_synthetic_default_folder_is_the_notebooks_one(capsys):
    from vidlab.notebook import default_data_dir

    spec = importlib.util.spec_from_file_location("make_synthetic", project_root() / "data_scripts" / "make_synthetic.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.default_out("cpu") == default_data_dir("cpu") and cli.default_out("smoke") == default_data_dir("smoke")
    assert cli.default_out("full") == default_data_dir("gpu")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "data/synthetic-cpu" in text and "synthetic_cpu" not in text


def test_session_smoke_dataset_equals_a_one_worker_generation(smoke_data, tmp_path):
    """The smoke dataset the notebooks get (made by a worker pool) is byte-identical to the same
    videos made in this process, one by one: the 1-worker and 2-worker datasets are the same."""
    info = syn.read_dataset_info(smoke_data)
    cfg = syn.resolve_config(info["preset"])
    rows = read_manifest(smoke_data)
    for row in rows[:: max(1, len(rows) // 24)]:
        index = int(Path(row.path).stem.rsplit("_", 1)[1])
        made = syn_generator._make_one(syn_generator._Job(row.split, index), cfg=cfg, seed=info["seed"], root=str(tmp_path))
        assert made == row
        assert (tmp_path / row.path).read_bytes() == (smoke_data / row.path).read_bytes(), row.path


_RENDER_DIGEST = """
import hashlib
import vidlab.data.synthetic as syn
h = hashlib.sha256()
for split in ("train", "shift_train", "unlabeled"):
    for index in range(40):
        rng = syn.video_rng(0, split, index)
        h.update(syn.render_video(syn.video_label(split, index, rng), rng, syn.PRESETS["smoke"],
                                  domain=syn.SPLITS[split][0]).tobytes())
print(h.hexdigest())
"""


def test_rendered_frames_do_not_depend_on_the_cpu():
    """Render in two processes: one as this CPU allows, one with numpy's SIMD dispatch off and
    OpenBLAS on its oldest x86-64 kernels (a machine without AVX2/AVX-512); same bytes."""
    import os
    import subprocess
    import sys

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__ as dispatch
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__ as dispatch
    old_cpu = {**os.environ, "OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": " ".join(dispatch)}
    procs = [subprocess.Popen([sys.executable, "-c", _RENDER_DIGEST], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for env in (dict(os.environ), old_cpu)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert outs[0][0] == outs[1][0], "rendered frames differ between CPU feature levels"
