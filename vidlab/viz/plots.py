"""Training plots: learning curves, confusion matrix, per-class accuracy, method comparison bars.

Every function returns a ``matplotlib.figure.Figure`` (built with the object API, so it works
under the Agg backend and does not pop up windows); save it with ``fig.savefig`` or
``ctx.savefig``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_bars", "plot_confusion", "plot_history", "plot_per_class"]


def _as_history_dict(history: Any) -> dict[str, Any]:
    if hasattr(history, "as_dict"):
        return history.as_dict()
    if isinstance(history, Mapping):
        return dict(history)
    raise TypeError(f"plot_history: expected a History or a dict of lists, got {type(history).__name__}")


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def plot_history(
    history: Any,
    *,
    metrics: Sequence[str] = ("loss", "top1"),
    show_lr: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Learning curves: one panel per metric (train solid, val dashed) and optionally the learning rate.

    ``history``: a ``History`` (or its ``as_dict()``), or a list of ``(name, History)`` pairs to
    overlay several runs. Each metric ``m`` reads the ``train_m`` and ``val_m`` lists.
    """
    runs = list(history) if isinstance(history, (list, tuple)) else [("", history)]
    runs = [(name, _as_history_dict(h)) for name, h in runs]
    panels = list(metrics) + (["lr"] if show_lr else [])
    fig = Figure(figsize=figsize or (4.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = [f"C{i}" for i in range(10)]
    for run_index, (name, values) in enumerate(runs):
        color = colors[run_index % len(colors)]
        epochs = values.get("epoch") or list(range(len(values.get("train_loss", []))))
        x = np.asarray(epochs) + 1
        for ax, metric in zip(axes, panels):
            if metric == "lr":
                series = [("lr", values.get("lr", []), "-")]
            else:
                series = [(f"train {metric}", values.get(f"train_{metric}", []), "-"),
                          (f"val {metric}", values.get(f"val_{metric}", []), "--")]
            for label, ys, style in series:
                ys = _to_numpy(ys)
                if ys.size == 0 or np.all(np.isnan(ys)):
                    continue
                ax.plot(x[: ys.size], ys, style, color=color, marker="o", markersize=3,
                        label=f"{name} {label}".strip())
            best = values.get("best_epoch")
            if best is not None and metric != "lr" and len(runs) == 1:
                ax.axvline(best + 1, color="gray", lw=0.8, ls=":", label="best epoch")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(metric)
            ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def plot_confusion(
    cm: Any,
    class_names: Sequence[str] | None = None,
    *,
    normalize: bool = True,
    title: str = "confusion matrix",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Heatmap of a ``(K, K)`` confusion matrix (rows = true class, columns = predicted).

    ``normalize=True`` shows each row as fractions of that class's samples.
    """
    import seaborn as sns

    matrix = _to_numpy(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"plot_confusion: cm must be (K, K), got shape {matrix.shape}")
    k = matrix.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"plot_confusion: {len(names)} class_names for a {k}x{k} matrix")
    if normalize:
        support = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    side = max(4.0, 0.45 * k + 2)
    fig = Figure(figsize=figsize or (side + 1, side), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(matrix, ax=ax, annot=k <= 12, fmt=".2f" if normalize else ".0f", cmap="Blues",
                xticklabels=names, yticklabels=names, vmin=0, vmax=1 if normalize else None, square=True,
                cbar_kws={"shrink": 0.8})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def plot_per_class(
    acc: Any,
    class_names: Sequence[str] | None = None,
    *,
    title: str = "per-class accuracy",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Horizontal bars of per-class accuracy ``(K,)`` (``nan`` = class absent, drawn empty), sorted worst first."""
    values = _to_numpy(acc).reshape(-1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(values.size)]
    if len(names) != values.size:
        raise ValueError(f"plot_per_class: {len(names)} class_names for {values.size} accuracies")
    order = np.argsort(np.nan_to_num(values, nan=-1.0))
    fig = Figure(figsize=figsize or (6, max(2.5, 0.3 * values.size + 1)), layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(values.size), np.nan_to_num(values[order], nan=0.0), color="C0")
    ax.set_yticks(np.arange(values.size), [names[i] for i in order])
    mean = np.nanmean(values) if np.any(~np.isnan(values)) else float("nan")
    if not np.isnan(mean):
        ax.axvline(mean, color="C3", ls="--", lw=1, label=f"mean {mean:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title(title)
    return fig


def _table_rows(table: Any) -> tuple[list[str], list[str], np.ndarray]:
    """Normalise a comparison table to (row names, metric names, values (rows, metrics))."""
    if hasattr(table, "to_dict") and hasattr(table, "index"):  # pandas DataFrame: rows = index
        table = {str(i): {str(c): table.loc[i, c] for c in table.columns} for i in table.index}
    if isinstance(table, Mapping):
        items = list(table.items())
        if items and all(isinstance(v, Mapping) for _, v in items):
            rows = [str(k) for k, _ in items]
            metrics = list(dict.fromkeys(m for _, v in items for m in v))
            values = np.array([[float(v.get(m, np.nan)) for m in metrics] for _, v in items])
            return rows, [str(m) for m in metrics], values
        return [str(k) for k, _ in items], ["value"], np.array([[float(v)] for _, v in items])
    if isinstance(table, Sequence) and table and all(isinstance(r, Mapping) for r in table):
        key = next((k for k in ("method", "name") if k in table[0]), None)
        if key is None:
            raise ValueError("plot_bars: rows given as dicts need a 'method' or 'name' key")
        return _table_rows({str(r[key]): {k: v for k, v in r.items() if k != key} for r in table})
    raise TypeError(
        "plot_bars: table must be {name: value}, {name: {metric: value}}, a list of dicts with a "
        f"'method' key, or a DataFrame; got {type(table).__name__}"
    )


def plot_bars(
    table: Any,
    *,
    title: str = "",
    ylabel: str = "",
    figsize: tuple[float, float] | None = None,
    annotate: bool = True,
) -> Figure:
    """Grouped bar chart comparing methods: ``{"linear probe": {"top1": .6, ...}, "LoRA": {...}}``.

    Also accepts ``{name: value}``, a list of dicts with a ``method`` (or ``name``) key, or a
    DataFrame (rows = methods, columns = metrics).
    """
    rows, metrics, values = _table_rows(table)
    if not rows:
        raise ValueError("plot_bars: the table is empty")
    fig = Figure(figsize=figsize or (max(4.5, 1.1 * len(rows) * max(1, len(metrics)) ** 0.5 + 2), 3.6),
                 layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        bars = ax.bar(x + (j - (len(metrics) - 1) / 2) * width, np.nan_to_num(values[:, j]), width,
                      label=metric, color=f"C{j % 10}")
        if annotate:
            ax.bar_label(bars, labels=[("" if np.isnan(v) else f"{v:.3g}") for v in values[:, j]], fontsize=7)
    ax.set_xticks(x, rows, rotation=20 if max(len(r) for r in rows) > 10 else 0, ha="right" if
                  max(len(r) for r in rows) > 10 else "center")
    if len(metrics) > 1 or metrics[0] != "value":
        ax.legend(fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig
