"""``comp tune``: an Optuna study around the fold training.

The face of the package is its verb, :func:`run_tune`, with the types it takes and returns. Modules:
:mod:`~comp.tune.run` (orchestration: spec, workers, summary), :mod:`~comp.tune.space` (the search-space
grammar), :mod:`~comp.tune.study` (storage, trial budget, recovery of killed trials),
:mod:`~comp.tune.objective` (one trial), :mod:`~comp.tune.results` and :mod:`~comp.tune.plots`.
"""

from comp.tune.run import TuneOptions, TuneSummary, run_tune

__all__ = ["TuneOptions", "TuneSummary", "run_tune"]
