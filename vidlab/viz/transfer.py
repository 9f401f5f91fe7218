"""Notebook 04's pictures: which way did the model choose within a direction pair, and how
accuracy grows with the number of labelled videos per class."""
from __future__ import annotations

from typing import Any, Sequence

from vidlab.recipes.transfer import DIRECTION_PAIRS, pair_confusion

__all__ = ["plot_label_budget", "plot_pair_confusions"]

def plot_pair_confusions(results: dict[str, dict[str, Any]], classes: Sequence[str],
                         pairs: Sequence[tuple[str, str]] = DIRECTION_PAIRS) -> Any:
    """One row per model, one ``2 x 2`` panel per class pair (:func:`~vidlab.recipes.transfer.pair_confusion`, rows normalised).

    ``results`` maps a model name to its :func:`~vidlab.train.evaluate` dict (``predictions``
    with ``prob`` and ``label``). A model that cannot tell the two apart shows ~0.5 everywhere.
    """
    from matplotlib.figure import Figure

    short = {n: n.replace("rotate_", "").replace("counterclockwise", "ccw").replace("clockwise", "cw")
             .replace("move_", "") for n in classes}
    fig = Figure(figsize=(2.6 * len(pairs), 2.4 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), len(pairs), squeeze=False)
    for r, (model_name, result) in enumerate(results.items()):
        prob, label = result["predictions"]["prob"], result["predictions"]["label"]
        for c, pair in enumerate(pairs):
            block = pair_confusion(prob, label, classes, pair).double()
            norm = block / block.sum(dim=1, keepdim=True).clamp_min(1)
            ax = axes[r, c]
            ax.imshow(norm.numpy(), vmin=0, vmax=1, cmap="Blues")
            for i in range(2):
                for j in range(2):
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                            color="white" if norm[i, j] > 0.6 else "black")
            ax.set_xticks([0, 1], [short[p] for p in pair], fontsize=8)
            ax.set_yticks([0, 1], [short[p] for p in pair], fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{model_name}\ntrue", fontsize=9)
            if r == len(results) - 1:
                ax.set_xlabel("chosen", fontsize=9)
            total = float(block.sum())
            ax.set_title(f"pair accuracy {float(block.trace()) / total:.2f}" if total else "no videos", fontsize=9)
    return fig


def plot_label_budget(rows: Sequence[dict[str, Any]], *, chance: float | None = None,
                      title: str = "domain B test accuracy vs labels") -> Any:
    """Accuracy vs labelled videos per class (log x axis), one line per method.

    ``rows``: as returned by :func:`~vidlab.recipes.transfer.label_budget_curve`.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["labels_per_class"], r["test_top1"]) for r in rows if r["method"] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", label="chance")
    ax.set_xscale("log")
    budgets = sorted({r["labels_per_class"] for r in rows})
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled domain-B videos per class")
    ax.set_ylabel("test top-1 (video level)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
