"""Assembling the report folders: ``runs/<exp>/report/`` for one experiment, ``runs/compare-<a>-<b>/`` for several."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from comp.io import atomic_write_text
from comp.report import plots, tables
from comp.report.html import Section, render_page
from comp.report.runs import ReportError, RunData, load_run
from comp.runfolder.layout import REPORT, RUNS_DIR, RunFolder

# Everything a report folder may hold; cleared first so a re-run never shows stale files.
REPORT_FILES = (
    "index.html", "curves.png", "confusion_counts.png", "confusion_normalized.png", "confusion_counts.csv",
    "per_class.png", "per_class.csv", "cv_summary.csv", "folds.csv", "curves_overlay.png", "comparison.csv",
)


def write_report(exps: list[str], runs_dir: Path = RUNS_DIR) -> Path:
    """Write the HTML report of one experiment, or the comparison of several.

    One experiment goes to ``<runs_dir>/<exp>/report/``; several go to
    ``<runs_dir>/compare-<a>-<b>/`` (and each also gets its own report, linked from the comparison).

    Args:
        exps: experiment names (folders under ``runs_dir``); a single string is taken as one name.
        runs_dir: the runs folder.

    Returns:
        The path of the ``index.html`` written.

    Raises:
        ReportError: no experiment given, a folder is missing, or an experiment has no finished fold.
    """
    names = list(dict.fromkeys([exps] if isinstance(exps, str) else exps))
    if not names:
        raise ReportError("no experiment to report; name one, e.g. comp report demo")
    return write_runs_report([load_run(name, Path(runs_dir)) for name in names], Path(runs_dir))


def write_runs_report(runs: list[RunData], runs_dir: Path = RUNS_DIR) -> Path:
    """:func:`write_report` for experiments already loaded with :func:`~comp.report.runs.load_run`."""
    if len(runs) == 1:
        return write_experiment_report(runs[0])
    return write_comparison_report(runs, Path(runs_dir))


def _clear(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)


def _write_csv(frame: pd.DataFrame, path: Path, index_label: str | None = None, index: bool = True) -> str:
    atomic_write_text(path, frame.to_csv(index=index, index_label=index_label))
    return path.name


def status_lines(run: RunData) -> list[str]:
    """What the run holds: finished and missing folds, the monitored metric, what the OOF covers."""
    mode = next((m.get("mode") for m in run.fold_metrics.values() if m.get("mode")), None)
    lines = [
        f"{len(run.folds)} of {len(run.expected)} folds finished ({', '.join(map(str, run.folds))}); "
        f"monitor: {run.monitor}" + (f" ({mode})" if mode else ""),
    ]
    if run.missing:
        lines.append(f"missing folds: {', '.join(map(str, run.missing))} (not trained or not finished); "
                     "CV and OOF numbers cover the finished folds only")
    if run.oof is None:
        lines.append("missing OOF predictions (no oof.csv): no confusion matrix or per-class scores")
    if run.cv and run.cv.get("config_hash"):
        lines.append(f"config hash {run.cv['config_hash']}, folds hash {run.cv.get('folds_hash', '?')}")
    return lines


def write_experiment_report(run: RunData) -> Path:
    """Write ``runs/<exp>/report/``: learning curves, CV summary, confusion matrix, per-class scores.

    Returns:
        The path of ``index.html``.
    """
    out = RunFolder(run.path).report
    _clear(out)
    sections = [_cv_section(run, out), _curves_section(run, out)]
    if run.oof is not None:
        sections += _oof_sections(run, out)
    page = render_page(f"{run.name}: report", status_lines(run), sections)
    return atomic_write_text(out / "index.html", page)


def _cv_section(run: RunData, out: Path) -> Section:
    summary, source = tables.cv_summary(run)
    status = tables.fold_status(run)
    files = [_write_csv(summary, out / "cv_summary.csv", "fold"), _write_csv(status, out / "folds.csv")]
    section = Section("Cross-validation").text(f"Each metric per fold (at its best epoch), mean, std and "
                                               f"pooled OOF score. Source: {source}.")
    return section.table(summary).table(status, digits=4).links(files)


def _curves_section(run: RunData, out: Path) -> Section:
    png = plots.save_figure(plots.plot_learning_curves(run), out / "curves.png")
    return Section("Learning curves").image(png, f"{run.name} learning curves").links(["curves.png"])


def _oof_sections(run: RunData, out: Path) -> list[Section]:
    return [_confusion_section(run, out), _per_class_section(run, out)]


def _confusion_section(run: RunData, out: Path) -> Section:
    covered = sorted(int(f) for f in pd.unique(run.oof["fold"]))
    counts = tables.confusion_counts(run)
    count_frame = pd.DataFrame(counts, index=run.classes, columns=run.classes)
    files = [_write_csv(count_frame, out / "confusion_counts.csv", "true/predicted")]
    section = Section("Confusion matrix (pooled OOF)").text(
        f"{len(run.oof)} out-of-fold predictions from folds {', '.join(map(str, covered))}; "
        "prediction = the most probable class. Rows: true class; columns: predicted class.")
    for name, matrix, normalised, label in (
        ("confusion_counts.png", counts, False, "counts"),
        ("confusion_normalized.png", tables.row_normalise(counts), True, "row-normalised (recall on the diagonal)"),
    ):
        fig = plots.plot_confusion(matrix, run.classes, normalised, f"{run.name}: OOF confusion, {label}")
        section.image(plots.save_figure(fig, out / name), f"confusion matrix, {label}")
        files.append(name)
    return section.links(files)


def _per_class_section(run: RunData, out: Path) -> Section:
    scores = tables.per_class_scores(run)
    fig = plots.plot_per_class(scores, f"{run.name}: per-class scores, worst F1 first")
    png = plots.save_figure(fig, out / "per_class.png")
    files = ["per_class.png", _write_csv(scores, out / "per_class.csv", index=False)]
    section = Section("Per-class precision, recall, F1").text("Pooled OOF predictions; worst F1 first.")
    section.image(png, "per-class scores")
    return section.table(scores.set_index("class"), collapsed=f"table ({len(scores)} classes)").links(files)


def write_comparison_report(runs: list[RunData], runs_dir: Path) -> Path:
    """Write ``runs/compare-<a>-<b>/``, and each experiment's own report, linked from it.

    The comparison has overlaid curves and one table of scores, tuned parameters and config differences.

    Returns:
        The path of the comparison's ``index.html``.
    """
    out = runs_dir / ("compare-" + "-".join(r.name for r in runs))
    _clear(out)
    own = {r.name: write_experiment_report(r) for r in runs}
    table = tables.comparison_table(runs)
    files = [_write_csv(table, out / "comparison.csv")]
    scores = Section("Scores, tuned parameters and config differences").text(
        "CV mean and std per metric over each experiment's finished folds; 'tuned' columns come from "
        "tune/best_params.yaml, 'config' columns are the config.yaml keys that differ.")
    scores.table(tables.comparison_display(table)).links(files)
    png = plots.save_figure(plots.plot_overlay(runs), out / "curves_overlay.png")
    curves = Section("Learning curves").image(png, "learning curves overlaid").links(["curves_overlay.png"])
    reports = Section("Experiment reports")
    for run in runs:
        href = Path("..") / run.name / REPORT / own[run.name].name
        reports.parts.append(f'<p><a href="{html.escape(href.as_posix())}">{html.escape(run.name)}</a>: '
                             f"{html.escape('; '.join(status_lines(run)))}</p>")
    lines = [f"{r.name}: missing folds {', '.join(map(str, r.missing))}" for r in runs if r.missing]
    page = render_page("comparison: " + ", ".join(r.name for r in runs), lines, [scores, curves, reports])
    return atomic_write_text(out / "index.html", page)
