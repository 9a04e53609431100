"""``comp report``: learning curves, confusion matrix, per-class scores and CV summary as one HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from comp.cli import main
from comp.cli.common import echo_table
from comp.runfolder.layout import RUNS_DIR


@main.command()
@click.argument("exps", nargs=-1, metavar="[EXP]...")
@click.option("--runs-dir", type=click.Path(path_type=Path, file_okay=False), default=RUNS_DIR,
              show_default=True, help="Folder holding one folder per experiment.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Config whose name is the experiment when no EXP is given (default: configs/demo.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set name=exp2 (repeatable).")
def report(exps: tuple[str, ...], runs_dir: Path, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Write runs/<EXP>/report/index.html, or runs/compare-<A>-<B>/ for several EXPs.

    With no EXP, the experiment is the config's name. The page is self-contained and opens
    offline straight from disk.
    """
    from comp.report import load_run, write_runs_report
    from comp.report.tables import cv_headline

    if not exps:
        from comp.config import load_config

        exps = (load_config(config_path, overrides).name,)
    runs = [load_run(name, runs_dir) for name in dict.fromkeys(exps)]
    index = write_runs_report(runs, runs_dir)
    echo_table(*reversed(cv_headline(runs)))
    for run in runs:
        if run.missing:
            click.echo(f"{run.path}: missing folds {', '.join(map(str, run.missing))}", err=True)
    click.echo(f"report: {index}")
