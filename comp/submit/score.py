"""Scoring a submission against a solution file, and the ledger of CV score vs test score.

``submissions/ledger.csv`` gets one line per (submission, metric): when, which experiment and config,
its CV score (the OOF score of that same submission, from the ``.json`` that ``comp submit`` wrote beside
it), and the test score of the file as written, so that CV and leaderboard can be compared over time.
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
from comp.metrics import compute_metrics
from comp.runfolder.layout import RUNS_DIR, RunFolder
from comp.submit.format import SampleFormat, read_text_csv
from comp.submit.validate import check_file

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


def read_solution(path: Path, fmt: SampleFormat, label_col: str) -> pd.DataFrame:
    """The solution's ids and class indices (columns ``id``, ``target``), covering every id of the sample.

    Args:
        path: The solution CSV: an id column and a label column (extra columns such as ``Usage`` are ignored).
        fmt: The sample format (its id column, ids and classes).
        label_col: The label column's name (``data.label_col``); the only non-id column is taken otherwise.

    Raises:
        SubmitError: Unreadable, no id or label column, a label that is not a class (spelled as in
            train.csv), or sample ids the solution lacks.
    """
    frame = read_text_csv(Path(path), "solution")
    id_col = fmt.id_col if fmt.id_col in frame.columns else frame.columns[0]
    others = [c for c in frame.columns if c != id_col and c.lower() != "usage"]
    if label_col not in frame.columns:
        if len(others) != 1:
            raise SubmitError(f"{path}: no label column {label_col!r} (columns: {', '.join(frame.columns)}); "
                              f"set data.label_col")
        label_col = others[0]
    index = {c: k for k, c in enumerate(fmt.classes)}
    labels = frame[label_col].str.strip()
    unknown = ~labels.isin(index)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise SubmitError(f"{path}: line {row + 2}, column {label_col!r}: {labels.iat[row]!r} is not a class "
                          f"(classes as train.csv spells them: {', '.join(fmt.classes[:20])})")
    uncovered = sorted(set(fmt.ids) - set(frame[id_col]))
    if uncovered:
        raise SubmitError(f"{path}: {len(uncovered)} of the submission's {len(fmt.ids)} ids have no true label "
                          f"(first: {uncovered[0]!r}); score against the solution of these test ids")
    return pd.DataFrame({"id": frame[id_col].to_numpy(), "target": labels.map(index).to_numpy(dtype=np.int64)})


def read_predictions(path: Path, fmt: SampleFormat, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(class index per id, probabilities (N, K)) of a checked submission, exactly as written.

    A label file gives its labels and their one-hot rows (that is all the file says); a binary file
    gives P(positive) and 1 - P(positive); a per-class file gives its rows and their argmax.
    """
    frame = read_text_csv(path, "submission").set_index(fmt.id_col)
    missing = [i for i in ids if i not in frame.index]
    if missing:
        raise SubmitError(f"{path}: no row for solution id {missing[0]!r}")
    rows = frame.loc[ids]
    if fmt.kind == "label":
        index = {c: k for k, c in enumerate(fmt.classes)}
        labels = rows[fmt.label_col].str.strip().map(index).to_numpy(dtype=np.int64)
        return labels, np.eye(len(fmt.classes))[labels]
    if fmt.kind == "binary":
        p = pd.to_numeric(rows[fmt.proba_col]).to_numpy(dtype=np.float64)
        probs = np.empty((len(p), 2))
        probs[:, fmt.positive], probs[:, 1 - fmt.positive] = p, 1.0 - p
    else:
        probs = rows[fmt.class_cols].apply(pd.to_numeric).to_numpy(dtype=np.float64)
    return probs.argmax(1), probs


def score_predictions(y: np.ndarray, labels: np.ndarray, probs: np.ndarray, metrics: list[str]) -> dict[str, float]:
    """Accuracy, F1 and QWK on ``labels``; AUC and logloss on ``probs`` (rows as a file holds them)."""
    hard = compute_metrics(y, np.eye(probs.shape[1])[labels])
    soft = compute_metrics(y, probs)
    return {m: hard[m] if m in LABEL_METRICS else soft[m] for m in metrics}


def score_file(path: Path, solution: Path, fmt: SampleFormat, metrics: list[str], label_col: str) -> dict[str, float]:
    """Score a submission (checked first against the sample) on the solution's ids, as the file is written.

    Accuracy, F1 and QWK use the file's labels (a label column), or the argmax of its probabilities;
    AUC and logloss use its probabilities, or the one-hot rows of its labels. No side file is read:
    the score is the score of the file that would be uploaded.

    Raises:
        SubmitError: The submission fails a check, or the solution does not cover its ids.
    """
    for metric in metrics:
        if metric not in SCORE_METRICS:
            raise SubmitError(f"--metric {metric!r}: use one of {', '.join(SCORE_METRICS)}")
    check_file(path, fmt)
    truth = read_solution(solution, fmt, label_col)
    labels, probs = read_predictions(Path(path), fmt, truth["id"].tolist())
    return score_predictions(truth["target"].to_numpy(), labels, probs, metrics)


def recorded_target(submission: Path) -> tuple[str, str | None] | None:
    """(``submit.target``, ``submit.positive``) that ``comp submit`` recorded in the submission's .json.

    So the file is read as it was written whatever the config says now (None: no record).
    """
    side = Path(submission).with_suffix(".json")
    try:
        target = json.loads(side.read_text()).get("target") if side.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(target, dict) or target.get("kind") not in ("label", "proba", "binary"):
        return None
    return ("label" if target["kind"] == "label" else "proba"), target.get("positive")


def cv_record(experiment: str, submission: Path, runs_dir: Path = RUNS_DIR) -> tuple[str, dict]:
    """(config hash, OOF metrics) of what the submission was made from.

    The submission's ``.json`` side-car (written by ``comp submit``) holds the OOF score of that same
    submission: its TTA views, blend, cut-points and target kind, scored as the file is. Without one
    (a file from elsewhere), the experiment's plain training OOF in ``runs/<exp>/cv.json``.
    Missing values are empty.
    """
    side = Path(submission).with_suffix(".json")
    if side.is_file():
        meta = json.loads(side.read_text())
        if meta.get("oof"):
            return "+".join(meta.get("config_hashes", [])), dict(meta["oof"])
    cv_path = RunFolder.of(experiment, runs_dir).cv
    if cv_path.is_file():
        cv = json.loads(cv_path.read_text())
        return str(cv.get("config_hash", "")), dict(cv.get("oof", {}))
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


def ledger_rows(submission: Path, scores: dict[str, float], runs_dir: Path = RUNS_DIR) -> list[dict]:
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


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{float(value):.6f}"
