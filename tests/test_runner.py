"""The curriculum runner: parameters, summary, failures reported without stopping the rest."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vidlab import run as runner


def _nb(path: Path, body: str) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('PRESET = "cpu"  # preset\nOUTPUT_DIR = None  # out\nSEED = 0  # seed\nSCALE = 2  # factor')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# t"), new_code_cell("import vidlab as vl"), params, new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def books(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d / "01_ok.ipynb", "vl.record('answer', 21 * SCALE, OUTPUT_DIR)\nvl.record('preset', PRESET, OUTPUT_DIR)")
    _nb(d / "02_broken.ipynb", "raise ValueError('boom in cell')")
    _nb(d / "03_ok_too.ipynb", "vl.record('seed', SEED, OUTPUT_DIR)")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: d)
    return d


def test_run_all_reports_failure_and_continues(books, tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    results = runner.run_curriculum(preset="smoke", out=out, params={"SCALE": 3})
    status = {r.name: r.status for r in results}
    assert status == {"01_ok": "ok", "02_broken": "failed", "03_ok_too": "ok"}
    assert json.loads((out / "01_ok" / "metrics.json").read_text()) == {"answer": 63, "preset": "smoke"}
    broken = next(r for r in results if r.name == "02_broken")
    assert "ValueError" in broken.error and "boom in cell" in broken.error and "cell" in broken.error
    summary = (out / "summary.md").read_text()
    assert "| 01_ok | ok |" in summary and "answer=63" in summary and "| 02_broken | failed |" in summary
    assert (out / "01_ok.ipynb").exists()
    assert "2 of 3 notebooks ok" in capsys.readouterr().out


def test_only_and_unknown_parameter(books, tmp_path):
    out = tmp_path / "o"
    results = runner.run_curriculum(preset="smoke", out=out, only="3")
    assert [r.name for r in results] == ["03_ok_too"]
    with pytest.raises(SystemExit, match="unknown parameter"):
        runner.run_curriculum(preset="smoke", out=out, params={"NOPE": 1})
    with pytest.raises(SystemExit, match="no notebook numbered 07"):
        runner.run_curriculum(preset="smoke", out=out, only="07")
    with pytest.raises(ValueError, match="unknown parameter.*NOPE"):
        runner.run_notebook(books / "01_ok.ipynb", out, preset="smoke", params={"NOPE": 1})


def test_parse_param():
    assert runner.parse_param("EPOCHS=3") == ("EPOCHS", 3)
    assert runner.parse_param("DATA_DIR=/tmp/x") == ("DATA_DIR", "/tmp/x")
    assert runner.parse_param("LR=1e-3") == ("LR", 1e-3)
    with pytest.raises(SystemExit):
        runner.parse_param("novalue")


def test_cli_exit_code(books, tmp_path):
    code = runner.main(["run", "--preset", "smoke", "--only", "01", "--out", str(tmp_path / "c")])
    assert code == 0
    assert runner.main(["run", "--preset", "smoke", "--only", "02", "--out", str(tmp_path / "d")]) == 1
