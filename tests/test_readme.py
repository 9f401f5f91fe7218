"""README.md as a newcomer uses it: its python blocks run as written, its commands exist.

* ```python blocks run, in a fresh interpreter, from a temporary folder.
* ```bash blocks and inline `.venv/bin/...` / `make ...` commands: make targets and variables
  exist in the Makefile; `python -m vidlab ...` lines parse (and `run`'s parameters are checked
  against the notebooks) without executing; scripts exist and take the flags shown; the
  papermill line is run with ``--prepare-only`` in a temporary copy of the layout.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vidlab import run as runner
from vidlab.utils import project_root

ROOT = project_root()
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def commands() -> list[str]:
    """Every command line of the bash blocks and every inline `.venv/bin/...` or `make ...` span."""
    lines = []
    for block in blocks("bash"):
        lines += [line.split(" #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    lines += re.findall(r"`((?:\.venv/bin/|make )[^`]+)`", README)
    return lines


def makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*):", text, flags=re.M)), set(re.findall(r"^([A-Z]+) \?=", text, flags=re.M))


def test_readme_has_the_two_commands_and_a_first_result():
    assert "```bash\nmake run\nmake test\n```" in README
    assert "make run PRESET=smoke ONLY=01" in README
    assert blocks("python"), "the README shows the library in a python block"
    assert "## Quick start" in README and README.index("make run PRESET=smoke ONLY=01") < README.index("## The curriculum")


def test_curriculum_table_lists_the_notebooks():
    for path in runner.list_notebooks():
        assert f"`{path.stem}`" in README, f"README's curriculum table does not list {path.stem}"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(index, tmp_path):
    code = blocks("python")[index]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README python block {index + 1} fails:\n{code}\n{proc.stderr[-3000:]}"


def _check_script(argv: list[str]) -> None:
    script = ROOT / argv[0]
    assert script.is_file(), f"README runs {argv[0]}, which does not exist"
    source = script.read_text(encoding="utf-8")
    for flag in (a.strip("[]") for a in argv[1:] if a.lstrip("[").startswith("--")):
        assert f'"{flag}"' in source, f"README passes {flag} to {argv[0]}, which does not take it"


def _executable(name: str) -> bool:
    """``.venv/bin/tool`` is the running environment's tool; a bare name is looked up there or on PATH."""
    tool = name.removeprefix(".venv/bin/")
    return (Path(sys.prefix) / "bin" / tool).exists() or (name == tool and shutil.which(tool) is not None)


def test_commands_exist(tmp_path):
    targets, variables = makefile()
    papermill = []
    for line in commands():
        for part in line.split("&&"):
            argv = shlex.split(part)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # VAR=value command ...
                argv = argv[1:]
            if not argv or argv[0] in ("cd", "mkdir") or argv == [".venv/bin/python"]:
                continue  # a folder, or the interpreter named in prose
            if argv[0] == "make":
                assert argv[1] in targets, f"README: make {argv[1]}: no such target"
                for assignment in argv[2:]:
                    assert assignment.split("=")[0] in variables, f"README: {assignment}: the Makefile has no such variable"
                continue
            assert _executable(argv[0]), f"README command {line!r}: no {argv[0]} in this environment"
            if "vidlab" in argv and argv[argv.index("vidlab") - 1] == "-m":  # python -m vidlab ..., torchrun ... -m vidlab ...
                _check_vidlab_command(argv[argv.index("vidlab") + 1:])
            elif argv[0].endswith("papermill"):
                papermill.append(argv)
            elif len(argv) > 1 and argv[1].endswith(".py"):
                _check_script(argv[1:])
    assert papermill, "README shows the papermill line"
    for argv in papermill:
        _papermill_prepare_only(argv, tmp_path)


def _check_vidlab_command(args: list[str]) -> None:
    if args in (["--help"], ["-h"]):
        return
    entry = (ROOT / "vidlab" / "__main__.py").read_text(encoding="utf-8")
    assert f'"{args[0]}":' in entry, f"python -m vidlab {args[0]}: no such command"
    if args[0] not in ("run", "check"):
        return
    parsed = runner._parser().parse_args(args)  # exits (SystemExit) on an unknown option
    if args[0] == "run":
        params = runner.parse_params(parsed.param)
        params.pop("PRESET", None)
        runner._check_params(runner.select_notebooks(parsed.only), params)


def _papermill_prepare_only(argv: list[str], tmp_path: Path) -> None:
    """Run the README's papermill line without executing the notebook, in a copy of the layout."""
    (tmp_path / "notebooks").symlink_to(ROOT / "notebooks")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    for block in blocks("bash"):
        for line in block.splitlines():
            if line.startswith("mkdir "):
                subprocess.run(shlex.split(line), cwd=tmp_path, check=True)
    proc = subprocess.run([str(Path(sys.prefix) / "bin" / "papermill"), *argv[1:], "--prepare-only"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = Path(argv[2])
    nb = nbformat.read(tmp_path / out, as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "OUTPUT_DIR" in injected.source, "the papermill line passes OUTPUT_DIR, so plots land beside the notebook"
    output_dir = Path(argv[argv.index("OUTPUT_DIR") + 1])
    assert output_dir.parent == out.parent and output_dir.name == out.stem
