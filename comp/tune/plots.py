"""The study's figures (PNG, matplotlib Agg): optimisation history, parameter importances, learning rate vs score.

A figure that cannot say anything yet (no complete trial; importances with fewer than two complete
trials, one parameter, or every trial scoring the same; no ``train.lr`` searched) is skipped with the
reason. A figure that fails to draw is skipped too: a plot never costs the study its results.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.exceptions import ExperimentalWarning  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from comp.io import atomic_write_bytes  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LR_KEY = "train.lr"


def write_plots(study: optuna.Study, out_dir: Path, monitor: str) -> tuple[list[Path], list[str]]:
    """Draw the figures into ``out_dir``.

    Returns:
        The PNG paths written, and one line per figure skipped (what and why).
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({name for t in complete for name in t.params})
    written, skipped = [], []
    figures = {
        "optimization_history.png": (_history, "no complete trial" if not complete else None),
        "param_importances.png": (_importances, _importances_skip(complete, names)),
        "lr_vs_score.png": (_lr_vs_score, None if any(LR_KEY in t.params for t in complete)
                            else f"no complete trial searched {LR_KEY}"),
    }
    for filename, (draw, reason) in figures.items():
        if reason is not None:
            skipped.append(f"{filename}: {reason}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                fig = draw(study, monitor)
        except (RuntimeError, ValueError) as err:  # optuna's evaluators raise these on degenerate studies
            plt.close("all")
            skipped.append(f"{filename}: could not be drawn ({err})")
            continue
        written.append(_save(fig, out_dir / filename))
    return written, skipped


def _importances_skip(complete: list, names: list[str]) -> str | None:
    """Why the importances cannot be computed, or None. fANOVA needs variance in the scores to attribute."""
    if len(complete) < 2 or len(names) < 2:
        return "needs 2 complete trials and 2 parameters"
    if len({t.value for t in complete}) < 2:
        return f"all {len(complete)} complete trials scored the same: nothing to attribute"
    return None


def _history(study: optuna.Study, monitor: str) -> Figure:
    ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=monitor)
    return ax.figure


def _importances(study: optuna.Study, monitor: str) -> Figure:
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator, target_name=monitor)
    return ax.figure


def _lr_vs_score(study: optuna.Study, monitor: str) -> Figure:
    """Complete trials at their score; pruned ones at the best score they reported before stopping."""
    fig, ax = plt.subplots(figsize=(6, 4))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        points = []
        for t in study.get_trials(deepcopy=False, states=(state,)):
            reported = [v for v in t.intermediate_values.values() if math.isfinite(v)]
            score = t.value if state == TrialState.COMPLETE else (max if maximize else min)(reported, default=None)
            if LR_KEY in t.params and score is not None:
                points.append((t.params[LR_KEY], score))
        if points:
            ax.scatter(*zip(*points), marker=marker, label=state.name.lower())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (train.lr)")
    ax.set_ylabel(monitor)
    ax.set_title("Learning rate vs score")
    ax.grid(alpha=0.3, linestyle=":")
    ax.legend()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
