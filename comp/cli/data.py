"""``comp data``: the embedded demo competition and a check of any competition folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from comp.cli import main
from comp.cli.common import config_options, echo_table, progress_bar

if TYPE_CHECKING:
    from comp.config import Config


@main.group()
def data() -> None:
    """Build the demo competition or check a competition folder."""


@data.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("data/demo"), show_default=True,
              help="Folder to write the competition to.")
@click.option("--size", type=click.IntRange(8, 512), default=32, show_default=True, help="Image side in pixels.")
@click.option("--force", is_flag=True, help="Rebuild the folder if it exists.")
def demo(out: Path, size: int, force: bool) -> None:
    """Write the embedded digits competition (train/, test/, CSVs, held-back solution.csv)."""
    from comp.demo import build_demo

    counts = build_demo(out, size=size, force=force)
    click.echo(f"wrote {out}: {counts['train']} train and {counts['test']} test images, {counts['classes']} classes")


@data.command("check")
@config_options
def check(cfg: Config) -> None:
    """Validate the competition folder named by data.root and print its class counts."""
    from comp.competition import load_competition

    comp = load_competition(cfg.data)
    test = comp.test_table()
    counts = comp.class_counts()
    total = sum(counts.values())
    echo_table([[c, n, f"{n / total:.1%}"] for c, n in counts.items()], ["class", "train", "share"])
    click.echo(f"{comp.root}: {total} train images, {len(test)} test images, {comp.num_classes} classes: ok")


@data.command("cache")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Decoding threads (default: every usable core).")
@config_options
def cache(cfg: Config, threads: int | None) -> None:
    """Decode every train and test image into the image cache (data.cache_dir) ahead of training.

    Uses every core (OpenCV decodes outside the GIL); an interrupted build keeps what it finished and
    the next one goes on from there. comp train and comp submit do the same for what is missing.
    """
    from comp.competition import load_competition
    from comp.data.prebuild import build_cache
    from comp.train.loaders import train_cache

    comp = load_competition(cfg.data)
    store = train_cache(cfg, comp)  # the test images are predicted at the training size and settings too
    sets = [("train", list(comp.train["path"]))]
    if (comp.root / (cfg.data.test_csv or cfg.data.sample_submission)).is_file():
        sets.append(("test", list(comp.test_table()["path"])))
    try:
        for what, paths in sets:
            built = build_cache(store, paths, threads, progress_bar(f"{what} images"))
            click.echo(built.summary(f"{what} images"))
    except KeyboardInterrupt:
        click.echo("\ninterrupted: the images decoded so far stay cached; run comp data cache again to go on",
                   err=True)
        sys.exit(130)
    click.echo(f"cache: {store.cache_dir.resolve()}")
