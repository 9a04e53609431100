"""The typed records of a run folder: a fold's metrics, the CV summary, the history and the OOF table.

Each record reads and writes itself (atomically: temp file + rename) and knows whether it belongs to a
given folds file and config. ``docs/artifacts.md`` lists the same keys; a test holds the two together.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from comp.errors import ArtifactError
from comp.io import atomic_write_text
from comp.runfolder.layout import PROB_PREFIX, prob_columns

# Read ids and labels as text: labels keep their spelling ("007", "NA").
TEXT_COLUMNS = {"dtype": {"id": str, "label": str}, "keep_default_na": False}


def read_json(path: Path, fix: str = "re-run comp train for this fold") -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        ArtifactError: The file cannot be read or holds no object (``fix`` says what to do).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object; {fix}")
    return data


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as indented JSON, atomically."""
    return atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """A record from a dict, ignoring keys it does not know (a newer comp may add some)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class FoldMetrics:
    """``fold<k>/metrics.json`` (and ``full/``): how a member's training ended.

    Written last: its presence means the member's other files are complete.

    Attributes:
        fold: The fold index, or ``"full"``.
        monitor: The metric that chose the best epoch.
        mode: ``"max"`` or ``"min"``: which way ``monitor`` improves.
        best_epoch: The epoch whose weights ``best.pt`` holds (1-based; 0 before any).
        best_score: ``monitor`` at ``best_epoch`` (None for the full fit, which has no validation).
        epochs_run: Epochs trained.
        epochs_planned: Epochs asked for.
        finished: Whether training ended (all epochs or early stop), not killed.
        stopped_early: Whether early stopping ended it.
        metrics: The best epoch's history row, without ``epoch, lr, seconds, images_per_s``.
        config_hash: The training hash of the config it was trained with.
        folds_hash: The folds file's hash.
    """

    # Defaults: a file from an older comp (or hand-edited) that lacks a key reads as not finished on no
    # folds file, i.e. a fold to train again, never a crash.
    fold: int | str | None = None
    monitor: str = ""
    mode: str = ""
    best_epoch: int = 0
    best_score: float | None = None
    epochs_run: int = 0
    epochs_planned: int = 0
    finished: bool = False
    stopped_early: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    config_hash: str | None = None
    folds_hash: str | None = None

    @classmethod
    def read(cls, path: Path) -> FoldMetrics:
        """The record at ``path``.

        Raises:
            ArtifactError: The file is not readable JSON.
        """
        return _from_dict(cls, read_json(path))

    def write(self, path: Path) -> Path:
        """Write the record to ``path`` atomically."""
        return write_json(path, dataclasses.asdict(self))

    def belongs_to(self, folds_hash: str, config_hash: str) -> bool:
        """Finished, and trained on this folds file with this config."""
        return bool(self.finished) and self.folds_hash == folds_hash and self.config_hash == config_hash


@dataclass
class CVSummary:
    """``cv.json``: the cross-validation of an experiment, written once every fold has finished.

    Attributes:
        experiment: The experiment name.
        config_hash: The training hash every fold shares.
        folds: The folds file's name.
        folds_hash: Its hash.
        classes: The class list (probability-column order, spelled as in train.csv).
        monitor: The monitored metric.
        mode: ``"max"`` or ``"min"``.
        per_fold: ``{"<k>": {metric: value at the fold's best epoch}}`` (``loss`` is the validation loss).
        mean: The mean of ``per_fold`` per metric.
        std: The population standard deviation of ``per_fold`` per metric.
        oof: Every metric on the pooled OOF predictions.
        best_epochs: Each fold's best epoch.
        complete: True (a CV is written only when complete).
        tuned_folds: The folds ``comp tune`` scored its trials on (empty without tuning).
        untuned: ``{"folds", "mean", "oof"}`` of the other folds, or None.
    """

    # Defaults: a summary written by an older comp reads with what it lacks empty.
    experiment: str = ""
    config_hash: str | None = None
    folds: str = ""
    folds_hash: str | None = None
    classes: list[str] = field(default_factory=list)
    monitor: str = ""
    mode: str = ""
    per_fold: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    oof: dict[str, float] = field(default_factory=dict)
    best_epochs: list[int] = field(default_factory=list)
    complete: bool = True
    tuned_folds: list[int] = field(default_factory=list)
    untuned: dict[str, Any] | None = None

    @classmethod
    def read(cls, path: Path) -> CVSummary:
        """The summary at ``path``.

        Raises:
            ArtifactError: The file is not readable JSON.
        """
        return _from_dict(cls, read_json(path, "re-run comp train"))

    @classmethod
    def read_if_present(cls, path: Path) -> CVSummary | None:
        """The summary at ``path``, or None when there is none (or it cannot be read)."""
        try:
            return cls.read(path) if Path(path).is_file() else None
        except ArtifactError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the documented order."""
        return dataclasses.asdict(self)

    def write(self, path: Path) -> Path:
        """Write the summary to ``path`` atomically."""
        return write_json(path, self.to_dict())

    def score(self, metric: str | None = None) -> float:
        """``metric`` (default the monitor) on the pooled OOF, else its mean over folds, else NaN."""
        metric = metric or self.monitor
        return self.oof.get(metric, self.mean.get(metric, float("nan")))


def write_history(path: Path, history: list[dict[str, Any]]) -> Path:
    """``history.csv``: one row per epoch."""
    return atomic_write_text(Path(path), pd.DataFrame(history).to_csv(index=False, lineterminator="\n"))


def read_table(path: Path, required: tuple[str, ...] = (), **kwargs: Any) -> pd.DataFrame:
    """A CSV of the run folder with its ``required`` columns.

    Raises:
        ArtifactError: The file is not a readable CSV or misses a column.
    """
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable CSV ({exc})") from None
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(absent)}; see docs/artifacts.md")
    return frame


def write_oof(path: Path, frame: pd.DataFrame) -> Path:
    """An OOF table (``id,label,fold[,grade],prob_<class>...``), six significant digits."""
    return atomic_write_text(Path(path), frame.to_csv(index=False, lineterminator="\n", float_format="%.6g"))


def read_oof(path: Path) -> pd.DataFrame:
    """An OOF table with ids and labels as text.

    Raises:
        ArtifactError: Not readable, no ``id,label,fold`` or no ``prob_<class>`` column.
    """
    frame = read_table(path, ("id", "label", "fold"), **TEXT_COLUMNS)
    if not any(c.startswith(PROB_PREFIX) for c in frame.columns):
        raise ArtifactError(f"{path}: no {PROB_PREFIX}<class> columns; see docs/artifacts.md")
    return frame


def oof_table(ids: np.ndarray, labels: np.ndarray, fold: int | np.ndarray, classes: list[str],
              probs: np.ndarray, grade: np.ndarray | None = None) -> pd.DataFrame:
    """The OOF table of ``probs`` (N, C) for rows ``ids`` (``grade``: a regression head's expected grade)."""
    frame = pd.DataFrame({"id": ids, "label": labels, "fold": fold})
    if grade is not None:
        frame["grade"] = grade
    for c, column in enumerate(prob_columns(classes)):
        frame[column] = probs[:, c]
    return frame


def oof_probs(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The (N, C) probabilities of an OOF table, columns in ``classes`` order."""
    return frame[prob_columns(classes)].to_numpy(dtype=np.float64)
