"""``comp tune``'s orchestration: the study's spec, the image cache, the workers and the summary.

The study lives in ``runs/<exp>/tune/`` (a journal file) or any Optuna storage URL; rerunning adds
trials until the study holds the requested number of finished ones, and several processes or
machines can work on it at once. See :mod:`comp.tune.space` for the search-space grammar and
:mod:`comp.tune.study` for the trial budget and the recovery of killed trials.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any

from comp.config import Config
from comp.data.prebuild import usable_cores
from comp.errors import CompError, ConfigError, TuneError
from comp.metrics import HIGHER_IS_BETTER

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from comp.tune.study import StudySpec

@dataclass
class TuneOptions:
    """How to run a study (the what is in ``cfg.tune``).

    Attributes:
        trials: Finished trials (complete + pruned) the study should hold in the end (None: ``tune.trials``).
        timeout: Seconds after which a worker starts no new trial (None: no limit).
        n_workers: Processes on this machine, each with ``cores / n_workers`` torch threads.
        storage: Optuna storage URL or journal file path (None: ``runs/<exp>/tune/study.journal``).
        study_name: Study name in the storage (None: the experiment name).
        keep_checkpoints: Keep each trial's ``best.pt`` / ``last.pt`` (deleted by default to save disk).
        plots: Write the PNG figures.
    """

    trials: int | None = None
    timeout: float | None = None
    n_workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    keep_checkpoints: bool = False
    plots: bool = True


@dataclass
class TuneSummary:
    """What a run left: the summary dict (as in ``summary.json``), the table rows and the files."""

    tune_dir: Path
    storage: str
    summary: dict
    rows: list[list]
    best_params: Path | None
    plots: list[Path] = field(default_factory=list)
    skipped_plots: list[str] = field(default_factory=list)


def run_tune(cfg: Config, options: TuneOptions, log: Callable[[str], None] = print) -> TuneSummary:
    """Run (or continue) the study until it holds ``trials`` finished trials or ``timeout`` passes.

    Raises:
        CompError: A bad space or config, a study made from other settings, a failed worker.
    """
    from comp.tune.study import open_study

    started = time.time()
    spec, budget, epochs_per_trial = _study_spec(cfg, options)
    open_study(spec)  # created (and checked) once, before any worker starts
    _prebuild(cfg, log)
    if options.n_workers == 1:
        run_worker(cfg, options, spec, budget, log)
    else:
        _run_processes(cfg, options, spec, budget, log)
    return _finish(cfg, options, spec, budget, epochs_per_trial, time.time() - started)


def _prebuild(cfg: Config, log: Callable[[str], None]) -> None:
    """The image cache built once with every core, before the trials (and their processes) start."""
    from comp.competition import load_competition
    from comp.train.loaders import prebuild_train_cache

    build = prebuild_train_cache(cfg, load_competition(cfg.data))
    if build.decoded:
        log(build.summary("train images"))


def _study_spec(cfg: Config, options: TuneOptions) -> tuple[StudySpec, int, int]:
    """The study's spec, the trial budget and the epochs an unpruned trial trains."""
    from comp.competition import load_competition
    from comp.folds import folds_hash, read_folds
    from comp.train.runner import training_hash
    from comp.tune.space import parse_space
    from comp.tune.study import StudySpec, default_storage

    comp = load_competition(cfg.data)
    if cfg.train.monitor == "qwk":
        comp.require_order("train.monitor: qwk (the tuning objective)")
    folds = read_folds(cfg.folds.name, comp, k=cfg.folds.k)
    fold_ids = _check_folds(cfg.tune.folds, folds.k)
    dims = parse_space(cfg, list(comp.classes_))
    epochs = cfg.tune.epochs or cfg.train.epochs
    key = {"config_hash": training_hash(cfg), "folds_hash": folds_hash(cfg.folds.name), "folds": fold_ids,
           "epochs": epochs, "monitor": cfg.train.monitor, "space": [vars(d) for d in dims]}
    spec = StudySpec(
        name=options.study_name or cfg.name, storage=options.storage or default_storage(cfg.run.tune),
        direction="maximize" if HIGHER_IS_BETTER[cfg.train.monitor] else "minimize",
        key=json.loads(json.dumps(key)), seed=cfg.tune.seed, pruner=cfg.tune.pruner,
        steps=len(fold_ids) if cfg.tune.pruner == "wilcoxon" else epochs * len(fold_ids), n_folds=len(fold_ids))
    return spec, options.trials or cfg.tune.trials, epochs * len(fold_ids)


def _check_folds(fold_ids: list[int], k: int) -> list[int]:
    bad = [f for f in fold_ids if not 0 <= f < k]
    if bad or not fold_ids:
        raise ConfigError(f"tune.folds: {fold_ids} must name folds in 0..{k - 1} (the folds file has k={k})")
    return sorted(set(fold_ids))


def run_worker(cfg: Config, options: TuneOptions, spec: StudySpec, budget: int,
               log: Callable[[str], None] = print) -> None:
    """One worker: recover trials of dead workers, then run trials until the budget or the timeout."""
    from comp.competition import load_competition
    from comp.data.loader import resolve_num_workers
    from comp.device import setup_runtime, teardown
    from comp.folds import read_folds
    from comp.tune.objective import Objective, SurplusTrial, TrialSetup
    from comp.tune.space import parse_space
    from comp.tune.study import budget_reached, open_study, recover_stale

    study = open_study(spec)
    for number in recover_stale(study):
        log(f"trial {number}: its worker is gone; marked failed and queued again with the same parameters")
    if budget_reached(study, budget):
        return
    runtime = setup_runtime(cfg.train, resolve_num_workers(cfg.data.num_workers))
    try:
        comp = load_competition(cfg.data)
        setup = TrialSetup(
            cfg=cfg, comp=comp, folds=read_folds(cfg.folds.name, comp, k=cfg.folds.k),
            dims=parse_space(cfg, list(comp.classes_)), runtime=runtime, tune_dir=cfg.run.tune,
            budget=budget, epochs=spec.key["epochs"], fold_ids=spec.key["folds"],
            per_fold_steps=spec.pruner == "wilcoxon", keep_checkpoints=options.keep_checkpoints, log=log)
        study.optimize(Objective(setup), timeout=options.timeout, catch=(SurplusTrial,),
                       callbacks=[_AfterTrial(budget, log)], gc_after_trial=False)
    finally:
        teardown(runtime)


class _AfterTrial:
    """Log the trial's outcome, recover dead workers' trials, stop once the budget is filled."""

    def __init__(self, budget: int, log: Callable[[str], None]):
        self.budget, self.log = budget, log

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from comp.tune.objective import EPOCHS_ATTR
        from comp.tune.study import FINISHED, SURPLUS_ATTR, budget_reached, count_states, recover_stale

        if not trial.user_attrs.get(SURPLUS_ATTR):
            value = "" if trial.value is None else f" {trial.value:.4f}"
            done = count_states(study, FINISHED)
            self.log(f"trial {trial.number}: {trial.state.name.lower()}{value} after "
                     f"{trial.user_attrs.get(EPOCHS_ATTR, 0)} epochs ({done}/{self.budget} finished)")
        for number in recover_stale(study):
            self.log(f"trial {number}: its worker is gone; marked failed and queued again")
        if budget_reached(study, self.budget):
            study.stop()


def _run_processes(cfg: Config, options: TuneOptions, spec: StudySpec, budget: int,
                   log: Callable[[str], None]) -> None:
    """Run the study in ``n_workers`` processes on this machine, each with its share of the cores.

    Their lines come back through a queue to ``log``, and a worker's error is raised here.

    Raises:
        TuneError: A worker failed (its message, or its exit code).
    """
    n = options.n_workers
    cfg = cfg.model_copy(deep=True)
    if cfg.train.threads in (None, "auto"):
        cfg.train.threads = max(1, usable_cores() // n)
    if cfg.data.num_workers == "auto":
        cfg.data.num_workers = 0  # the cores are shared out between trials, not to loader processes
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(cfg.to_dict(), options, spec, budget, i, queue), daemon=False)
             for i in range(n)]
    for proc in procs:
        proc.start()
    errors = _relay(procs, queue, log)
    failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0 and i not in errors]
    if errors:
        i, message = next(iter(errors.items()))
        raise TuneError(f"tune worker {i}: {message}")
    if failed:
        i, code = failed[0]
        raise TuneError(f"tune worker {i} exited with code {code}; rerun comp tune to continue the study")


def _relay(procs: list, queue: Any, log: Callable[[str], None]) -> dict[int, str]:
    """Pass the workers' lines to ``log`` and return their errors by worker.

    Reads while any worker lives, then, once all are joined, what is left in the queue (a process
    flushes its queue as it exits: what it put just before is read there, not lost).
    """
    errors: dict[int, str] = {}

    def take(message: tuple) -> None:
        kind, index, text = message
        if kind == "log":
            log(f"[worker {index}] {text}")
        else:
            errors.setdefault(index, text)

    while any(p.is_alive() for p in procs):
        try:
            take(queue.get(timeout=0.2))
        except Empty:
            continue
    for proc in procs:
        proc.join()
    while True:
        try:
            take(queue.get(timeout=0.05))
        except Empty:
            return errors


def _worker_main(raw: dict, options: TuneOptions, spec: StudySpec, budget: int, index: int, queue: Any) -> None:
    """Entry point of a worker process: its lines and its error go to the parent through ``queue``."""
    try:
        run_worker(Config.model_validate(raw), options, spec, budget, lambda line: queue.put(("log", index, line)))
    except CompError as exc:
        queue.put(("error", index, str(exc)))
    except KeyboardInterrupt:  # the parent usually got the same Ctrl-C; if not, it reports this one
        queue.put(("error", index, "interrupted; rerun comp tune to continue the study"))


def _finish(cfg: Config, options: TuneOptions, spec: StudySpec, budget: int, epochs_per_trial: int,
            seconds: float) -> TuneSummary:
    from comp.tune.results import summarize, top_trials, write_best_params, write_summary
    from comp.tune.study import open_study

    study = open_study(spec)
    summary = summarize(study, spec, budget, epochs_per_trial, seconds)
    write_summary(summary, cfg.run.tune_summary)
    best = write_best_params(study, cfg.run.best_params, cfg.train.monitor)
    plots, skipped = [], []
    if options.plots:
        from comp.tune.plots import write_plots

        plots, skipped = write_plots(study, cfg.run.tune, cfg.train.monitor)
    return TuneSummary(cfg.run.tune, spec.storage, summary, top_trials(study), best, plots, skipped)
