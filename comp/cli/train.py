"""``comp train``: one model per fold, the OOF predictions and CV summary, and the optional full fit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from comp.cli import main
from comp.cli.common import config_options, echo_table, parse_folds, progress_bar, with_shortcuts

if TYPE_CHECKING:
    from comp.config import Config
    from comp.runfolder.records import CVSummary


@main.command()
@click.option("--fold", "fold", default="all", show_default=True,
              help="Folds to train: all, N, or a comma list (0,2); none with --full for only the final fit.")
@click.option("--full", is_flag=True, help="Then train on all labelled data for the folds' mean best epoch.")
@click.option("--full-epochs", type=click.IntRange(1), default=None, help="Epochs of the full fit (overrides).")
@click.option("--resume", is_flag=True, help="Continue interrupted folds from last.pt; skip finished ones.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Shortcut for --set train.epochs=N.")
@click.option("--params", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Tuned parameters (runs/<exp>/tune/best_params.yaml) applied over the config.")
@click.option("--report/--no-report", default=True, show_default=True, help="Write runs/<exp>/report/ at the end.")
@config_options
def train(cfg: Config, fold: str, full: bool, full_epochs: int | None, resume: bool, epochs: int | None,
          params: Path | None, report: bool) -> None:
    """Train one model per fold -> runs/<exp>/fold<k>/, oof.csv and cv.json (and full/ with --full)."""
    from comp.train import run_training

    if params is not None:
        from comp.config import apply_params

        cfg = apply_params(cfg, params)
    cfg = with_shortcuts(cfg, {"--epochs": ("train.epochs", epochs)})
    try:
        summary = run_training(cfg, folds=parse_folds(fold), resume=resume, full=full, full_epochs=full_epochs,
                               log=click.echo, progress=progress_bar("image cache"))
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: the last finished epoch is in {cfg.run_dir}/fold*/last.pt; "
                   f"continue with: comp train --resume", err=True)
        sys.exit(130)
    if summary.cv:
        _print_cv(summary.cv)
        click.echo(f"wrote {summary.run_dir}/oof.csv and cv.json")
    if report and summary.cv:
        _write_report(cfg.name)


def _print_cv(cv: CVSummary) -> None:
    metrics = [m for m in ("accuracy", "f1", "qwk", "auc", "logloss", "loss") if m in cv.mean]
    rows = [[f, *(v[m] for m in metrics)] for f, v in cv.per_fold.items()]
    rows.append(["mean", *(cv.mean[m] for m in metrics)])
    rows.append(["std", *(cv.std[m] for m in metrics)])
    rows.append(["oof", *(cv.oof.get(m, float("nan")) for m in metrics)])
    echo_table(rows, ["fold", *metrics])
    monitor = cv.monitor
    click.echo(f"CV {monitor} (pooled OOF): {cv.score():.4f}")
    untuned = cv.untuned
    if cv.tuned_folds and untuned:
        part = untuned["oof"].get(monitor, untuned["mean"].get(monitor, float("nan")))
        tuned = ",".join(str(f) for f in cv.tuned_folds)
        click.echo(f"CV {monitor} of the folds comp tune did not score on ({len(untuned['folds'])}, "
                   f"pooled OOF): {part:.4f} (fold {tuned} chose the hyperparameters)")


def _write_report(name: str) -> None:
    from comp.report import write_report

    path = write_report([name])
    click.echo(f"report: {path}")
