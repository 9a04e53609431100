"""What a study leaves behind: ``best_params.yaml``, ``summary.json`` and the table of top trials."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from comp.io import atomic_write_text
from comp.tune.objective import EPOCHS_ATTR, VALUES_ATTR
from comp.tune.study import FINISHED, SURPLUS_ATTR, StudySpec, redact_url

TABLE_HEADERS = ["trial", "state", "value", "epochs", "params"]


def trial_values(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's settings as the config takes them (class weights as one list or one power)."""
    return dict(trial.user_attrs.get(VALUES_ATTR) or trial.params)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None when there is none yet."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_best_params(study: optuna.Study, path: Path, monitor: str) -> Path | None:
    """Write the best trial's settings as dotted keys (``train.lr: 0.0023``), for ``comp train --params``.

    Returns:
        The path written, or None when no trial has completed.
    """
    best = best_trial(study)
    if best is None:
        return None
    header = (f"# study {study.study_name}: trial {best.number}, {monitor} {best.value:.4f}\n"
              f"# use with: comp train --params {path}\n")
    body = yaml.safe_dump(trial_values(best), sort_keys=False, default_flow_style=False)
    return atomic_write_text(path, header + body)


def summarize(study: optuna.Study, spec: StudySpec, budget: int, epochs_per_trial: int,
              seconds: float) -> dict[str, Any]:
    """The study in numbers: trial states, epochs trained (the cost), and the best trial.

    Args:
        study: The study.
        spec: Its name, storage and settings.
        budget: The finished trials requested.
        epochs_per_trial: Epochs a trial trains when it is not pruned (epochs x folds).
        seconds: Wall time of this run (``trial_seconds`` sums every trial's own time, all runs).
    """
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    finished = [t for t in trials if t.state in FINISHED]
    best = best_trial(study)
    return {
        "study": study.study_name, "storage": redact_url(spec.storage), "direction": spec.direction,
        "monitor": spec.key.get("monitor"), "pruner": spec.pruner, "seed": spec.seed,
        "folds": spec.key.get("folds"), "folds_hash": spec.key.get("folds_hash"),
        "epochs_per_fold": spec.key.get("epochs"),
        "trials_requested": budget, "trials_finished": len(finished), "states": states,
        "surplus": sum(bool(t.user_attrs.get(SURPLUS_ATTR)) for t in trials),
        "retried": sum("failed_trial" in t.system_attrs for t in trials),
        "epochs_trained": sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in trials),
        "epochs_trained_finished": sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in finished),
        "epochs_without_pruning": len(finished) * epochs_per_trial,
        "best": None if best is None else {
            "trial": best.number, "value": best.value, "params": trial_values(best),
            "epochs": best.user_attrs.get(EPOCHS_ATTR)},
        "trial_seconds": round(sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                                   if t.datetime_complete and t.datetime_start), 1),
        "seconds": round(seconds, 1),
    }


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    """Write ``summary`` as indented JSON atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


def top_trials(study: optuna.Study, n: int = 10) -> list[list[Any]]:
    """Rows for the table: complete trials best first, then pruned ones by their best reported score."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    trials = study.get_trials(deepcopy=False, states=FINISHED)

    def rank(t: FrozenTrial) -> tuple:
        if t.state == TrialState.COMPLETE:
            return (0, sign * t.value)
        reported = [v for v in t.intermediate_values.values() if math.isfinite(v)]
        best = (max if sign < 0 else min)(reported) if reported else math.inf * sign
        return (1, sign * best)

    rows = []
    for t in sorted(trials, key=rank)[:n]:
        value = t.value if t.state == TrialState.COMPLETE else "-"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial_values(t).items())
        rows.append([t.number, t.state.name.lower(), value, t.user_attrs.get(EPOCHS_ATTR, "?"), params])
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value[:5]) + (", ...]" if len(value) > 5 else "]")
    return str(value)
