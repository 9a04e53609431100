"""Reading one experiment's run folder (``runs/<exp>/``) as ``docs/artifacts.md`` lays it out.

Only finished folds are reported: a fold is finished when its ``metrics.json`` and ``history.csv``
both exist. Expected folds come from ``config.yaml`` (``folds.k``) or ``cv.json``, so folds that
are still to be trained are named as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from comp.errors import ArtifactError, ReportError
from comp.runfolder.layout import RUNS_DIR, MemberDir, RunFolder, classes_of
from comp.runfolder.records import oof_probs, read_json, read_oof, read_table


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
        return y_true, oof_probs(self.oof, self.classes)


def load_run(name: str, runs_dir: Path = RUNS_DIR) -> RunData:
    """Read everything the report shows for experiment ``name``.

    Args:
        name: experiment name, a folder under ``runs_dir``.
        runs_dir: the runs folder.

    Returns:
        The experiment's finished folds, histories, metrics, OOF predictions and settings.

    Raises:
        ReportError: the folder is missing or no fold has finished.
        ArtifactError: an artifact cannot be read.
    """
    run = RunFolder.of(name, runs_dir)
    path = run.root
    if not path.is_dir():
        raise ReportError(f"{path}: experiment folder not found; {_known_experiments(Path(runs_dir))}")
    fold_dirs = run.fold_dirs()
    finished = {k: MemberDir(d) for k, d in fold_dirs.items()
                if MemberDir(d).metrics.is_file() and MemberDir(d).history.is_file()}
    if not finished:
        raise ReportError(f"{path}: no finished fold to report; run comp train first")
    fold_metrics = {k: read_json(m.metrics) for k, m in finished.items()}
    histories = {k: _read_history(m.history) for k, m in finished.items()}
    cv = read_json(run.cv, "re-run comp train") if run.cv.is_file() else None
    config = _read_yaml(run.config)
    data = RunData(
        name=name, path=path, folds=sorted(finished), expected=_expected_folds(config, cv, fold_dirs),
        histories=histories, fold_metrics=fold_metrics, cv=cv, config=config,
        best_params=_read_yaml(run.best_params),
    )
    data.monitor = _monitor(data)
    data.oof = _read_oof(run, data.folds)
    if data.oof is not None:
        data.classes = classes_of(data.oof.columns)
        _check_labels(data, path)
    return data


def _known_experiments(runs_dir: Path) -> str:
    if not runs_dir.is_dir():
        return f"{runs_dir} does not exist; run comp train first or pass --runs-dir"
    names = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("compare-"))
    return f"experiments in {runs_dir}: {', '.join(names)}" if names else f"{runs_dir} holds no experiment yet"


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


def _read_history(path: Path) -> pd.DataFrame:
    frame = read_table(path, ("epoch", "train_loss", "valid_loss"))
    if frame.empty:
        raise ArtifactError(f"{path}: no epoch recorded; re-run comp train for this fold")
    return frame


def _read_oof(run: RunFolder, folds: list[int]) -> pd.DataFrame | None:
    """The pooled ``oof.csv``, else the finished folds' own ``fold<k>/oof.csv`` stacked."""
    if run.oof.is_file():
        return read_oof(run.oof)
    frames = [read_oof(run.member(k).oof) for k in folds if run.member(k).oof.is_file()]
    return pd.concat(frames, ignore_index=True) if frames else None


def _check_labels(run: RunData, path: Path) -> None:
    unknown = sorted(set(run.oof["label"]) - set(run.classes))
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise ReportError(f"{path}: OOF label(s) {shown} have no prob_<class> column; re-run comp train")
