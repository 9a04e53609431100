"""``comp tune``: an Optuna study over the search space in ``tune.space``."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

import click

from comp.cli import main
from comp.cli.common import config_options, echo_table, parse_folds, with_shortcuts
from comp.errors import ConfigError

if TYPE_CHECKING:
    from comp.config import Config
    from comp.tune.run import TuneSummary


@main.command()
@click.option("--trials", type=click.IntRange(1), default=None,
              help="Finished trials (complete + pruned) the study ends with, counting earlier runs and every "
                   "worker [default: tune.trials].")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Start no new trial after this long.")
@click.option("--n-workers", type=click.IntRange(1), default=1, show_default=True,
              help="Worker processes on this machine; each gets cores/N torch threads.")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage: sqlite:///tune.db, postgresql://user:pw@host/db, or a journal file path "
                   "[default: runs/<exp>/tune/study.journal].")
@click.option("--study-name", default=None, help="Study name in the storage [default: the experiment name].")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Shortcut for --set tune.epochs=N.")
@click.option("--folds", "fold_arg", default=None, help="Folds scored per trial: N, a comma list or all (tune.folds).")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "wilcoxon", "none"]), default=None,
              help="Shortcut for --set tune.pruner=NAME.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep each trial's best.pt/last.pt (deleted by default).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the PNG figures.")
@config_options
def tune(cfg: Config, trials: int | None, timeout: float | None, n_workers: int, storage: str | None,
         study_name: str | None, epochs: int | None, fold_arg: str | None, pruner: str | None,
         keep_checkpoints: bool, plots: bool) -> None:
    """Tune learning rate, class weights, ... with Optuna -> runs/<exp>/tune/best_params.yaml.

    Rerunning continues the study; several processes or machines may share one --storage.
    """
    from comp.tune import TuneOptions, run_tune

    folds = None
    if fold_arg is not None:  # all: every fold of the folds file
        folds = parse_folds(fold_arg, "--folds")
        if folds == []:
            raise ConfigError("--folds none: a trial is scored on at least one fold; use all, N or a list such as 0,2")
        folds = list(range(cfg.folds.k)) if folds is None else folds
    cfg = with_shortcuts(cfg, {"--epochs": ("tune.epochs", epochs), "--pruner": ("tune.pruner", pruner),
                               "--folds": ("tune.folds", folds)})
    options = TuneOptions(trials=trials, timeout=timeout, n_workers=n_workers, storage=storage,
                          study_name=study_name, keep_checkpoints=keep_checkpoints, plots=plots)
    try:
        result = run_tune(cfg, options, log=click.echo)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the trial in flight is queued again; rerun the same comp tune to continue",
                   err=True)
        sys.exit(130)
    _print_result(result, cfg.train.monitor)


def _print_result(result: TuneSummary, monitor: str) -> None:
    from comp.tune.results import TABLE_HEADERS
    from comp.tune.study import redact_url

    s = result.summary
    if result.rows:
        echo_table(result.rows, TABLE_HEADERS)
    states = ", ".join(f"{n} {name.lower()}" for name, n in s["states"].items() if n)
    click.echo(f"study {s['study']}: {s['trials_finished']}/{s['trials_requested']} trials finished ({states})")
    click.echo(f"epochs trained: {s['epochs_trained']} (the finished trials without pruning: "
               f"{s['epochs_without_pruning']}; pruner {s['pruner']})")
    if s["best"] is not None:
        click.echo(f"best: trial {s['best']['trial']}, {monitor} {s['best']['value']:.4f}")
    if result.best_params is not None:
        click.echo(f"wrote {result.best_params}; train with: comp train --params {result.best_params}")
    for line in result.skipped_plots:
        click.echo(f"plot skipped: {line}")
    if result.plots:
        click.echo("plots: " + ", ".join(str(p) for p in result.plots))
    click.echo(f"summary: {result.tune_dir / 'summary.json'}")
    click.echo(f"dashboard: optuna-dashboard {shlex.quote(redact_url(result.storage))}")
