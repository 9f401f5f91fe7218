"""Every benchmark script imports and answers ``--help`` (its measurements run outside the test suite)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_every_benchmark_is_listed_in_the_readme():
    readme = (BENCHMARKS[0].parent / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in BENCHMARKS if f"`{p.name}`" not in readme]
    assert not missing, f"benchmarks/README.md does not list {missing}"


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_and_shows_help(path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__ and callable(getattr(module, "main", None)), f"{path.name} needs a docstring and main()"
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    assert "usage:" in capsys.readouterr().out
