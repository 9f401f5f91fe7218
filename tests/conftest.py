"""Shared fixtures: the smoke-size synthetic dataset (generated once, reused by notebooks)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def smoke_data() -> Path:
    """The synthetic dataset at the smoke preset, in the default place the notebooks use."""
    from vidlab.data.synthetic import ensure_dataset
    from vidlab.notebook import default_data_dir

    root = default_data_dir("smoke")
    ensure_dataset(root, preset="smoke", seed=0)
    return root


@pytest.fixture(autouse=True)
def _one_thread_per_test(monkeypatch):
    """Keep unit tests from fighting over the two cores (notebooks set their own threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    yield
