"""The report's numbers: confusion matrix, per-class scores, CV summary and the experiment comparison.

Every function returns a :class:`pandas.DataFrame` (or an array) so the same numbers go to the CSV
files, the HTML tables and the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from comp.config import flatten_keys
from comp.metrics import METRICS, compute_metrics
from comp.report.runs import RunData


def confusion_counts(run: RunData) -> np.ndarray:
    """Pooled OOF confusion matrix (C, C): rows are true classes, columns the argmax prediction."""
    y_true, probs = run.labels_and_probs()
    return confusion_matrix(y_true, probs.argmax(axis=1), labels=np.arange(len(run.classes)))


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the recall of each true class on the diagonal); empty rows stay 0."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def per_class_scores(run: RunData) -> pd.DataFrame:
    """Precision, recall, F1 and support per class on the pooled OOF predictions, worst F1 first.

    Ties in F1 put the class with more examples first (a large class failing matters more).
    """
    y_true, probs = run.labels_and_probs()
    labels = np.arange(len(run.classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, probs.argmax(axis=1), labels=labels, zero_division=0,
    )
    frame = pd.DataFrame({
        "class": run.classes, "precision": precision, "recall": recall, "f1": f1, "support": support,
    })
    return frame.sort_values(["f1", "support"], ascending=[True, False], kind="stable").reset_index(drop=True)


def metric_columns(names: Iterable[str]) -> list[str]:
    """Metric names in the order of :data:`comp.metrics.METRICS`, unknown ones after, sorted."""
    names = set(names)
    return [m for m in METRICS if m in names] + sorted(names - set(METRICS))


def cv_summary(run: RunData) -> tuple[pd.DataFrame, str]:
    """Each metric per finished fold, then mean, std and the pooled OOF score.

    ``cv.json`` is used when it covers exactly the finished folds; otherwise (a partial or stale run)
    the numbers are recomputed from each fold's ``metrics.json`` (population std, ``ddof=0``) and
    from the pooled OOF predictions.

    Returns:
        The table (index: ``fold 0``, ..., ``mean``, ``std``, ``oof``) and where its numbers came from.
    """
    cv = run.cv or {}
    per_fold = cv.get("per_fold") or {}
    if per_fold and sorted(int(k) for k in per_fold) == run.folds and cv.get("mean"):
        rows = {f"fold {k}": per_fold[str(k)] for k in run.folds}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        extra = {"mean": cv["mean"], "std": cv.get("std", {}), "oof": cv.get("oof", {})}
        source = "cv.json"
    else:
        rows = {f"fold {k}": run.fold_metrics[k].get("metrics", {}) for k in run.folds}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        extra = {"mean": frame.mean(), "std": frame.std(ddof=0), "oof": _oof_metrics(run)}
        source = "fold metrics.json (cv.json absent or not matching the finished folds)"
    for label, values in extra.items():
        if len(values):
            frame.loc[label] = pd.Series(values, dtype=np.float64)
    return frame[metric_columns(frame.columns)].astype(np.float64), source


def _oof_metrics(run: RunData) -> dict[str, float]:
    if run.oof is None or len(run.classes) < 2:
        return {}
    y_true, probs = run.labels_and_probs()
    return compute_metrics(y_true, probs)


def fold_status(run: RunData) -> pd.DataFrame:
    """One row per expected fold: finished or missing, best epoch, best score, epochs run, early stop."""
    rows = []
    for k in run.expected:
        meta = run.fold_metrics.get(k)
        if meta is None:
            rows.append({"fold": k, "status": "missing"})
            continue
        rows.append({
            "fold": k, "status": "finished", "best_epoch": meta.get("best_epoch"),
            f"best {meta.get('monitor', run.monitor)}": meta.get("best_score"),
            "epochs_run": meta.get("epochs_run"), "stopped_early": meta.get("stopped_early"),
        })
    return pd.DataFrame(rows).set_index("fold")


def config_differences(runs: list[RunData]) -> pd.DataFrame:
    """Config keys (dotted) whose values differ between experiments; ``name`` is left out.

    Experiments without a ``config.yaml`` are left out of the comparison (their row stays empty),
    so one missing file does not make every key look different.
    """
    flats = {r.name: flatten_keys(r.config) for r in runs if r.config}
    keys = sorted({k for flat in flats.values() for k in flat} - {"name"})
    missing = object()
    differing = [k for k in keys if len({repr(f.get(k, missing)) for f in flats.values()}) > 1]
    table = {r.name: {k: _cell(flats.get(r.name, {}).get(k, "(unset)" if r.config else None)) for k in differing}
             for r in runs}
    return pd.DataFrame.from_dict(table, orient="index", columns=differing)


def _cell(value: Any) -> Any:
    return str(value) if isinstance(value, (list, tuple, dict)) else value


def comparison_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per experiment, comparing them.

    Columns: finished folds, CV mean and std per metric, OOF score, tuned parameters (``tuned <key>``) and
    the config keys that differ (``config <key>``).
    """
    rows = {}
    for run in runs:
        summary, _ = cv_summary(run)
        row: dict[str, Any] = {"folds": f"{len(run.folds)}/{len(run.expected)}", "monitor": run.monitor}
        for metric in summary.columns:
            row[f"{metric} mean"] = summary.at["mean", metric] if "mean" in summary.index else np.nan
            row[f"{metric} std"] = summary.at["std", metric] if "std" in summary.index else np.nan
        if "oof" in summary.index and run.monitor in summary.columns:
            row[f"oof {run.monitor}"] = summary.at["oof", run.monitor]
        row.update({f"tuned {k}": _cell(v) for k, v in flatten_keys(run.best_params).items()})
        rows[run.name] = row
    scores = pd.DataFrame.from_dict(rows, orient="index")
    diffs = config_differences(runs).add_prefix("config ")
    table = scores.join(diffs)
    table.index.name = "experiment"
    return table


def comparison_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`comparison_table` made narrower for reading.

    Each ``<m> mean``/``<m> std`` pair becomes one ``mean ± std`` text column, with the monitored metric of
    the first experiment first.
    """
    shown = table.copy()
    metrics = [c.removesuffix(" mean") for c in table.columns if c.endswith(" mean")]
    first = str(table["monitor"].iloc[0]) if "monitor" in table.columns and len(table) else None
    metrics.sort(key=lambda m: m != first)
    for metric in metrics:
        pair = table[[f"{metric} mean", f"{metric} std"]] if f"{metric} std" in table.columns else None
        shown[f"CV {metric}"] = [_pm(*row) for row in pair.itertuples(index=False)] if pair is not None else np.nan
    shown = shown.drop(columns=[c for c in table.columns if c.endswith((" mean", " std"))])
    leading = ["folds", "monitor", *(f"CV {m}" for m in metrics)]
    return shown[[c for c in leading if c in shown.columns] + [c for c in shown.columns if c not in leading]]


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def cv_headline(runs: list[RunData]) -> tuple[list[str], list[list[str]]]:
    """A short terminal table: per experiment, finished folds and each metric as ``mean ± std``."""
    summaries = [cv_summary(run)[0] for run in runs]
    metrics = metric_columns({m for s in summaries for m in s.columns})
    rows = []
    for run, summary in zip(runs, summaries):
        cells = [_mean_std(summary, m) for m in metrics]
        rows.append([run.name, f"{len(run.folds)}/{len(run.expected)}", *cells])
    return ["experiment", "folds", *metrics], rows


def _mean_std(summary: pd.DataFrame, metric: str) -> str:
    if metric not in summary.columns or "mean" not in summary.index:
        return "-"
    std = summary.at["std", metric] if "std" in summary.index else np.nan
    return _pm(summary.at["mean", metric], std)
