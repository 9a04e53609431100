"""Scoring a submission against a solution file, and the ledger of CV score vs test score.

``submissions/ledger.csv`` gets one line per (submission, metric): when, which experiment and config,
its CV score (the OOF score in ``runs/<exp>/cv.json``), and the test score, so that CV and
leaderboard can be compared over time.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import SubmitError
from comp.io import atomic_write_text
from comp.submit.format import SampleFormat, read_text_csv
from comp.submit.validate import check_file
from comp.train.metrics import compute_metrics

SCORE_METRICS = ("accuracy", "f1", "qwk", "auc", "logloss")
LABEL_METRICS = ("accuracy", "f1", "qwk")  # scored on the label column when there is one
LEDGER_COLUMNS = ("timestamp", "experiment", "config_hash", "cv_score", "submission", "metric", "test_score")
SUFFIXES = ("-probs", "-tta")


def infer_experiment(path: Path) -> str:
    """The experiment (or ``a+b`` blend) a submission file belongs to: ``<exp>[-tta][-probs].csv`` -> ``<exp>``."""
    stem = Path(path).stem
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem


def probs_path(path: Path) -> Path:
    """The ``-probs.csv`` file written next to a submission."""
    path = Path(path)
    return path.with_name(f"{path.stem}-probs.csv")


def read_solution(path: Path, fmt: SampleFormat, label_col: str) -> pd.DataFrame:
    """The solution's ids and class indices (columns ``id``, ``target``).

    Args:
        path: The solution CSV: an id column and a label column (extra columns such as ``Usage`` are ignored).
        fmt: The sample format (its id column and classes).
        label_col: The label column's name (``data.label_col``); the only non-id column is taken otherwise.

    Raises:
        SubmitError: Unreadable, no id or label column, or a label that is not a class.
    """
    frame = read_text_csv(Path(path), "solution")
    id_col = fmt.id_col if fmt.id_col in frame.columns else frame.columns[0]
    others = [c for c in frame.columns if c != id_col and c.lower() != "usage"]
    if label_col not in frame.columns:
        if len(others) != 1:
            raise SubmitError(f"{path}: no label column {label_col!r} (columns: {', '.join(frame.columns)}); "
                              f"set data.label_col")
        label_col = others[0]
    index = {str(c): k for k, c in enumerate(fmt.classes)}
    labels = frame[label_col].str.strip()
    unknown = ~labels.isin(index)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise SubmitError(f"{path}: line {row + 2}, column {label_col!r}: {labels.iat[row]!r} is not a class")
    return pd.DataFrame({"id": frame[id_col].to_numpy(), "target": labels.map(index).to_numpy(dtype=np.int64)})


def _read_probs(path: Path, columns: list[str], ids: list[str]) -> np.ndarray:
    frame = read_text_csv(path, "probabilities")
    absent = [c for c in ["id", *columns] if c not in frame.columns]
    if absent:
        raise SubmitError(f"{path}: no column {absent[0]!r}; expected id and prob_<class> columns")
    frame = frame.set_index("id")
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise SubmitError(f"{path}: no row for solution id {missing[0]!r}")
    return frame.loc[ids, columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def _predictions(path: Path, fmt: SampleFormat, ids: list[str], metrics: list[str]):
    """(class index per id or None, probabilities (N, K) or None) of a checked submission."""
    frame = read_text_csv(path, "submission").set_index(fmt.id_col)
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise SubmitError(f"{path}: no row for solution id {missing[0]!r}")
    labels = probs = None
    if fmt.label_col is not None:
        index = {str(c): k for k, c in enumerate(fmt.classes)}
        labels = frame.loc[ids, fmt.label_col].str.strip().map(index).to_numpy(dtype=np.int64)
    else:
        probs = frame.loc[ids, fmt.class_cols].apply(pd.to_numeric).to_numpy(dtype=np.float64)
    if probs is None and any(m not in LABEL_METRICS for m in metrics):
        side = probs_path(path)
        if not side.is_file():
            need = ", ".join(m for m in metrics if m not in LABEL_METRICS)
            raise SubmitError(f"{path}: has labels only, and {need} need probabilities; {side} not found")
        probs = _read_probs(side, [f"prob_{c}" for c in fmt.classes], ids)
    return labels, probs


def score_file(path: Path, solution: Path, fmt: SampleFormat, metrics: list[str], label_col: str) -> dict[str, float]:
    """Score a submission (checked first against the sample) on the solution's ids.

    Accuracy, F1 and QWK use the label column when the submission has one (e.g. ordinal cut-points),
    else the argmax of the probabilities; AUC and logloss use the probabilities (from the file, or
    from its ``-probs.csv`` when the file holds labels only).

    Raises:
        SubmitError: The submission fails a check, or lacks an id, or probabilities a metric needs.
    """
    for metric in metrics:
        if metric not in SCORE_METRICS:
            raise SubmitError(f"--metric {metric!r}: use one of {', '.join(SCORE_METRICS)}")
    check_file(path, fmt)
    truth = read_solution(solution, fmt, label_col)
    ids = truth["id"].tolist()
    y = truth["target"].to_numpy()
    labels, probs = _predictions(Path(path), fmt, ids, metrics)
    if labels is None:
        labels = probs.argmax(1)
    onehot = np.eye(len(fmt.classes))[labels]
    hard = compute_metrics(y, onehot)
    soft = compute_metrics(y, probs) if probs is not None else {}
    return {m: hard[m] if m in LABEL_METRICS else soft[m] for m in metrics}


def cv_record(experiment: str, submission: Path, runs_dir: Path = Path("runs")) -> tuple[str, dict]:
    """(config hash, OOF metrics) of an experiment from ``runs/<exp>/cv.json``.

    A blend (``a+b``) has no cv.json: its record comes from the submission's ``.json`` side-car
    (written by ``comp submit``) when it holds OOF metrics. Missing values are empty.
    """
    cv_path = Path(runs_dir) / experiment / "cv.json"
    if cv_path.is_file():
        cv = json.loads(cv_path.read_text())
        return str(cv.get("config_hash", "")), dict(cv.get("oof", {}))
    side = Path(submission).with_suffix(".json")
    if side.is_file():
        meta = json.loads(side.read_text())
        return "+".join(meta.get("config_hashes", [])), dict(meta.get("oof", {}))
    return "", {}


def append_ledger(rows: list[dict], ledger: Path) -> Path:
    """Append rows (keys :data:`LEDGER_COLUMNS`) to the ledger CSV, rewriting it atomically."""
    ledger = Path(ledger)
    old = ledger.read_text() if ledger.is_file() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
    if not old:
        writer.writeheader()
    elif not old.endswith("\n"):
        buffer.write("\n")
    writer.writerows(rows)
    return atomic_write_text(ledger, old + buffer.getvalue())


def ledger_rows(submission: Path, scores: dict[str, float], runs_dir: Path = Path("runs")) -> list[dict]:
    """One ledger row per metric for a scored submission."""
    experiment = infer_experiment(submission)
    config_hash, oof = cv_record(experiment, submission, runs_dir)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [
        {"timestamp": stamp, "experiment": experiment, "config_hash": config_hash,
         "cv_score": _fmt(oof.get(metric)), "submission": str(submission), "metric": metric,
         "test_score": _fmt(value)}
        for metric, value in scores.items()
    ]


def _fmt(value) -> str:
    return "" if value is None else f"{float(value):.6f}"
