"""``comp folds``: make the k-fold assignment every later stage trains and scores on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from comp.cli import main
from comp.cli.common import config_options, echo_table

if TYPE_CHECKING:
    from comp.config import Config
    from comp.folds import Folds


@main.group()
def folds() -> None:
    """Make and inspect fold assignments."""


@folds.command("make")
@click.option("--k", type=click.IntRange(2, 100), default=None, help="Number of folds (default: folds.k).")
@click.option("--seed", type=int, default=None, help="Shuffle seed (default: folds.seed).")
@click.option("--name", default=None, help="Folds file name under folds/ (default: folds.name).")
@click.option("--group-duplicates/--no-group-duplicates", default=None,
              help="Keep byte-identical images in one fold (default: folds.group_duplicates).")
@click.option("--force", is_flag=True, help="Overwrite a different existing folds file.")
@config_options
def make(cfg: Config, k: int | None, seed: int | None, name: str | None, group_duplicates: bool | None,
         force: bool) -> None:
    """Stratified (grouped when data.group_col is set) k-fold -> folds/<name>.csv and .json."""
    from comp.competition import load_competition
    from comp.folds import folds_paths, make_folds, write_folds

    k = k or cfg.folds.k
    seed = cfg.folds.seed if seed is None else seed
    name = name or cfg.folds.name
    dupes = cfg.folds.group_duplicates if group_duplicates is None else group_duplicates
    comp = load_competition(cfg.data)
    result = make_folds(comp, k=k, seed=seed, name=name, group_duplicates=dupes)
    status = write_folds(result, force=force)
    _print_counts(result, comp.classes_)
    csv_path, _ = folds_paths(name)
    extra = f", {result.meta['duplicates_merged']} duplicate images grouped" if dupes else ""
    click.echo(f"{csv_path} {status}: {result.meta['method']}, k={k}, seed={seed}{extra}")


def _print_counts(result: Folds, classes: Sequence[str]) -> None:
    counts = result.meta["class_counts"]
    rows = [[f, *counts[f].values(), sum(counts[f].values())] for f in sorted(counts, key=int)]
    echo_table(rows, ["fold", *map(str, classes), "total"])
