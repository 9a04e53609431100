"""The report's figures: learning curves, confusion heatmaps, per-class scores and the curve overlay.

matplotlib runs on the Agg backend (set here, before pyplot is imported): nothing opens a window.
Every figure is drawn under :func:`styled` so they all look alike, and is closed once saved.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from comp.io import atomic_write_bytes  # noqa: E402
from comp.report.runs import RunData  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ANNOTATE_MAX_CLASSES = 20  # past this many classes per-cell numbers are unreadable
LABEL_MAX_CHARS = 24
DPI = 100
STYLE = {
    "figure.dpi": 100, "font.size": 9,
    "axes.titlesize": 10, "axes.titleweight": "bold", "axes.labelsize": 9, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linestyle": ":", "axes.spines.top": False, "axes.spines.right": False,
    "legend.fontsize": 8, "legend.frameon": False, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "axes.prop_cycle": matplotlib.cycler(color=matplotlib.colormaps["tab10"].colors),
}


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """The look every report figure shares (a matplotlib rc context)."""
    with matplotlib.rc_context(STYLE):
        yield


def save_figure(fig: Figure, path: Path) -> bytes:
    """Write ``fig`` as PNG to ``path`` (atomically), close it, and return the PNG bytes."""
    buffer = io.BytesIO()
    try:
        # No "Software" entry: keeps matplotlib's URL out of the PNG (and so out of the page).
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return data


def metric_column(monitor: str) -> str:
    """The history column plotted as "the metric": the monitored one, or accuracy when loss is monitored."""
    return "accuracy" if monitor in ("loss", "valid_loss") else monitor


def plot_learning_curves(run: RunData) -> Figure:
    """Per finished fold (one row each): train and validation loss, and the monitored metric per epoch.

    The best epoch from the fold's ``metrics.json`` is marked with a dotted line and named above the row.
    """
    metric = metric_column(run.monitor)
    n_epochs = max(len(h) for h in run.histories.values())
    marker = "." if n_epochs <= 30 else None
    with styled():
        fig, axes = plt.subplots(len(run.folds), 2, figsize=(9, 1.0 + 1.9 * len(run.folds)),
                                 squeeze=False, sharex=True, layout="constrained")
        for row, k in enumerate(run.folds):
            history, meta = run.histories[k], run.fold_metrics[k]
            loss_ax, metric_ax = axes[row]
            loss_ax.plot(history["epoch"], history["train_loss"], label="train", color="C0", marker=marker)
            loss_ax.plot(history["epoch"], history["valid_loss"], label="validation", color="C1", marker=marker)
            if metric in history.columns:
                metric_ax.plot(history["epoch"], history[metric], color="C2", marker=marker)
            best = meta.get("best_epoch")
            if best is not None:
                for ax in (loss_ax, metric_ax):
                    ax.axvline(best, color="0.4", linestyle=":", linewidth=1, label="best epoch")
            loss_ax.set_title(f"fold {k}", loc="left")
            metric_ax.set_title(_best_text(meta, run.monitor), loc="right", fontweight="normal", fontsize=8)
            loss_ax.set_ylabel("loss")
            metric_ax.set_ylabel(f"validation {metric}")
        axes[0, 0].legend(loc="upper right")
        for ax in axes[-1]:
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        fig.suptitle(f"{run.name}: learning curves", fontweight="bold")
    return fig


def _best_text(meta: dict, monitor: str) -> str:
    if meta.get("best_epoch") is None:
        return ""
    score = meta.get("best_score")
    score_text = f", {meta.get('monitor', monitor)} {score:.4f}" if isinstance(score, (int, float)) else ""
    return f"best epoch {meta['best_epoch']}{score_text}"


def annotate_cells(n_classes: int) -> bool:
    """Whether a confusion heatmap of ``n_classes`` gets per-cell numbers (only while they stay readable)."""
    return n_classes <= ANNOTATE_MAX_CLASSES


def _short(name: str) -> str:
    return name if len(name) <= LABEL_MAX_CHARS else name[: LABEL_MAX_CHARS - 1] + "…"


def plot_confusion(matrix: np.ndarray, classes: list[str], normalised: bool, title: str) -> Figure:
    """An annotated heatmap of a confusion matrix (rows: true class, columns: predicted class).

    The figure grows with the number of classes; past :data:`ANNOTATE_MAX_CLASSES` the per-cell
    numbers give way to faint cell borders that keep rows and columns easy to follow.
    """
    n = len(classes)
    side = float(np.clip(1.8 + 0.42 * n, 5.5, 20.0))
    tick_size = 8 if n <= 30 else 7 if n <= 60 else 6
    with styled():
        fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalised else max(int(matrix.max()), 1),
                          interpolation="nearest")
        ax.grid(False)
        ticks = np.arange(n)
        upright = n <= 12 and max(len(c) for c in classes) <= 6
        ax.set_xticks(ticks, [_short(c) for c in classes], rotation=0 if upright else 90, fontsize=tick_size)
        ax.set_yticks(ticks, [_short(c) for c in classes], fontsize=tick_size)
        ax.set_xlabel("predicted class", fontsize=9 if n <= 30 else 12)
        ax.set_ylabel("true class", fontsize=9 if n <= 30 else 12)
        ax.set_title(title, fontsize=10 if n <= 30 else 14)
        bar = fig.colorbar(image, ax=ax, shrink=0.8 if n <= 30 else 0.5, aspect=30,
                           label="share of true class" if normalised else "count")
        if not normalised:
            bar.locator = matplotlib.ticker.MaxNLocator(integer=True)
            bar.update_ticks()
        if annotate_cells(n):
            _annotate(ax, matrix, normalised)
        else:
            ax.set_xticks(ticks - 0.5, minor=True)
            ax.set_yticks(ticks - 0.5, minor=True)
            ax.tick_params(which="minor", length=0)
            ax.grid(which="minor", color="0.85", linewidth=0.3, linestyle="-")
    return fig


def _annotate(ax: Axes, matrix: np.ndarray, normalised: bool) -> None:
    threshold = (1.0 if normalised else matrix.max()) / 2
    size = 12 if len(matrix) <= 5 else 8 if len(matrix) <= 12 else 6
    for (i, j), value in np.ndenumerate(matrix):
        text = f"{value:.2f}" if normalised else f"{int(value)}"
        ax.text(j, i, text, ha="center", va="center", fontsize=size,
                color="white" if value > threshold else "0.15")


def plot_per_class(scores: pd.DataFrame, title: str) -> Figure:
    """Per-class F1 as bars with precision and recall as markers, worst F1 at the top; labels show support."""
    n = len(scores)
    tick_size = 8 if n <= 30 else 6 if n <= 60 else 5
    with styled():
        fig, ax = plt.subplots(figsize=(8, float(np.clip(1.4 + 0.24 * n, 3.0, 30.0))), layout="constrained")
        y = np.arange(n)
        ax.barh(y, scores["f1"], color="C0", alpha=0.75, label="F1")
        ax.scatter(scores["precision"], y, marker="D", s=14, color="C1", label="precision", zorder=3)
        ax.scatter(scores["recall"], y, marker="o", s=14, color="C3", label="recall", zorder=3)
        labels = [f"{_short(c)} (n={s})" for c, s in zip(scores["class"], scores["support"])]
        ax.set_yticks(y, labels, fontsize=tick_size)
        ax.set_ylim(n - 0.5, -0.5)  # worst class at the top
        ax.set_xlim(0, 1.0)
        ax.set_xlabel("score")
        ax.grid(axis="y", visible=False)
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _mean_curve(run: RunData, column: str) -> pd.Series:
    """Mean over finished folds per epoch (folds that stopped early drop out of later epochs)."""
    frames = [h.set_index("epoch")[column] for h in run.histories.values() if column in h.columns]
    return pd.concat(frames, axis=1).mean(axis=1) if frames else pd.Series(dtype=np.float64)


def plot_overlay(runs: list[RunData]) -> Figure:
    """Several experiments on shared axes: train loss, validation loss and the first one's metric.

    Thin lines are single folds; the thick line is the mean over folds.
    """
    metric = metric_column(runs[0].monitor)
    panels = [("train_loss", "train loss"), ("valid_loss", "validation loss"), (metric, f"validation {metric}")]
    with styled():
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), layout="constrained")
        for i, run in enumerate(runs):
            color = f"C{i % 10}"
            for ax, (column, _) in zip(axes, panels):
                for history in run.histories.values():
                    if column in history.columns:
                        ax.plot(history["epoch"], history[column], color=color, alpha=0.25, linewidth=0.8)
                mean = _mean_curve(run, column)
                ax.plot(mean.index, mean.to_numpy(), color=color, linewidth=2.2,
                        label=f"{run.name} ({len(run.folds)} folds)")
        for ax, (_, title) in zip(axes, panels):
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(runs), 4))
        fig.suptitle("experiments compared: mean over folds (thick), single folds (thin)", fontweight="bold")
    return fig
