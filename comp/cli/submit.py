"""``comp submit`` and ``comp score``: the test predictions as a validated submission, and its test score."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from comp.cli import main
from comp.cli.common import config_options, echo_table
from comp.runfolder.layout import RUNS_DIR

if TYPE_CHECKING:
    from comp.config import Config
    from comp.predict.blend import BlendFit
    from comp.predict.select import PolicyScore
    from comp.submit import SubmitRequest
    from comp.submit.format import SampleFormat
    from comp.submit.make import SubmitResult

MERGES = ("mean", "geometric", "logits")
METRICS = ("accuracy", "f1", "qwk", "auc", "logloss")


def _sample_format(cfg: Config, metrics: Sequence[str] = (),
                   recorded: tuple[str, str | None] | None = None) -> SampleFormat:
    """The sample's format; ``recorded`` (the target a submission's .json records) overrides the config's."""
    from comp.competition import load_competition
    from comp.submit.format import sample_format

    comp = load_competition(cfg.data)
    if "qwk" in metrics:
        comp.require_order("--metric qwk")
    target, positive = recorded or (cfg.submit.target, cfg.submit.positive)
    return sample_format(Path(cfg.data.root) / cfg.data.sample_submission, comp.classes_, cfg.data.id_col,
                         target, positive)


def _check_tta(tta: str) -> None:
    """Parse the policy early; a policy that is really an experiment name gets a hint."""
    from comp.errors import ConfigError
    from comp.predict.tta import parse_tta

    if tta == "auto":
        return
    try:
        parse_tta(tta)
    except ConfigError:
        if (RUNS_DIR / tta).is_dir():
            raise ConfigError(f"--tta took {tta!r} as its policy; write `comp submit {tta} --tta` "
                              f"or `comp submit --tta auto {tta}`") from None
        raise


def _print_auto(table: list[PolicyScore], monitor: str) -> None:
    from comp.predict.select import monitored_metric

    metric = monitored_metric(monitor)
    if metric == "logloss":
        echo_table([[r.policy, r.merge, r.views, r.logloss] for r in table], ["policy", "merge", "views", "logloss"])
    else:
        rows = [[r.policy, r.merge, r.views, r.score, r.logloss] for r in table]
        echo_table(rows, ["policy", "merge", "views", metric, "logloss"])
    best = table[0]
    click.echo(f"--tta auto: {best.policy} with {best.merge} merge (best OOF {metric})")


def _print_blend(blend: BlendFit) -> None:
    rows = [[name, w, blend.member_scores[name]] for name, w in zip(blend.names, blend.weights)]
    rows += [["blend, equal weights", "-", blend.equal_score], ["blend, fitted (cross-fitted)", "-", blend.blend_score]]
    echo_table(rows, ["experiment", "weight", f"OOF {blend.metric}"])
    weights = ", ".join(f"{n} {w:.3f}" for n, w in zip(blend.names, blend.fitted or blend.weights))
    if not blend.kept:
        click.echo(f"--weights auto: the fitted weights ({weights}) did not beat equal weights out of fold on "
                   f"{blend.metric}; equal weights are used")
        return
    click.echo(f"--weights auto: {weights} (fitted on the OOF log loss; the blend's OOF {blend.metric} above is "
               f"cross-fitted: each fold blended with weights fitted on the others)")


def _print_result(result: SubmitResult, monitor: str) -> None:
    if result.auto_table:
        _print_auto(result.auto_table, monitor)
    cut = result.cutpoints
    if cut is not None:
        thresholds = ", ".join(f"{t:.3f}" for t in cut.thresholds)
        click.echo(f"ordinal cut-points {thresholds}: OOF QWK {cut.qwk_start:.4f} -> {cut.qwk_tuned:.4f} "
                   f"(argmax {cut.qwk_argmax:.4f})")
        click.echo(cut.note)
    if result.blend is not None:
        _print_blend(result.blend)
    click.echo(f"target: {result.target}")
    click.echo(f"{result.submission} written: {result.rows} rows, TTA {result.policy} ({len(result.views)} views), "
               f"merge {result.merge}, {result.seconds:.1f}s; probabilities in {result.probs}")


def choice_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say what to submit: shared by ``comp submit`` and ``comp export``."""
    options = [
        click.argument("experiments", nargs=-1),
        click.option("--tta", is_flag=False, flag_value="auto", default=None, metavar="POLICY",
                     help="none, hflip, vflip, hvflip, d4, scale:0.9,1.0,1.1 (combine with +), or auto "
                          "(chosen on OOF; a bare --tta means auto). Default: submit.tta."),
        click.option("--merge", type=click.Choice(MERGES), default=None,
                     help="How views, folds and experiments are merged (default: submit.merge)."),
        click.option("--weights", default=None, metavar="W1,W2,...|auto",
                     help="Blend weights, one per experiment, or auto: fitted on the OOF (cross-fitted over folds)."),
        click.option("--use-full/--no-use-full", default=None, help="Add the full/ model (default: submit.use_full)."),
        click.option("--ordinal/--no-ordinal", default=None,
                     help="Labels from QWK cut-points tuned on the OOF expected grade. Default: submit.ordinal."),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="Default: submit.batch_size."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def submit_request(cfg: Config, experiments: Sequence[str], tta: str | None, merge: str | None, weights: str | None,
                   use_full: bool | None, ordinal: bool | None, batch_size: int | None) -> tuple[Config, SubmitRequest]:
    """The config with ``--batch-size`` set, and the request the choice options make.

    The request is a :class:`comp.submit.make.SubmitRequest`: the choice options over the ``submit:`` config.
    """
    import torch

    from comp.config import with_values
    from comp.data.loader import resolve_num_workers
    from comp.device import resolve_threads
    from comp.predict.ensemble import parse_weights
    from comp.submit import SubmitRequest

    names = list(experiments) or [cfg.name]
    tta = tta or cfg.submit.tta
    _check_tta(tta)
    threads = resolve_threads(cfg.train.threads, resolve_num_workers(cfg.data.num_workers))
    if threads:
        torch.set_num_threads(threads)
    if batch_size:
        cfg = with_values(cfg, {"submit.batch_size": batch_size}, "--batch-size")
    return cfg, SubmitRequest(
        experiments=names, tta=tta, merge=merge or cfg.submit.merge,
        weights="auto" if weights == "auto" else parse_weights(weights, len(names)) if weights else None,
        use_full=cfg.submit.use_full if use_full is None else use_full,
        ordinal=cfg.submit.ordinal if ordinal is None else ordinal,
    )


@main.command()
@choice_options
@click.option("--check", "check_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Only check FILE against sample_submission.csv (exit 0 ok, 2 with the first problem).")
@config_options
def submit(cfg: Config, check_path: Path | None, **choices: Any) -> None:
    """Predict the test set with every fold model of EXPERIMENTS and write submissions/<exp>[-tta].csv.

    EXPERIMENTS defaults to the config's name; the file has the shape of sample_submission.csv.
    """
    if check_path is not None:
        from comp.submit import check_file

        check_file(check_path, _sample_format(cfg))
        click.echo("ok")
        return
    from comp.submit import make_submission

    cfg, request = submit_request(cfg, **choices)
    _print_result(make_submission(cfg, request), cfg.train.monitor)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--solution", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="CSV with the true labels (id and label columns).")
@click.option("--metric", "metrics", type=click.Choice(METRICS), multiple=True,
              help="Metric(s) to report (repeatable; default: train.monitor, loss read as logloss).")
@click.option("--ledger", type=click.Path(path_type=Path), default=Path("submissions/ledger.csv"),
              show_default=True, help="Ledger CSV the scores are appended to.")
@config_options
def score(cfg: Config, file: Path, solution: Path, metrics: tuple[str, ...], ledger: Path) -> None:
    """Score FILE against a solution and append the scores to the ledger (CV score vs test score)."""
    from comp.submit.score import append_ledger, ledger_rows, recorded_target, score_file

    chosen = list(metrics) or ["logloss" if cfg.train.monitor == "loss" else cfg.train.monitor]
    fmt = _sample_format(cfg, chosen, recorded_target(file))
    scores = score_file(file, solution, fmt, chosen, cfg.data.label_col)
    rows = ledger_rows(file, scores)
    append_ledger(rows, ledger)
    echo_table([[r["metric"], r["test_score"], r["cv_score"] or "-"] for r in rows], ["metric", "test", "cv"])
    click.echo(f"{ledger}: {len(rows)} line(s) appended for {rows[0]['experiment']}")
