"""encode_video is reproducible: same frames -> same bytes, in one process, in forked workers,
and whatever SIMD code x264 picks for the CPU (simulated by masking x264's ``asm`` flags)."""
from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np

import vidlab.data.synthetic as syn
from vidlab.data.encode import encode_video

SMOKE = syn.PRESETS["smoke"]  # 64x64, 16 frames: the size at which x264 showed run-to-run changes
NUM_VIDEOS = 8


def _videos() -> list[np.ndarray]:
    out = []
    for index in range(NUM_VIDEOS):
        rng = syn.video_rng(0, "train", index)
        out.append(syn.render_video(syn.video_label("train", index, rng), rng, SMOKE))
    return out


def _digest(frames: np.ndarray, path: Path, options: dict[str, str] | None = None) -> str:
    opts = {"preset": SMOKE.encoder_preset, **(options or {})}
    encode_video(frames, path, SMOKE.fps, crf=SMOKE.crf, options=opts)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encode_all(folder: str, options: dict[str, str] | None = None) -> list[str]:
    return [_digest(v, Path(folder) / f"{k}.mp4", options) for k, v in enumerate(_videos())]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def test_same_frames_same_bytes_within_one_process(tmp_path):
    videos = _videos()
    for k, frames in enumerate(videos):
        digests = {_digest(frames, tmp_path / f"{k}-{rep}.mp4") for rep in range(5)}
        assert len(digests) == 1, f"video {k}: {len(digests)} different encodings of the same frames"


def test_same_bytes_in_forked_workers(tmp_path):
    folders = []
    for name in ("main", "w0", "w1", "w2"):
        (tmp_path / name).mkdir()
        folders.append(str(tmp_path / name))
    here = _encode_all(folders.pop(0))
    with multiprocessing.get_context("fork").Pool(2) as pool:  # workers run numpy and PyAV only
        results = pool.map(_encode_all, folders)
    assert all(r == here for r in results)


def test_same_bytes_whatever_simd_the_cpu_offers(tmp_path):
    """x264 picks SIMD kernels by CPU; masking its ``asm`` flags stands in for other machines
    (with and without AVX-512). Only flag sets this CPU supports are tried."""
    flags = _cpu_flags()
    levels = {"native": None, "no-asm": "0", "sse2": "MMX2,SSE,SSE2"}
    if {"avx2", "fma", "bmi2"} <= flags:
        levels["avx2"] = "MMX2,SSE,SSE2,SSE3,SSSE3,SSE4.1,SSE4.2,LZCNT,AVX,FMA3,BMI1,BMI2,AVX2"
    digests = {}
    for name, asm in levels.items():
        (tmp_path / name).mkdir()
        digests[name] = _encode_all(str(tmp_path / name), None if asm is None else {"x264-params": f"asm={asm}"})
    assert len({tuple(d) for d in digests.values()}) == 1, {k: v[:2] for k, v in digests.items()}


def test_user_x264_params_are_kept(tmp_path):
    frames = _videos()[0]
    a = _digest(frames, tmp_path / "a.mp4", {"x264-params": "keyint=4"})
    b = _digest(frames, tmp_path / "b.mp4")
    assert a != b  # the user's x264 setting took effect alongside the reproducibility ones
