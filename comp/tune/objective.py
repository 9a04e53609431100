"""One trial: sample the space, train the tuned folds into ``runs/<exp>/tune/trials/<n>/``, report, prune."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from comp.competition import Competition
from comp.config import Config, write_resolved
from comp.device import Runtime
from comp.errors import TrainError
from comp.folds import Folds, folds_hash
from comp.runfolder.layout import TRIALS
from comp.train.runner import fold_spec, run_fold, training_hash
from comp.tune.space import Dimension, apply_values, suggest
from comp.tune.study import SURPLUS_ATTR, WORKER_ATTR, TuneError, is_surplus, requeue, worker_mark

EPOCHS_ATTR, VALUES_ATTR, FOLD_SCORES_ATTR = "epochs", "values", "fold_scores"


class SurplusTrial(Exception):
    """The budget was filled by other workers while this trial was being created (it is failed, not run)."""


@dataclass
class TrialSetup:
    """What every trial of one worker shares.

    Attributes:
        cfg: The base config (the space's values are applied over it).
        comp: The competition.
        folds: The folds file.
        dims: The search space.
        runtime: Device and precision.
        tune_dir: ``runs/<exp>/tune``.
        budget: Finished trials the study should end with.
        epochs: Epochs per fold in a trial.
        fold_ids: The scored folds.
        per_fold_steps: Report one score per fold (step = fold number), as the Wilcoxon pruner
            expects; otherwise one per epoch (step = position of the fold * epochs + epoch).
        keep_checkpoints: Keep each trial's ``best.pt`` / ``last.pt``.
        log: Where progress lines go.
    """

    cfg: Config
    comp: Competition
    folds: Folds
    dims: list[Dimension]
    runtime: Runtime
    tune_dir: Path
    budget: int
    epochs: int
    fold_ids: list[int]
    per_fold_steps: bool = False
    keep_checkpoints: bool = False
    log: Callable[[str], None] = print


class Objective:
    """The Optuna objective: the mean best monitored score over the tuned folds."""

    def __init__(self, setup: TrialSetup):
        self.setup = setup
        self.fhash = folds_hash(setup.cfg.folds.name)
        metric = setup.cfg.train.monitor
        self.key = "valid_loss" if metric == "loss" else metric
        self.epochs = 0  # epochs trained in the current trial

    def __call__(self, trial: optuna.Trial) -> float:
        """Train one trial on the tuned folds; returns its mean best monitored score.

        Raises:
            SurplusTrial: The study already has its budget of trials.
        """
        s = self.setup
        if is_surplus(trial.study, trial.number, s.budget):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(f"trial {trial.number}: the study already has {s.budget} trials")
        trial.set_user_attr(WORKER_ATTR, worker_mark(trial.number))
        self.epochs = 0
        trial.set_user_attr(EPOCHS_ATTR, 0)
        values = suggest(trial, s.dims, list(s.comp.classes_))
        trial.set_user_attr(VALUES_ATTR, values)
        cfg = apply_values(s.cfg, values)
        trial_dir = s.tune_dir / TRIALS / str(trial.number)
        write_resolved(cfg, trial_dir)
        s.log(f"trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        try:
            return self._train(trial, cfg, trial_dir)
        except KeyboardInterrupt:
            # Optuna marks this trial failed; a copy is queued so the next run starts with it.
            requeue(trial.study, _frozen(trial))
            raise
        finally:
            if not s.keep_checkpoints:
                for path in trial_dir.glob("fold*/*.pt"):
                    path.unlink(missing_ok=True)

    def _train(self, trial: optuna.Trial, cfg: Config, trial_dir: Path) -> float:
        s, started = self.setup, time.time()
        chash = training_hash(cfg)
        scores: dict[str, float] = {}
        for pos, fold in enumerate(self._fold_order(trial.number)):
            spec = fold_spec(s.folds, fold, trial_dir, s.epochs, self.fhash, chash)
            spec.stream = "tune"  # seeds of its own: comp train --params must not rerun the best trial
            try:
                result = run_fold(cfg, s.comp, spec, s.runtime, callback=self._reporter(trial, pos, fold),
                                  log=lambda line, n=trial.number: s.log(f"trial {n}: {line}"), staged=False)
            except TrainError as exc:  # a non-finite loss: these settings diverge, a bad trial, not a bug
                trial.set_user_attr("diverged", str(exc))
                raise optuna.TrialPruned(f"diverged: {exc}") from None
            if result.best_score is None or not math.isfinite(result.best_score):
                raise TuneError(f"trial {trial.number}: fold {fold} has no finite {self.key} "
                                f"(e.g. auc with one class in the fold); monitor another metric")
            scores[str(fold)] = result.best_score
            trial.set_user_attr(FOLD_SCORES_ATTR, scores)
            if s.per_fold_steps:
                trial.report(result.best_score, fold)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {fold}: {self.key} {result.best_score:.4f}")
        trial.set_user_attr("seconds", round(time.time() - started, 1))
        return float(np.mean(list(scores.values())))

    def _fold_order(self, number: int) -> list[int]:
        """The tuned folds; shuffled per trial for per-fold steps (Wilcoxon pairs folds by their number)."""
        if not self.setup.per_fold_steps:
            return list(self.setup.fold_ids)
        rng = np.random.default_rng([self.setup.cfg.tune.seed, number])
        return [int(f) for f in rng.permutation(self.setup.fold_ids)]

    def _reporter(self, trial: optuna.Trial, pos: int, fold: int) -> Callable[[int, dict], None]:
        """The epoch callback: count the epoch, report the score, raise TrialPruned when the pruner says so."""
        s = self.setup

        def report(epoch: int, row: dict) -> None:
            self.epochs += 1
            trial.set_user_attr(EPOCHS_ATTR, self.epochs)
            value = row.get(self.key)
            if s.per_fold_steps or value is None or not math.isfinite(value):
                return
            trial.report(float(value), pos * s.epochs + epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at fold {fold} epoch {epoch + 1}: {self.key} {value:.4f}")

        return report


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
