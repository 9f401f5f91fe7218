"""Every process pool of the data pipeline works after the parent ran multi-threaded torch code.

Reproduces the hang of forked workers in libgomp: a few ``F.interpolate`` / matmul calls on
two threads, then ``DecodedVideos(workers=2)``, ``prepare_folder(workers=2)`` and
``generate(workers=2)``. Each runs in a subprocess with a timeout, so a hang fails the test
instead of blocking the suite.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from vidlab.data.workers import process_pool, start_method

SCRIPT = textwrap.dedent(
    """
    import dataclasses, shutil, sys
    from pathlib import Path
    import torch, torch.nn.functional as F
    import vidlab.data.synthetic as syn
    from vidlab.data.cache import DecodedVideos
    from vidlab.data.prepare import prepare_folder

    root = Path(sys.argv[1])
    tiny = dataclasses.replace(
        syn.PRESETS["smoke"], name="tiny", size=32, num_frames=8, train_per_class=1, val_per_class=0,
        test_per_class=0, unlabeled=0, shift_train_per_class=0, shift_val_per_class=0, shift_test_per_class=0)
    syn.generate(root / "before", preset=tiny, seed=0, workers=1, progress=False)

    torch.set_num_threads(2)  # what a notebook kernel has done by its second section
    x = torch.rand(4, 3, 64, 64)
    for _ in range(3):
        F.interpolate(x, size=(40, 40), mode="bilinear", antialias=True)
        torch.rand(256, 256) @ torch.rand(256, 256)

    videos = DecodedVideos(root / "before", "train", size=24, workers=2, cache_dir=None, progress=False)
    assert len(videos) == 12 and videos.frames[0].shape[1:] == (24, 24, 3), videos.frames[0].shape
    print("cache ok", flush=True)
    src = root / "src"
    for row in videos.rows:
        (src / row.label_name).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "before" / row.path, src / row.label_name / Path(row.path).name)
    report = prepare_folder(src, root / "prepared", short_side=16, workers=2, progress=False)
    assert report.accepted == 12, report.summary()
    print("prepare ok", flush=True)
    syn.generate(root / "after", preset=tiny, seed=0, workers=2, progress=False)
    same = all((root / "before" / r.path).read_bytes() == (root / "after" / r.path).read_bytes() for r in videos.rows)
    assert same, "the generator's pool wrote other bytes"
    print("generate ok", flush=True)
    """
)


def test_pools_work_after_multithreaded_torch(tmp_path):
    # own process group, so a hung run's worker processes are ended with it
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"a worker pool hung after torch ran on 2 threads; finished before the hang: {out.split()}")
    assert proc.returncode == 0, out + err
    assert out.split() == ["cache", "ok", "prepare", "ok", "generate", "ok"]


def _threads(_: int) -> int:
    import torch

    return torch.get_num_threads()


def test_workers_run_single_threaded():
    with process_pool(2) as pool:
        assert list(pool.map(_threads, range(4))) == [1, 1, 1, 1]
    assert start_method() == ("fork" if sys.platform.startswith("linux") else "spawn")
    with pytest.raises(ValueError, match="workers"):
        with process_pool(0):
            pass
