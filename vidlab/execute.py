"""Executing one notebook with papermill: which kernel, progress cell by cell, a per-cell timeout,
and an HTML copy a reader can open without Jupyter.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DEFAULT_CELL_TIMEOUT = 900  # seconds one cell may run before the notebook is stopped
KERNEL = "vidlab"  # the kernelspec `make` registers (ipykernel install --sys-prefix --name vidlab)


def pick_kernel() -> tuple[str, str]:
    """``(kernel name, what it runs)``: the ``vidlab`` kernelspec when it starts the Python running
    this code, else ``python3`` (ipykernel's kernel for the running Python)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(KERNEL)
    except NoSuchKernel:
        spec = None
    if spec is not None and spec.argv and _same_python(spec.argv[0]):
        return KERNEL, f"kernelspec {KERNEL!r} ({spec.argv[0]})"
    why = "not installed" if spec is None else f"it runs {spec.argv[0] if spec.argv else '?'}, not {sys.executable}"
    return "python3", f"kernelspec 'python3' (ipykernel of {sys.executable}; {KERNEL!r} {why})"


def _same_python(executable: str) -> bool:
    if executable in ("python", "python3"):  # a bare name is whatever python is first on PATH
        return False
    return os.path.normcase(os.path.abspath(executable)) == os.path.normcase(os.path.abspath(sys.executable))


def first_line(source: str, width: int = 70) -> str:
    """The first non-blank line of a cell's source, cut to ``width`` characters."""
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= width else line[: width - 3] + "..."
    return ""


@dataclass
class CellProgress:
    """nbclient hook (``on_cell_execute``): prints ``[name] cell i/n (elapsed) first line`` as each
    code cell starts, and remembers the cell so a timeout or a dead kernel can name it."""

    name: str
    total: int
    echo: Callable[[str], None] | None = print
    index: int | None = None
    source: str = ""
    started: float = 0.0

    def __post_init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, cell: Any, cell_index: int, **_: Any) -> None:
        self.index, self.source, self.started = cell_index, cell.source, time.perf_counter()
        if self.echo is not None:
            elapsed = int(self.started - self.t0)
            self.echo(f"  [{self.name}] cell {cell_index + 1}/{self.total} ({elapsed // 60}:{elapsed % 60:02d}) {first_line(cell.source)}")

    def where(self) -> str:
        """``cell 7 (`first line`)``, or ``before the first cell``."""
        if self.index is None:
            return "before the first cell"
        return f"cell {self.index + 1} (`{first_line(self.source)}`)"


def execute(
    path: Path,
    executed: Path,
    parameters: dict[str, Any],
    *,
    kernel: str,
    cwd: Path,
    cell_timeout: float | None = DEFAULT_CELL_TIMEOUT,
    progress: CellProgress | None = None,
) -> None:
    """Run ``path`` into ``executed`` with papermill (saved after every cell). Raises papermill's
    ``PapermillExecutionError`` for a failing cell and nbclient's ``CellTimeoutError`` /
    ``DeadKernelError`` for a cell over ``cell_timeout`` seconds or a dead kernel."""
    import papermill as pm

    hooks = {"on_cell_execute": progress} if progress is not None else {}
    pm.execute_notebook(
        str(path),
        str(executed),
        parameters=parameters,
        kernel_name=kernel,
        cwd=str(cwd),
        progress_bar=False,
        request_save_on_cell_execute=True,
        execution_timeout=cell_timeout,
        **hooks,
    )


def describe_failure(exc: BaseException, progress: CellProgress | None, cell_timeout: float | None) -> str:
    """One line naming the cell (number in the executed notebook, first source line) and the error."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    if isinstance(exc, pm.PapermillExecutionError):
        return f"cell {exc.cell_index + 1} (`{first_line(exc.source)}`): {exc.ename}: {exc.evalue}"
    where = progress.where() if progress is not None else "a cell"
    if isinstance(exc, CellTimeoutError):
        return f"{where} still running after {cell_timeout:g} s: stopped (raise the limit with --cell-timeout SECONDS)"
    if isinstance(exc, DeadKernelError):
        return f"the kernel died in {where} (out of memory or a crash in native code)"
    return f"{where}: {type(exc).__name__}: {exc}"


def render_html(executed: Path) -> Path:
    """``executed`` (an executed ``.ipynb``) as a self-contained ``.html`` beside it (plots embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb, resources={"metadata": {"name": executed.stem}})
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def cell_count(path: Path) -> int:
    """How many cells the executed copy will have (papermill adds one with the parameters)."""
    import nbformat

    return len(nbformat.read(path, as_version=4).cells) + 1
