"""``comp models``: list our architectures, cross-check them against timm / torchvision."""

from __future__ import annotations

import click

from comp.cli import main
from comp.cli.common import echo_table


@main.group("models")
def models() -> None:
    """Our architectures (ResNet, VGG-BN): list them, prove them equal to timm / torchvision."""


@models.command("list")
@click.option("--size", type=click.IntRange(8, 4096), default=224, show_default=True,
              help="Image height and width for the FLOP count.")
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True, help="Input channels.")
@click.option("--classes", type=click.IntRange(min=1), default=1000, show_default=True, help="Classifier outputs.")
def list_command(size: int, channels: str, classes: int) -> None:
    """List our architectures with parameters and cost per image (any timm model: model.name=timm:<name>)."""
    from comp.models.check import model_complexity
    from comp.models.factory import list_models

    rows = []
    for name in list_models():
        cost = model_complexity(name, image_size=size, in_chans=int(channels), num_classes=classes)
        rows.append([name, cost.params, f"{cost.gmacs:.2f}", f"{cost.gflops:.2f}"])
    echo_table(rows, ["name", "params", "GMACs", "GFLOPs"])


@models.command("check")
@click.argument("names", nargs=-1)
@click.option("--all", "check_all", is_flag=True, help="Check every architecture.")
@click.option("--size", type=click.IntRange(8, 1024), default=64, show_default=True, help="Test image size.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Test batch size.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch threads.")
@click.option("--reps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed training steps per model (after 2 warm-up steps).")
@click.pass_context
def check_command(ctx: click.Context, names: tuple[str, ...], check_all: bool, size: int, batch: int,
                  threads: int, reps: int) -> None:
    """Copy timm's / torchvision's weights into ours and compare counts, keys, shapes, logits and speed.

    Exits with 1 if any architecture fails.
    """
    from comp.models.check import TOLERANCE, check_models
    from comp.models.factory import list_models

    if check_all:
        names = tuple(list_models())
    if not names:
        raise click.UsageError("name the architectures to check (e.g. resnet18) or pass --all")
    results = check_models(list(names), progress=lambda n: click.echo(f"checking {n} ...", err=True),
                           image_size=size, batch_size=batch, threads=threads, reps=reps)
    rows = [
        [r.name, r.params_ours, r.params_ref, "yes" if r.keys_match and r.shapes_match else "no",
         f"{r.max_abs_diff:.1e}", f"{r.time_ratio:.3f}", "PASS" if r.passed else "FAIL"]
        for r in results
    ]
    echo_table(rows, ["name", "params ours", "params ref", "keys/shapes ok", "max|Δlogit|", "time ours/ref",
                      "result"])
    failed = [r.name for r in results if not r.passed]
    if failed:
        click.echo(f"FAIL: {', '.join(failed)} (params, keys, shapes or logits beyond {TOLERANCE:g})", err=True)
        ctx.exit(1)
