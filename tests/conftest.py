"""Shared fixtures: the smoke-size synthetic dataset (generated once per test session in a
temporary folder, reused by the unit tests and the notebooks), so tests never write into the
repository's own ``data/`` or ``runs/``."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The synthetic dataset at the smoke preset, generated once per session in a temporary folder
    (notebooks get it as ``DATA_DIR``)."""
    from vidlab.data.synthetic import ensure_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic-smoke"
    ensure_dataset(root, preset="smoke", seed=0)
    return root


@pytest.fixture(autouse=True)
def _one_thread_per_test(monkeypatch):
    """Keep unit tests from fighting over the two cores (notebooks set their own threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    yield
