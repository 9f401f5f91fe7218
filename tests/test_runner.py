"""The curriculum runner: parameters, progress, time limits, HTML copies, summary, lesson check."""
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vidlab import check, execute
from vidlab import run as runner
from vidlab.presets import Lesson


# what vl.record does, without importing torch in every test kernel (each start costs seconds)
RECORD = """import json, pathlib
def record(name, value, out):
    path = pathlib.Path(out) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[name] = value
    path.write_text(json.dumps(metrics))"""


def _nb(path: Path, body: str, imports: str = RECORD) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "vidlab", "display_name": "Python (vidlab)", "language": "python"}
    params = new_code_cell('PRESET = "cpu"  # preset\nOUTPUT_DIR = None  # out\nSEED = 0  # seed\nSCALE = 2  # factor')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell("# t"), new_code_cell(imports), params, new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def books(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d / "01_ok.ipynb", "record('answer', 21 * SCALE, OUTPUT_DIR)\nrecord('preset', PRESET, OUTPUT_DIR)")
    _nb(d / "02_broken.ipynb", "x = 1\n\nraise ValueError('boom in cell')")
    _nb(d / "03_ok_too.ipynb", "record('seed', SEED, OUTPUT_DIR)")
    monkeypatch.setattr(runner, "notebooks_dir", lambda: d)
    return d


def _answer_lesson(monkeypatch, threshold):
    """Notebook 01_ok's lesson at the smoke preset: its recorded answer is at least ``threshold``."""
    table = {"01_ok": (Lesson("answer", ">=", threshold, why="the answer is big", presets=("smoke",)),)}
    monkeypatch.setattr(check, "default_lessons", lambda name: table.get(name, ()))


def test_run_all_reports_failure_and_continues(books, tmp_path, capsys, monkeypatch):
    _answer_lesson(monkeypatch, 50)
    out = tmp_path / "runs" / "x"
    results = runner.run_curriculum(preset="smoke", out=out, params={"SCALE": 3})
    status = {r.name: r.status for r in results}
    assert status == {"01_ok": "ok", "02_broken": "failed", "03_ok_too": "ok"}
    assert json.loads((out / "01_ok" / "metrics.json").read_text()) == {"answer": 63, "preset": "smoke"}
    broken = next(r for r in results if r.name == "02_broken")
    # the cell is named by its number in the executed copy (papermill adds the parameters cell) and its first line
    assert broken.error.startswith("cell 5 (`x = 1`): ValueError: boom in cell"), broken.error
    summary = (out / "summary.md").read_text()
    assert "| 01_ok | ok |" in summary and "answer=63" in summary and "| 02_broken | failed |" in summary
    assert "[html](01_ok.html)" in summary and "[notebook](01_ok.ipynb)" in summary and "(01_ok/)" in summary
    assert "`answer >= 50`" in summary and "| 63 | >= 50 | pass |" in summary
    assert (out / "01_ok.ipynb").exists()
    html = (out / "02_broken.html").read_text()
    assert "<html" in html and "boom in cell" in html  # the failed run is rendered too, with its traceback
    printed = capsys.readouterr().out
    assert "2 of 3 notebooks ok" in printed and "1 of 1 lessons hold" in printed
    assert re.search(r"\[01_ok\] cell 5/5 \(0:\d\d\) record\('answer', 21 \* SCALE, OUTPUT_DIR\)", printed)  # progress
    info = json.loads((out / "summary.json").read_text())
    assert "Kernel: kernelspec" in summary and info["kernel"] in ("vidlab", "python3")
    assert info["preset"] == "smoke" and [n["notebook"] for n in info["notebooks"]] == ["01_ok", "02_broken", "03_ok_too"]


def test_cell_timeout_names_the_cell(books, tmp_path):
    slow = _nb(books / "04_slow.ipynb", "import time\ntime.sleep(60)", imports="x = 1")
    res = runner.run_notebook(slow, tmp_path, preset="smoke", cell_timeout=3, html=False)
    assert res.status == "failed"
    assert res.error.startswith("cell 5 (`import time`) still running after 3 s") and "--cell-timeout" in res.error
    assert res.seconds < 40


def test_only_unknown_parameter_and_no_empty_folders(books, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(SystemExit, match="unknown parameter.*take SCALE, SEED \\(PRESET: --preset"):
        runner.run_curriculum(preset="smoke", out=out, params={"NOPE": 1})
    with pytest.raises(SystemExit, match="no notebook numbered 07"):
        runner.run_curriculum(preset="smoke", out=out, only="07")
    with pytest.raises(SystemExit, match="OUTPUT_DIR: use --out"):
        runner.main(["run", "--preset", "smoke", "--out", str(out), "-p", "OUTPUT_DIR", "elsewhere"])
    with pytest.raises(ValueError, match="unknown parameter.*NOPE"):
        runner.run_notebook(books / "01_ok.ipynb", out, preset="smoke", params={"NOPE": 1})
    assert not out.exists()  # refused invocations create nothing
    results = runner.run_curriculum(preset="smoke", out=out, only="3", html=False)
    assert [r.name for r in results] == ["03_ok_too"] and not (out / "03_ok_too.html").exists()


def test_parse_params():
    assert runner.parse_param("EPOCHS=3") == ("EPOCHS", 3)
    assert runner.parse_param("DATA_DIR=/tmp/x") == ("DATA_DIR", "/tmp/x")
    assert runner.parse_param("LR=1e-3") == ("LR", 1e-3)
    with pytest.raises(SystemExit):
        runner.parse_param("novalue")
    groups = [["A=1"], ["B", "2"], ["C=x", "D=[1, 2]"], ["E", "a=b"], ["F", "None"]]
    assert runner.parse_params(groups) == {"A": 1, "B": 2, "C": "x", "D": [1, 2], "E": "a=b", "F": None}
    with pytest.raises(SystemExit, match="KEY=VALUE or KEY VALUE"):
        runner.parse_params([["A", "B", "C"]])


def test_cli_params_preset_and_exit_code(books, tmp_path):
    out = tmp_path / "c"
    # papermill's spellings: -p KEY VALUE and -p PRESET ...
    assert runner.main(["run", "-p", "PRESET", "smoke", "-p", "SCALE", "5", "--only", "01", "--out", str(out)]) == 0
    assert json.loads((out / "01_ok" / "metrics.json").read_text()) == {"answer": 105, "preset": "smoke"}
    with pytest.raises(SystemExit, match="contradicts --preset"):
        runner.main(["run", "--preset", "cpu", "-p", "PRESET=smoke", "--only", "01", "--out", str(out)])
    assert runner.main(["run", "--preset", "smoke", "--only", "02", "--out", str(tmp_path / "d")]) == 1


def test_run_check_fails_when_a_lesson_no_longer_holds(books, tmp_path, monkeypatch, capsys):
    _answer_lesson(monkeypatch, 50)
    out = str(tmp_path / "e")
    # answer 42 < 50: the run itself succeeds, its table says FAIL, and --check fails the command
    assert runner.main(["run", "--preset", "smoke", "--only", "01", "--out", out, "--no-html", "--check"]) == 1
    printed = capsys.readouterr().out
    assert "| 01_ok | `answer >= 50` | 42 | >= 50 | **FAIL** |" in printed and "0 of 1 lessons hold" in printed
    assert "1 of 1 notebooks ok" in printed
    # the check alone, on the folder the run left (preset read from summary.json)
    assert runner.main(["check", "--out", out]) == 1
    _answer_lesson(monkeypatch, 42)
    assert runner.main(["check", "--out", out]) == 0
    assert "1 of 1 lessons hold" in capsys.readouterr().out


def _metrics(out: Path, name: str, **metrics) -> None:
    (out / name).mkdir(parents=True)
    (out / name / "metrics.json").write_text(json.dumps(metrics))


def test_check_synthetic_metrics():
    lessons = (
        Lesson("tsm_top1", ">=", "tsn_top1", 0.3),
        Lesson("tsm_top1", ">=", 0.85),
        Lesson("curve.b", ">", 0.5),
        Lesson("loss", "<", 1.0),
    )
    got = [check.evaluate(lesson, {"tsm_top1": 0.9, "tsn_top1": 0.65, "curve": {"b": 0.7}, "loss": "nan"}) for lesson in lessons]
    assert [g.status for g in got] == ["fail", "pass", "pass", "fail"]  # 0.9 < 0.65 + 0.3; a NaN loss never passes
    assert got[0].bound == pytest.approx(0.95) and got[0].detail == "tsn_top1 = 0.65"
    assert check.evaluate(lessons[0], {"tsm_top1": 0.9}).status == "missing"
    assert check.evaluate(lessons[1], {"tsm_top1": "n/a"}).status == "missing"  # not a number
    assert check.evaluate(Lesson("same", ">=", 1), {"same": True}).ok  # a recorded check counts as 1
    assert check.evaluate(Lesson("same", ">=", 1), {"same": False}).status == "fail"
    assert check.describe(lessons[0]) == "tsm_top1 >= tsn_top1 + 0.3"
    with pytest.raises(ValueError, match="op '=='"):
        check.evaluate(Lesson("a", "==", 1.0), {"a": 1.0})


def test_check_real_lessons_on_a_synthetic_run(tmp_path, capsys):
    """The curriculum's own LESSONS, read from a folder of synthetic metrics.json files."""
    out = tmp_path / "cpu"
    _metrics(out, "01_data_preparation", loader_vs_decode=0.9)
    _metrics(out, "04_transfer_learning", tsn_top1=0.2, tsm_top1=0.9, inflated_top1=0.9, transfer_top1=0.8, scratch_b_top1=0.6)
    assert runner.main(["check", "--out", str(out)]) == 0  # preset from the folder's name
    table = capsys.readouterr().out
    assert "`tsm_top1 >= tsn_top1 + 0.3`" in table and "**FAIL**" not in table and "5 of 5 lessons hold" in table
    (out / "04_transfer_learning" / "metrics.json").write_text(json.dumps({"tsn_top1": 0.7, "tsm_top1": 0.9}))
    results = runner.check_run(out)
    assert {(r.lesson.metric, r.status) for r in results if r.notebook == "04_transfer_learning"} == {
        ("tsm_top1", "fail"), ("tsm_top1", "pass"), ("inflated_top1", "missing"), ("transfer_top1", "missing")}
    assert runner.main(["check", "--out", str(out), "--only", "1"]) == 0
    assert runner.main(["check", "--out", str(out)]) == 1
    assert check.check_folder(out, "smoke") == []  # no thresholds at the smoke preset
    with pytest.raises(SystemExit, match="no notebook run"):
        runner.check_run(tmp_path / "nothing", "cpu")


def test_every_curriculum_notebook_has_lessons():
    from vidlab.presets import lessons_for

    for path in runner.list_notebooks():
        try:
            found = lessons_for(path.stem)
        except KeyError:  # a notebook whose preset table is not registered yet
            continue
        assert found and all(isinstance(lesson, Lesson) and lesson.op in check.OPS for lesson in found), path.stem
        assert any("cpu" in lesson.presets for lesson in found), path.stem


def test_kernel_choice(monkeypatch):
    name, info = execute.pick_kernel()
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("vidlab")
        expected = "vidlab" if spec.argv[0] == sys.executable else "python3"
    except NoSuchKernel:
        expected = "python3"
    assert name == expected and info
    monkeypatch.setattr(execute, "KERNEL", "no-such-kernel-here")
    name, info = execute.pick_kernel()
    assert name == "python3" and "not installed" in info and sys.executable in info
