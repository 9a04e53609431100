"""``comp init``: an unzipped competition folder -> ``configs/<exp>.yaml``, every detected value commented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from comp.cli import main
from comp.cli.common import echo_table


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", default=None, help="Experiment name (default: the folder's name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config to write (default: configs/<name>.yaml).")
@click.option("--force", is_flag=True, help="Replace an existing config.")
def init(folder: Path, name: str | None, out: Path | None, force: bool) -> None:
    """Read the competition FOLDER (train CSV, image folders, sample submission) and write a config.

    Detects the id, label and group columns, the image folders and extension, the class list and
    counts, what the sample submission wants (labels, per-class or binary probabilities), an image
    size, and guesses the metric. Values it cannot decide are TODO lines at the top of the file.
    """
    from comp.init import init_config

    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-.") or "exp"
    out = out or Path("configs") / f"{name}.yaml"
    path, found = init_config(folder, name, out, force=force)
    total = sum(found.counts.values())
    echo_table([[c, n, f"{n / total:.1%}"] for c, n in list(found.counts.items())[:30]], ["class", "train", "share"])
    data = found.values["data"]
    click.echo(f"id {data['id_col']!r}, label {data['label_col']!r}, group {data['group_col']!r}; "
               f"image size {data['image_size']}; {found.notes['submit.target']}")
    click.echo(f"train.monitor: {found.values['train']['monitor']} ({found.notes['train.monitor']})")
    for todo in found.todos:
        click.echo(f"TODO: {todo}")
    click.echo(f"{path} written; next: comp folds make --config {path}")
