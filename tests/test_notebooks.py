"""Every notebook executed with papermill at the smoke preset, with checks on what it recorded."""
from __future__ import annotations

import math

import pytest

from vidlab import run as runner

pytestmark = pytest.mark.notebooks


def _check_01(m: dict) -> None:
    assert m["num_classes"] >= 10
    assert m["num_videos"] > 0
    assert m["demo_skipped"] == 2  # the truncated file and the playlist, reported not replaced
    assert m["byo_accepted"] > 0
    for key in ("decode_clips_per_s", "loader_clips_per_s"):
        assert m[key] > 0 and math.isfinite(m[key])
    assert math.isclose(m["loader_vs_decode"], m["loader_clips_per_s"] / m["decode_clips_per_s"], rel_tol=1e-6)


CHECKS = {
    "01_data_preparation": _check_01,
}


@pytest.mark.parametrize("path", runner.list_notebooks(), ids=lambda p: p.stem)
def test_notebook_smoke(path, smoke_data, tmp_path):
    result = runner.run_notebook(path, tmp_path, preset="smoke")
    assert result.status == "ok", f"{path.name} failed: {result.error} (executed copy: {result.executed})"
    assert path.stem in CHECKS, f"add checks for {path.stem} to CHECKS"
    CHECKS[path.stem](result.metrics)
    assert list(result.output_dir.glob("*.png")), "a notebook saves its plots beside metrics.json"
