"""The curriculum runner behind ``python -m vidlab run`` (and ``make run``).

Executes the numbered notebooks in order with papermill into ``runs/NAME/``: each executed
notebook as ``NN_name.ipynb`` and its ``metrics.json`` and plots under ``NN_name/``. A failing
notebook is reported with its cell and error and the others still run. At the end a summary
table (notebook, status, wall time, key metrics) is written to ``runs/NAME/summary.md`` and
printed.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vidlab.notebook import PRESETS, read_metrics
from vidlab.utils import project_root

KERNEL_NAME = "python3"  # the kernel of the Python running the runner (the .venv one)
RESERVED = ("PRESET", "OUTPUT_DIR")  # set by the runner itself


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok" | "failed"
    seconds: float
    output_dir: Path
    executed: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order."""
    directory = directory or notebooks_dir()
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(only: str | None, directory: Path | None = None) -> list[Path]:
    """``only="01,03"`` keeps notebooks 01 and 03; unknown numbers are an error."""
    books = list_notebooks(directory)
    if not only:
        return books
    wanted = [w.strip().zfill(2) for w in only.split(",") if w.strip()]
    by_num = {p.name[:2]: p for p in books}
    unknown = [w for w in wanted if w not in by_num]
    if unknown:
        raise SystemExit(f"--only: no notebook numbered {', '.join(unknown)}; have {', '.join(sorted(by_num))}")
    return [by_num[w] for w in wanted]


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, python literal or the raw string)."""
    if "=" not in text:
        raise SystemExit(f"-p {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Names and defaults of a notebook's ``parameters`` cell."""
    import papermill as pm

    return {name: info["default"] for name, info in pm.inspect_notebook(str(path)).items()}


def check_parameters(path: Path, params: dict[str, Any]) -> None:
    """Refuse a parameter the notebook's parameters cell does not define."""
    known = notebook_parameters(path)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"{path.name}: unknown parameter(s) {', '.join(unknown)}; this notebook takes {', '.join(sorted(known))}"
        )


def run_notebook(
    path: Path,
    out: Path,
    *,
    preset: str = "cpu",
    params: dict[str, Any] | None = None,
    strict: bool = True,
) -> NotebookResult:
    """Execute one notebook with papermill; never raises for a failing cell (see ``status``)."""
    import papermill as pm

    params = dict(params or {})
    nb_out = out / path.stem
    nb_out.mkdir(parents=True, exist_ok=True)
    known = notebook_parameters(path)
    if strict:
        check_parameters(path, params)
    else:  # curriculum-wide -p: pass each notebook only what it takes
        params = {k: v for k, v in params.items() if k in known}
    params.update(PRESET=preset, OUTPUT_DIR=str(nb_out))
    executed = out / path.name
    t0 = time.perf_counter()
    status, error = "ok", ""
    try:
        pm.execute_notebook(
            str(path),
            str(executed),
            parameters=params,
            kernel_name=KERNEL_NAME,
            cwd=str(path.parent),
            progress_bar=False,
            request_save_on_cell_execute=True,
        )
    except pm.PapermillExecutionError as exc:
        status = "failed"
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel died, bad notebook JSON, ...
        status = "failed"
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    return NotebookResult(path.stem, status, seconds, nb_out, executed, read_metrics(nb_out), error)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def key_metrics(metrics: dict[str, Any], limit: int = 6) -> str:
    """The first few scalar metrics, as ``name=value`` pairs."""
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in scalars[:limit])
    more = len(scalars) - limit
    return shown + (f" (+{more} more)" if more > 0 else "")


def summary_table(results: Sequence[NotebookResult], preset: str) -> str:
    total = sum(r.seconds for r in results)
    lines = [
        f"# vidlab curriculum run (preset `{preset}`)",
        "",
        "| notebook | status | wall time | key metrics |",
        "|---|---|---|---|",
    ]
    for r in results:
        detail = key_metrics(r.metrics) if r.status == "ok" else r.error.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} s | {detail} |")
    ok = sum(r.status == "ok" for r in results)
    lines += ["", f"{ok} of {len(results)} notebooks ok, total {total:.1f} s."]
    return "\n".join(lines) + "\n"


def run_curriculum(
    *,
    preset: str = "cpu",
    only: str | None = None,
    out: Path | None = None,
    params: dict[str, Any] | None = None,
) -> list[NotebookResult]:
    if preset not in PRESETS:
        raise SystemExit(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    out = Path(out or project_root() / "runs" / preset).resolve()
    out.mkdir(parents=True, exist_ok=True)
    books = select_notebooks(only)
    if not books:
        raise SystemExit(f"no notebooks found in {notebooks_dir()}")
    params = dict(params or {})
    reserved = [k for k in params if k in RESERVED]
    if reserved:
        raise SystemExit(f"-p {', '.join(reserved)}: use --preset / --out instead")
    all_known = set().union(*(notebook_parameters(b) for b in books))
    unknown = sorted(set(params) - all_known)
    if unknown:
        raise SystemExit(f"-p: unknown parameter(s) {', '.join(unknown)}; the selected notebooks take {', '.join(sorted(all_known))}")
    results = []
    for book in books:
        print(f"[vidlab run] {book.name} ...", flush=True)
        res = run_notebook(book, out, preset=preset, params=params, strict=False)
        results.append(res)
        print(f"[vidlab run] {book.name}: {res.status} in {res.seconds:.1f} s {res.error}", flush=True)
    text = summary_table(results, preset)
    (out / "summary.md").write_text(text, encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps([{"notebook": r.name, "status": r.status, "seconds": round(r.seconds, 2), "error": r.error, "metrics": r.metrics} for r in results], indent=2),
        encoding="utf-8",
    )
    print()
    print(text)
    print(f"executed notebooks, metrics and plots: {out}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidlab", description="vidlab curriculum tools")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    run.add_argument("--preset", default="cpu", choices=PRESETS, help="smoke (CI, seconds), cpu (default), gpu")
    run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    run.add_argument("--out", default=None, help="output folder (default runs/PRESET)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="notebook parameter (repeatable)")
    args = parser.parse_args(argv)
    params = dict(parse_param(p) for p in args.param)
    results = run_curriculum(preset=args.preset, only=args.only, out=Path(args.out) if args.out else None, params=params)
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
