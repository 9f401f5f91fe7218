"""Does a run still show each notebook's lessons? (``python -m vidlab check`` / ``run --check``)

Each recipe module keeps, beside its preset table, a tuple ``LESSONS`` of
:class:`vidlab.presets.Lesson` (for example ``Lesson("tsm_top1", ">=", "tsn_top1", 0.3)``: TSM
above TSN by at least 0.3). :func:`check_folder` reads the ``metrics.json`` each notebook wrote
into ``OUT/NN_name/`` and compares it with the lessons that apply at the run's preset;
:func:`lessons_table` prints the result as a markdown table.
"""
from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vidlab.notebook import read_metrics
from vidlab.presets import Lesson

OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class LessonResult:
    """One lesson checked against one run: ``status`` is ``"pass"``, ``"fail"`` or ``"missing"``
    (the notebook recorded no such metric: the lesson is not shown, which counts as a miss)."""

    notebook: str
    lesson: Lesson
    status: str
    value: float | None = None  # the metric's value
    bound: float | None = None  # what it was compared with (``lesson.value`` + ``lesson.offset``)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "pass"


def describe(lesson: Lesson) -> str:
    """``"tsm_top1 >= tsn_top1 + 0.3"``."""
    rhs = str(lesson.value)
    if lesson.offset:
        rhs += f" {'+' if lesson.offset > 0 else '-'} {abs(lesson.offset):g}"
    return f"{lesson.metric} {lesson.op} {rhs}"


def metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """``metrics[name]`` as a float (``True`` / ``False``: 1 / 0); ``"a.b"`` reaches into a dict;
    ``None`` when absent or not a number."""
    value: Any = metrics
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):  # a recorded check: True counts as 1, False as 0
        return float(value)
    if isinstance(value, str):  # non-finite floats are stored as "nan" / "inf"
        try:
            return float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) else None


def evaluate(lesson: Lesson, metrics: Mapping[str, Any], notebook: str = "") -> LessonResult:
    """Compare one run's ``metrics`` with one lesson."""
    if lesson.op not in OPS:
        raise ValueError(f"{notebook}: lesson {describe(lesson)!r} has op {lesson.op!r}; use one of {', '.join(OPS)}")
    value = metric_value(metrics, lesson.metric)
    if value is None:
        return LessonResult(notebook, lesson, "missing", detail=f"no numeric metric {lesson.metric!r} in metrics.json")
    if isinstance(lesson.value, str):
        other = metric_value(metrics, lesson.value)
        if other is None:
            return LessonResult(notebook, lesson, "missing", value, detail=f"no numeric metric {lesson.value!r} in metrics.json")
        detail = f"{lesson.value} = {other:.4g}"
    else:
        other, detail = float(lesson.value), ""
    bound = other + lesson.offset
    holds = math.isfinite(value) and math.isfinite(bound) and OPS[lesson.op](value, bound)
    return LessonResult(notebook, lesson, "pass" if holds else "fail", value, bound, detail)


def default_lessons(notebook: str) -> tuple[Lesson, ...]:
    """The lessons of a curriculum notebook (none for a notebook without a preset table)."""
    from vidlab.presets import lessons_for

    try:
        return lessons_for(notebook)
    except KeyError:
        return ()


def check_metrics(
    notebook: str,
    metrics: Mapping[str, Any],
    preset: str,
    lessons: Callable[[str], Sequence[Lesson]] | None = None,
) -> list[LessonResult]:
    """The lessons of ``notebook`` (``lessons(notebook)``, default :func:`default_lessons`) that
    apply at ``preset``, each checked against ``metrics``."""
    found = (lessons or default_lessons)(notebook)
    return [evaluate(lesson, metrics, notebook) for lesson in found if preset in lesson.presets]


def run_info(out: Path) -> dict[str, Any]:
    """What ``summary.json`` says about the run in ``out`` (``{}`` when there is none)."""
    path = Path(out) / "summary.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {"notebooks": data}


def notebooks_in(out: Path) -> list[str]:
    """The notebooks of the run in ``out``: those ``summary.json`` lists, else its ``NN_name/`` folders."""
    listed = [n["notebook"] for n in run_info(out).get("notebooks", [])]
    return listed or sorted(p.name for p in Path(out).glob("[0-9][0-9]_*") if p.is_dir())


def check_folder(
    out: str | Path,
    preset: str,
    notebooks: Sequence[str] | None = None,
    lessons: Callable[[str], Sequence[Lesson]] | None = None,
) -> list[LessonResult]:
    """Check the ``metrics.json`` of each notebook run into ``out`` (``out/NN_name/metrics.json``)."""
    out = Path(out)
    results: list[LessonResult] = []
    for name in notebooks if notebooks is not None else notebooks_in(out):
        results += check_metrics(name, read_metrics(out / name), preset, lessons)
    return results


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def lessons_table(results: Sequence[LessonResult], preset: str) -> str:
    """A markdown table: notebook, lesson, measured value, what it needed, pass / FAIL."""
    if not results:
        return f"No lesson thresholds apply at preset `{preset}` (they are set for the cpu and gpu presets).\n"
    lines = [
        f"## Lessons at preset `{preset}`",
        "",
        "| notebook | lesson | value | needed | result | why |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        needed = f"{r.lesson.op} {_num(r.bound)}" if r.bound is not None else "-"
        if r.detail:
            needed += f" ({r.detail})"
        result = {"pass": "pass", "fail": "**FAIL**", "missing": "**MISSING**"}[r.status]
        lines.append(f"| {r.notebook} | `{describe(r.lesson)}` | {_num(r.value)} | {needed} | {result} | {r.lesson.why} |")
    passed = sum(r.ok for r in results)
    lines += ["", f"{passed} of {len(results)} lessons hold."]
    return "\n".join(lines) + "\n"
