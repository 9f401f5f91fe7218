"""The curriculum runner behind ``python -m vidlab run`` / ``check`` (and ``make run`` / ``make check``).

``run`` executes the numbered notebooks in order with papermill into ``runs/PRESET/``: each
executed notebook as ``NN_name.ipynb`` and ``NN_name.html`` (plots embedded, opens in any
browser), its ``metrics.json`` and plots under ``NN_name/``. Progress is printed cell by cell
and each cell has a time limit. A failing notebook is reported with its cell and error and the
others still run. At the end ``summary.md`` (linking every executed notebook) and
``summary.json`` are written and the table is printed with the lesson check
(:mod:`vidlab.check`); ``--check`` makes a lesson that no longer holds fail the command.
``check`` compares an existing run folder with the lessons without executing anything.
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

from vidlab import check as lessons
from vidlab.execute import DEFAULT_CELL_TIMEOUT, CellProgress, cell_count, describe_failure, execute, pick_kernel, render_html
from vidlab.notebook import PRESETS, read_metrics
from vidlab.utils import project_root

RESERVED = {"PRESET": "--preset", "OUTPUT_DIR": "--out"}  # set by the runner itself


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok" | "failed"
    seconds: float
    output_dir: Path
    executed: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    html: Path | None = None


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


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, python literal or the raw string)."""
    if "=" not in text:
        raise SystemExit(f"-p {text!r}: expected KEY=VALUE or KEY VALUE")
    key, raw = text.split("=", 1)
    return key.strip(), _literal(raw)


def parse_params(groups: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The ``-p`` options: each ``-p KEY=VALUE [KEY=VALUE ...]`` or ``-p KEY VALUE`` (as papermill)."""
    params: dict[str, Any] = {}
    for group in groups:
        if len(group) == 2 and "=" not in group[0]:
            params[group[0].strip()] = _literal(group[1])
        else:
            params.update(parse_param(text) for text in group)
    return params


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Names and defaults of a notebook's ``parameters`` cell."""
    import papermill as pm

    return {name: info["default"] for name, info in pm.inspect_notebook(str(path)).items()}


def _takes(known: Any) -> str:
    return ", ".join(sorted(set(known) - set(RESERVED))) + " (PRESET: --preset; OUTPUT_DIR: --out)"


def check_parameters(path: Path, params: dict[str, Any]) -> None:
    """Refuse a parameter the notebook's parameters cell does not define."""
    known = notebook_parameters(path)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{path.name}: unknown parameter(s) {', '.join(unknown)}; this notebook takes {_takes(known)}")


def run_notebook(
    path: Path,
    out: Path,
    *,
    preset: str = "cpu",
    params: dict[str, Any] | None = None,
    strict: bool = True,
    cell_timeout: float | None = DEFAULT_CELL_TIMEOUT,
    kernel: str | None = None,
    progress: bool = True,
    html: bool = True,
) -> NotebookResult:
    """Execute one notebook into ``out/NAME.ipynb`` (+ ``.html``), its outputs into ``out/NAME/``.

    Never raises for a failing cell, a cell over ``cell_timeout`` seconds or a dead kernel: see
    ``status`` and ``error`` (which names the cell and its first line).
    """
    params = dict(params or {})
    known = notebook_parameters(path)
    if strict:
        check_parameters(path, params)
    else:  # curriculum-wide -p: pass each notebook only what it takes
        params = {k: v for k, v in params.items() if k in known}
    nb_out = out / path.stem
    nb_out.mkdir(parents=True, exist_ok=True)
    params.update(PRESET=preset, OUTPUT_DIR=str(nb_out))
    executed = out / path.name
    tracker = CellProgress(path.stem, cell_count(path), echo=print if progress else None)
    t0 = time.perf_counter()
    status, error = "ok", ""
    try:
        execute(path, executed, params, kernel=kernel or pick_kernel()[0], cwd=path.parent,
                cell_timeout=cell_timeout, progress=tracker)
    except Exception as exc:  # a failing cell, a timeout, a dead kernel, bad notebook JSON, ...
        status, error = "failed", describe_failure(exc, tracker, cell_timeout)
    seconds = time.perf_counter() - t0
    page = None
    if html and executed.exists():
        try:
            page = render_html(executed)
        except Exception as exc:  # the executed notebook stays the record; say why there is no HTML
            print(f"[vidlab run] {path.stem}: no HTML copy ({type(exc).__name__}: {exc})", flush=True)
    return NotebookResult(path.stem, status, seconds, nb_out, executed, read_metrics(nb_out), error, page)


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


def _links(r: NotebookResult, out: Path) -> str:
    """Relative links to the executed notebook, its HTML copy and its folder of plots."""
    rel = lambda p: p.relative_to(out).as_posix() if p.is_relative_to(out) else p.as_posix()  # noqa: E731
    links = []
    if r.html is not None and r.html.exists():
        links.append(f"[html]({rel(r.html)})")
    if r.executed.exists():
        links.append(f"[notebook]({rel(r.executed)})")
    links.append(f"[plots, metrics]({rel(r.output_dir)}/)")
    return " · ".join(links)


def summary_table(results: Sequence[NotebookResult], preset: str, out: Path | None = None) -> str:
    """The run as markdown: notebook (linked), status, wall time, key metrics or the error."""
    total = sum(r.seconds for r in results)
    lines = [
        f"# vidlab curriculum run (preset `{preset}`)",
        "",
        "| notebook | status | wall time | key metrics | executed copy |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        detail = key_metrics(r.metrics) if r.status == "ok" else r.error.replace("|", "\\|").replace("\n", " ")[:300]
        links = _links(r, out) if out is not None else ""
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} s | {detail} | {links} |")
    ok = sum(r.status == "ok" for r in results)
    lines += ["", f"{ok} of {len(results)} notebooks ok, total {total:.1f} s."]
    return "\n".join(lines) + "\n"


def _check_params(books: Sequence[Path], params: dict[str, Any]) -> None:
    reserved = [k for k in params if k in RESERVED]
    if reserved:
        raise SystemExit("-p " + ", ".join(f"{k}: use {RESERVED[k]} instead" for k in reserved))
    all_known = set().union(*(notebook_parameters(b) for b in books))
    unknown = sorted(set(params) - all_known)
    if unknown:
        raise SystemExit(f"-p: unknown parameter(s) {', '.join(unknown)}; the selected notebooks take {_takes(all_known)}")


def run_curriculum(
    *,
    preset: str = "cpu",
    only: str | None = None,
    out: Path | None = None,
    params: dict[str, Any] | None = None,
    cell_timeout: float | None = DEFAULT_CELL_TIMEOUT,
    html: bool = True,
) -> list[NotebookResult]:
    """Execute the selected notebooks in order into ``out`` and write ``summary.md`` / ``.json``.

    Everything is validated before ``out`` is created, so a refused invocation leaves no folder.
    """
    if preset not in PRESETS:
        raise SystemExit(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if cell_timeout is not None and cell_timeout <= 0:
        raise SystemExit(f"--cell-timeout {cell_timeout}: must be a positive number of seconds")
    books = select_notebooks(only)
    if not books:
        raise SystemExit(f"no notebooks found in {notebooks_dir()}")
    params = dict(params or {})
    _check_params(books, params)
    out = Path(out or project_root() / "runs" / preset).resolve()
    kernel, kernel_info = pick_kernel()
    out.mkdir(parents=True, exist_ok=True)
    limit = f"each cell may run {cell_timeout:g} s" if cell_timeout else "no cell time limit"
    print(f"[vidlab run] preset {preset}, {len(books)} notebook(s) into {out}; kernel: {kernel_info}; {limit}", flush=True)
    results = []
    for book in books:
        print(f"[vidlab run] {book.name} ...", flush=True)
        res = run_notebook(book, out, preset=preset, params=params, strict=False, cell_timeout=cell_timeout,
                           kernel=kernel, html=html)
        results.append(res)
        print(f"[vidlab run] {book.name}: {res.status} in {res.seconds:.1f} s {res.error}", flush=True)
    checked = lessons.check_folder(out, preset, [r.name for r in results])
    text = summary_table(results, preset, out) + f"\nKernel: {kernel_info}.\n\n" + lessons.lessons_table(checked, preset)
    (out / "summary.md").write_text(text, encoding="utf-8")
    summary = {
        "preset": preset,
        "kernel": kernel,
        "notebooks": [{"notebook": r.name, "status": r.status, "seconds": round(r.seconds, 2), "error": r.error,
                       "metrics": r.metrics} for r in results],
        "lessons": [{"notebook": c.notebook, "lesson": lessons.describe(c.lesson), "status": c.status,
                     "value": c.value, "bound": c.bound} for c in checked],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print()
    print(text)
    print(f"executed notebooks (.ipynb and .html), metrics and plots: {out} (start with summary.md)")
    return results


def check_run(out: Path | None, preset: str | None = None, only: str | None = None) -> list[lessons.LessonResult]:
    """Check the run already in ``out`` (default ``runs/PRESET``) against the lessons; print the table."""
    out = Path(out or project_root() / "runs" / (preset or "cpu")).resolve()
    names = lessons.notebooks_in(out) if out.is_dir() else []
    if not names:
        raise SystemExit(f"no notebook run in {out}: run `make run` or `python -m vidlab run --out {out}` first")
    if only:
        wanted = {w.strip().zfill(2) for w in only.split(",") if w.strip()}
        names = [n for n in names if n[:2] in wanted]
    preset = preset or lessons.run_info(out).get("preset") or (out.name if out.name in PRESETS else None)
    if preset not in PRESETS:
        raise SystemExit(f"{out}: cannot tell the run's preset; pass --preset ({', '.join(PRESETS)})")
    checked = lessons.check_folder(out, preset, names)
    print(lessons.lessons_table(checked, preset))
    return checked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vidlab", description="vidlab curriculum tools")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    run.add_argument("--preset", default=None, choices=PRESETS, help="smoke (CI, seconds), cpu (default), gpu")
    run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    run.add_argument("--out", default=None, help="output folder (default runs/PRESET)")
    run.add_argument("-p", "--param", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                     help="notebook parameter: -p KEY=VALUE or -p KEY VALUE (repeatable)")
    run.add_argument("--check", action="store_true", help="exit non-zero when a lesson threshold no longer holds")
    run.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT, metavar="SECONDS",
                     help=f"stop a notebook whose cell runs longer (default {DEFAULT_CELL_TIMEOUT}; 0: no limit)")
    run.add_argument("--no-html", dest="html", action="store_false", help="skip the HTML copy of each executed notebook")
    chk = sub.add_parser("check", help="compare an existing run's metrics with the lesson thresholds (runs nothing)")
    chk.add_argument("--out", default=None, help="the run's folder (default runs/PRESET)")
    chk.add_argument("--preset", default=None, choices=PRESETS, help="default: the preset the run was made with")
    chk.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        checked = check_run(Path(args.out) if args.out else None, args.preset, args.only)
        return 0 if all(c.ok for c in checked) else 1
    params = parse_params(args.param)
    preset = args.preset
    if "PRESET" in params:  # papermill's spelling, accepted
        if preset is not None and params["PRESET"] != preset:
            raise SystemExit(f"-p PRESET={params['PRESET']} contradicts --preset {preset}")
        preset = str(params.pop("PRESET"))
    preset = preset or "cpu"
    out = Path(args.out) if args.out else None
    results = run_curriculum(preset=preset, only=args.only, out=out, params=params,
                             cell_timeout=args.cell_timeout or None, html=args.html)
    code = 0 if all(r.status == "ok" for r in results) else 1
    if args.check:
        run_dir = (out or project_root() / "runs" / preset).resolve()
        checked = lessons.check_folder(run_dir, preset, [r.name for r in results])
        if not all(c.ok for c in checked):
            print("--check: a lesson no longer holds (see the table above)", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
