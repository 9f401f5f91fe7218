"""The pip route (pyproject.toml) and the conda route (environment.yml) install the same things,
and the notebooks are committed in the shape the conventions ask for."""
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(env_lines) if l.strip() == "- pip:")
    conda_pip = [l.strip()[2:] for l in env_lines[start + 1 :] if l.strip().startswith("- ")]
    assert sorted(map(_norm, conda_pip)) == sorted(map(_norm, deps))
    pins = {d.split("==")[0]: d.split("==")[1] for d in deps if "==" in d}
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    # every other pinned package installs beside that torch without pulling another one
    assert set(pins) == {"torch", "torchvision", "torchao", "onnx", "onnxscript", "onnxruntime", "torch-pruning"}


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_PARAMS = ("PRESET", "DATA_DIR", "OUTPUT_DIR", "SEED", "DEVICE")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs before committing"
    # the kernel `make` registers (Makefile: ipykernel install --sys-prefix --name vidlab), which has vidlab
    assert nb["metadata"]["kernelspec"] == {"display_name": "Python (vidlab)", "language": "python", "name": "vidlab"}
    assert '--name vidlab --display-name "Python (vidlab)"' in (ROOT / "Makefile").read_text()
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    src = "".join(params[0]["source"])
    names = []
    for line in src.splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*) = (.+?)  # \S.*", line)
        assert m, f"parameters cell line is not 'UPPER_NAME = literal  # comment': {line!r}"
        compile(m.group(2), "<param>", "eval")
        import ast

        ast.literal_eval(m.group(2))  # literals only, nothing computed
        names.append(m.group(1))
    for req in REQUIRED_PARAMS:
        assert req in names
    import papermill as pm

    assert sorted(pm.inspect_notebook(str(path))) == sorted(names), "papermill must see every parameter"
    sources = ["".join(c["source"]) for c in code]
    assert "import vidlab as vl" in "\n".join(sources)
    assert not any("sys.path" in s for s in sources)
    first_md = "".join(nb["cells"][0]["source"])
    assert first_md.startswith("# "), "first cell is the title"
    assert any("vl.record(" in s for s in sources)


def test_readme_quick_start_has_the_two_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    cmds = re.findall(r"^(make \w+)$", quick, flags=re.M)
    assert cmds == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
