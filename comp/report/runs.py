"""Reading one experiment's run folder (``runs/<exp>/``) as ``docs/artifacts.md`` lays it out.

Only finished folds are reported: a fold is finished when its ``metrics.json`` and ``history.csv``
both exist. Expected folds come from ``config.yaml`` (``folds.k``) or ``cv.json``, so folds that
are still to be trained are named as missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from comp.errors import ReportError

FOLD_DIR = re.compile(r"^fold(\d+)$")


@dataclass
class RunData:
    """What the report needs from one experiment folder.

    Attributes:
        name: the experiment name (the folder name under the runs folder).
        path: the experiment folder, ``runs/<exp>``.
        folds: finished fold indices, ascending.
        expected: every fold index the experiment should have (finished or not).
        histories: per finished fold, its ``history.csv`` (one row per epoch).
        fold_metrics: per finished fold, its ``metrics.json``.
        monitor: the monitored metric (from ``metrics.json``/``cv.json``; ``accuracy`` if unknown).
        oof: pooled out-of-fold predictions (``id,label,fold,prob_<class>...``), or None.
        classes: class names in probability-column order (empty without OOF predictions).
        cv: ``cv.json`` when present, else None.
        config: ``config.yaml`` as a plain dict (empty when absent).
        best_params: ``tune/best_params.yaml`` as a plain dict (empty when absent).
    """

    name: str
    path: Path
    folds: list[int]
    expected: list[int]
    histories: dict[int, pd.DataFrame]
    fold_metrics: dict[int, dict[str, Any]]
    monitor: str = "accuracy"
    oof: pd.DataFrame | None = None
    classes: list[str] = field(default_factory=list)
    cv: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    best_params: dict[str, Any] = field(default_factory=dict)

    @property
    def missing(self) -> list[int]:
        """Expected folds that have not finished."""
        return [k for k in self.expected if k not in self.folds]

    def labels_and_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """The OOF labels as class indices (N,) and the probabilities (N, C)."""
        assert self.oof is not None, "labels_and_probs() needs OOF predictions"
        index = {name: i for i, name in enumerate(self.classes)}
        y_true = self.oof["label"].map(index).to_numpy(dtype=np.int64)
        probs = self.oof[[f"prob_{c}" for c in self.classes]].to_numpy(dtype=np.float64)
        return y_true, probs


def load_run(name: str, runs_dir: Path = Path("runs")) -> RunData:
    """Read everything the report shows for experiment ``name``.

    Args:
        name: experiment name, a folder under ``runs_dir``.
        runs_dir: the runs folder.

    Returns:
        The experiment's finished folds, histories, metrics, OOF predictions and settings.

    Raises:
        ReportError: the folder is missing, no fold has finished, or an artifact cannot be read.
    """
    path = Path(runs_dir) / name
    if not path.is_dir():
        raise ReportError(f"{path}: experiment folder not found; {_known_experiments(Path(runs_dir))}")
    fold_dirs = _fold_dirs(path)
    finished = {k: d for k, d in fold_dirs.items() if (d / "metrics.json").is_file() and (d / "history.csv").is_file()}
    if not finished:
        raise ReportError(f"{path}: no finished fold to report; run comp train first")
    fold_metrics = {k: _read_json(d / "metrics.json") for k, d in finished.items()}
    histories = {k: _read_history(d / "history.csv") for k, d in finished.items()}
    cv = _read_json(path / "cv.json") if (path / "cv.json").is_file() else None
    config = _read_yaml(path / "config.yaml")
    run = RunData(
        name=name, path=path, folds=sorted(finished), expected=_expected_folds(config, cv, fold_dirs),
        histories=histories, fold_metrics=fold_metrics, cv=cv, config=config,
        best_params=_read_yaml(path / "tune" / "best_params.yaml"),
    )
    run.monitor = _monitor(run)
    run.oof = _read_oof(path, run.folds)
    if run.oof is not None:
        run.classes = [c.removeprefix("prob_") for c in run.oof.columns if c.startswith("prob_")]
        _check_labels(run, path)
    return run


def _known_experiments(runs_dir: Path) -> str:
    if not runs_dir.is_dir():
        return f"{runs_dir} does not exist; run comp train first or pass --runs-dir"
    names = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("compare-"))
    return f"experiments in {runs_dir}: {', '.join(names)}" if names else f"{runs_dir} holds no experiment yet"


def _fold_dirs(path: Path) -> dict[int, Path]:
    found = {}
    for child in path.iterdir():
        match = FOLD_DIR.match(child.name)
        if match and child.is_dir():
            found[int(match.group(1))] = child
    return found


def _expected_folds(config: dict[str, Any], cv: dict[str, Any] | None, fold_dirs: dict[int, Path]) -> list[int]:
    k = (config.get("folds") or {}).get("k")
    expected = set(range(k)) if isinstance(k, int) else set()
    if cv:
        expected |= {int(f) for f in cv.get("per_fold", {})}
    return sorted(expected | set(fold_dirs))


def _monitor(run: RunData) -> str:
    for source in (*run.fold_metrics.values(), run.cv or {}):
        if source.get("monitor"):
            return str(source["monitor"])
    return str((run.config.get("train") or {}).get("monitor", "accuracy"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not readable JSON ({exc}); re-run comp train for this fold") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object; re-run comp train for this fold")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise ReportError(f"{path}: not valid YAML; fix or delete it") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping; fix or delete it")
    return data


def _read_csv(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not a readable CSV ({exc})") from None
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise ReportError(f"{path}: missing column(s) {', '.join(absent)}; see docs/artifacts.md")
    return frame


def _read_history(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, ("epoch", "train_loss", "valid_loss"))
    if frame.empty:
        raise ReportError(f"{path}: no epoch recorded; re-run comp train for this fold")
    return frame


def _read_oof(path: Path, folds: list[int]) -> pd.DataFrame | None:
    """The pooled ``oof.csv``, else the finished folds' own ``fold<k>/oof.csv`` stacked."""
    text = {"dtype": {"id": str, "label": str}, "keep_default_na": False}  # labels as spelled ("NA", "007")
    pooled = path / "oof.csv"
    if pooled.is_file():
        return _check_oof(_read_csv(pooled, ("id", "label", "fold"), **text), pooled)
    parts = [path / f"fold{k}" / "oof.csv" for k in folds]
    frames = [_check_oof(_read_csv(p, ("id", "label", "fold"), **text), p) for p in parts if p.is_file()]
    return pd.concat(frames, ignore_index=True) if frames else None


def _check_oof(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if not any(c.startswith("prob_") for c in frame.columns):
        raise ReportError(f"{path}: no prob_<class> columns; see docs/artifacts.md")
    return frame


def _check_labels(run: RunData, path: Path) -> None:
    unknown = sorted(set(run.oof["label"]) - set(run.classes))
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise ReportError(f"{path}: OOF label(s) {shown} have no prob_<class> column; re-run comp train")
