"""Why encode_video passes x264 ``cpu-independent``: same frames -> same bytes, or not.

    .venv/bin/python benchmarks/encoder_reproducibility.py [--videos 24] [--repeats 5]

Renders smoke-preset synthetic videos and encodes each one with libx264 (crf and preset of
the synthetic dataset) under each SIMD level x264 may pick on other machines (simulated by
masking x264's ``asm`` flags to what this CPU supports), with and without ``cpu-independent``,
and repeatedly in this process. Prints, for each setting, how many videos got more than one
distinct bitstream. All figures come from this run.
"""
from __future__ import annotations

import argparse
import hashlib
import io
from fractions import Fraction
from pathlib import Path

import av

import vidlab.data.synthetic as syn

LEVELS = {
    "native": None,
    "avx2": "MMX2,SSE,SSE2,SSE3,SSSE3,SSE4.1,SSE4.2,LZCNT,AVX,FMA3,BMI1,BMI2,AVX2",
    "sse2": "MMX2,SSE,SSE2",
    "no-asm": "0",
}


def _cpu_flags() -> set[str]:
    try:
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


def encode(frames, fps: float, x264_params: str, cfg: syn.SyntheticConfig) -> str:
    """SHA-256 of the H.264 packets of ``frames`` (the mp4 wrapper adds nothing that varies)."""
    buf = io.BytesIO()
    digest = hashlib.sha256()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(cfg.crf), "preset": cfg.encoder_preset, "x264-params": x264_params}
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1) / Fraction(fps)
            for packet in stream.encode(frame):
                digest.update(bytes(packet))
                container.mux(packet)
        for packet in stream.encode():
            digest.update(bytes(packet))
            container.mux(packet)
    return digest.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = syn.PRESETS["smoke"]
    videos = []
    for index in range(args.videos):
        rng = syn.video_rng(0, "train", index)
        videos.append(syn.render_video(syn.video_label("train", index, rng), rng, cfg))
    flags = _cpu_flags()
    levels = {k: v for k, v in LEVELS.items() if k != "avx2" or {"avx2", "fma", "bmi2"} <= flags}
    print(f"# {args.videos} smoke videos (64x64, 16 frames), libx264 crf {cfg.crf} preset {cfg.encoder_preset}, "
          f"threads=1; SIMD levels tried: {', '.join(levels)}; AVX-512 on this CPU: {'avx512f' in flags}")
    for independent in (False, True):
        base = "threads=1" + (":cpu-independent=1" if independent else "")
        name = "cpu-independent" if independent else "default"
        same_run = sum(len({encode(v, cfg.fps, base, cfg) for _ in range(args.repeats)}) > 1 for v in videos)
        across = 0
        for v in videos:
            digests = {encode(v, cfg.fps, base + (f":asm={asm}" if asm is not None else ""), cfg)
                       for asm in levels.values()}
            across += len(digests) > 1
        print(f"{name:<16} videos with differing bitstreams: {same_run}/{len(videos)} over {args.repeats} "
              f"encodes in one process, {across}/{len(videos)} across SIMD levels")


if __name__ == "__main__":
    main()
