"""``comp export`` and ``comp predict``: an offline bundle for a Kaggle code competition, and running it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from comp.cli import main
from comp.cli.common import config_options
from comp.cli.submit import choice_options, submit_request

if TYPE_CHECKING:
    from comp.config import Config


@main.command()
@choice_options
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write the bundle to (new, empty, or an earlier bundle, which is replaced).")
@config_options
def export(cfg: Config, out: Path, **choices: Any) -> None:
    """Freeze what `comp submit` would choose, with the weights, into OUT for `comp predict`.

    The choices (TTA, merge, weights, cut-points), every member's weights and a wheel of comp, for
    `comp predict` in an offline notebook.
    """
    from comp.bundle import export_bundle

    cfg, request = submit_request(cfg, **choices)
    result = export_bundle(cfg, request, out)
    chosen = result.plan.prediction
    if chosen.cut is not None:
        click.echo(chosen.cut.note)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in chosen.oof.items())
    click.echo(f"TTA {chosen.policy} ({len(chosen.views)} views), merge {chosen.merge}; OOF {scores}")
    click.echo(f"{out}: {result.files} files, {result.bytes / 1e6:.1f} MB, {result.seconds:.1f}s; "
               f"see {out}/README.md for the two notebook lines")


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit():
        raise click.BadParameter(f"{value!r}: use auto or a whole number >= 0")
    return int(value)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--test-dir", type=click.Path(path_type=Path), required=True, help="Folder of the test images.")
@click.option("--sample", type=click.Path(path_type=Path), required=True,
              help="The competition's sample_submission.csv (ids in order, columns).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("submission.csv"),
              show_default=True, help="Submission file to write.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision on CUDA (auto: bf16 where supported, else fp16).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Default: the exported submit.batch_size.")
@click.option("--num-workers", default="auto", show_default=True, callback=lambda ctx, param, v: _workers(v),
              help="DataLoader workers (auto or a number).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep decoded test images here (default: a temp folder, removed afterwards).")
def predict(bundle: Path, test_dir: Path, sample: Path, out: Path, device: str, amp: str, batch_size: int | None,
            num_workers: int | str, cache_dir: Path | None) -> None:
    """Write the submission for SAMPLE's test images with the exported BUNDLE.

    No training data, no runs/ folder, no network.
    """
    from comp.bundle import predict_bundle

    result = predict_bundle(bundle, test_dir, sample, out, device, amp, batch_size, num_workers, cache_dir,
                            log=click.echo)
    per_image = 1000 * result.seconds / max(result.rows, 1)
    click.echo(f"{result.out} written: {result.rows} rows ({result.kind}), {result.seconds:.1f}s "
               f"({per_image:.1f} ms/image)")
