"""``comp report``: every artifact for tiny fabricated runs, numbers checked against scikit-learn."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from comp.cli import main
from comp.config import Config
from comp.metrics import compute_metrics

HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "valid_loss", "accuracy", "f1", "qwk", "auc", "logloss",
                   "seconds", "images_per_s"]


def fabricate_run(runs_dir: Path, name: str = "exp", n_folds: int = 3, n_classes: int = 2, epochs: int = 4,
                  finished: list[int] | None = None, rows_per_class: int = 6, seed: int = 0, skill: float = 2.0,
                  config: dict | None = None, best_params: dict | None = None, write_cv: bool = True) -> Path:
    """Write ``runs_dir/name`` as ``docs/artifacts.md`` lays it out (no checkpoints).

    Folds in ``finished`` (default: all) get history.csv, metrics.json and oof.csv; the pooled oof.csv
    and cv.json are written only when every fold finished (and ``write_cv``).
    """
    rng = np.random.default_rng(seed)
    run = runs_dir / name
    classes = [f"class_{i:02d}" for i in range(n_classes)] if n_classes > 2 else ["0", "1"]
    labels = np.repeat(np.arange(n_classes), rows_per_class)
    rng.shuffle(labels)
    logits = rng.normal(size=(len(labels), n_classes))
    logits[np.arange(len(labels)), labels] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    oof = pd.concat([
        pd.DataFrame({"id": [f"img{i:04d}" for i in range(len(labels))], "label": [classes[y] for y in labels],
                      "fold": np.arange(len(labels)) % n_folds}),
        pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes]),
    ], axis=1)
    finished = list(range(n_folds)) if finished is None else finished
    cfg = Config(name=name).to_dict()
    cfg["folds"]["k"] = n_folds
    for dotted, value in (config or {}).items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    per_fold = {}
    for k in finished:
        part = oof[oof["fold"] == k]
        per_fold[str(k)] = _write_fold(run / f"fold{k}", k, part, probs[part.index], epochs, rng)
    if best_params is not None:
        (run / "tune").mkdir()
        (run / "tune" / "best_params.yaml").write_text(yaml.safe_dump(best_params))
    if len(finished) == n_folds:
        oof.to_csv(run / "oof.csv", index=False)
        if write_cv:
            _write_cv(run, name, classes, per_fold, compute_metrics(labels, probs))
    return run


def _write_fold(path: Path, k: int, part: pd.DataFrame, probs: np.ndarray, epochs: int, rng) -> dict:
    path.mkdir(parents=True)
    part.to_csv(path / "oof.csv", index=False)
    decay = np.exp(-np.arange(epochs) / 2)
    history = pd.DataFrame({
        "epoch": np.arange(1, epochs + 1), "lr": 1e-3 * decay, "train_loss": 0.4 + decay + rng.random(epochs) * 0.05,
        "valid_loss": 0.5 + decay + rng.random(epochs) * 0.1, "accuracy": 0.9 - 0.5 * decay - rng.random(epochs) * 0.05,
        "f1": 0.85 - 0.5 * decay, "qwk": 0.8 - 0.5 * decay, "auc": 0.95 - 0.4 * decay, "logloss": 0.5 + decay,
        "seconds": 1.0, "images_per_s": 100.0,
    })[HISTORY_COLUMNS]
    history.to_csv(path / "history.csv", index=False)
    best = int(history["accuracy"].idxmax())
    metrics = {m: float(history.at[best, m]) for m in ("accuracy", "f1", "qwk", "auc", "logloss")}
    metrics["loss"] = float(history.at[best, "valid_loss"])
    meta = {"fold": k, "monitor": "accuracy", "mode": "max", "best_epoch": int(history.at[best, "epoch"]),
            "best_score": metrics["accuracy"], "epochs_run": epochs, "stopped_early": False, "metrics": metrics}
    (path / "metrics.json").write_text(json.dumps(meta))
    return metrics


def _write_cv(run: Path, name: str, classes: list[str], per_fold: dict, oof_metrics: dict) -> None:
    frame = pd.DataFrame.from_dict(per_fold, orient="index")
    cv = {"experiment": name, "config_hash": "0123456789abcdef", "folds": "exp", "folds_hash": "fedcba9876543210",
          "classes": classes, "monitor": "accuracy", "mode": "max", "per_fold": per_fold,
          "mean": frame.mean().to_dict(), "std": frame.std(ddof=0).to_dict(), "oof": oof_metrics,
          "best_epochs": [1] * len(per_fold), "complete": True}
    (run / "cv.json").write_text(json.dumps(cv))


def _oof_truth(run: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Classes, true and predicted indices read straight from oof.csv, independently of comp.report."""
    oof = pd.read_csv(run / "oof.csv", dtype={"label": str})
    classes = [c.removeprefix("prob_") for c in oof.columns if c.startswith("prob_")]
    y_true = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return classes, y_true, oof[[f"prob_{c}" for c in classes]].to_numpy().argmax(axis=1)


def _embedded_pngs(page: str) -> list[bytes]:
    import base64

    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


PNGS = ["curves.png", "confusion_counts.png", "confusion_normalized.png", "per_class.png"]


@pytest.fixture(scope="module", params=[2, 12], ids=["2-classes", "12-classes"])
def reported(request, tmp_path_factory) -> tuple[Path, Path]:
    """A fabricated 3-fold run and its report (written once per class count): (run folder, index.html)."""
    from comp.report import write_report

    runs = tmp_path_factory.mktemp(f"runs{request.param}")
    run = fabricate_run(runs, "exp", n_classes=request.param, rows_per_class=9, skill=1.0)
    return run, write_report(["exp"], runs_dir=runs)


def test_every_artifact_written_and_embedded(reported):
    run, index = reported
    out = run / "report"
    assert index == out / "index.html"
    page = index.read_text()
    embedded = _embedded_pngs(page)
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
        assert data in embedded, f"{name} is not embedded in index.html"
    for name in ["per_class.csv", "confusion_counts.csv", "cv_summary.csv", "folds.csv"]:
        assert (out / name).stat().st_size > 0
        assert f'href="{name}"' in page
    assert "http://" not in page and "https://" not in page
    assert "<table" in page and "missing" not in page


def test_per_class_csv_and_confusion_equal_sklearn(reported):
    run, _ = reported
    classes, y_true, y_pred = _oof_truth(run)
    labels = range(len(classes))
    per_class = pd.read_csv(run / "report" / "per_class.csv", dtype={"class": str}).set_index("class")
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    expected = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support}, index=classes)
    pd.testing.assert_frame_equal(per_class.loc[classes], expected, check_names=False, check_dtype=False)
    assert per_class["f1"].is_monotonic_increasing, "worst classes first"
    counts = pd.read_csv(run / "report" / "confusion_counts.csv", index_col=0, dtype={0: str})
    assert list(counts.index) == classes and list(counts.columns) == classes
    np.testing.assert_array_equal(counts.to_numpy(), confusion_matrix(y_true, y_pred, labels=labels))


def test_cv_summary_from_cv_json_or_recomputed(tmp_path):
    from comp.report import load_run
    from comp.report.tables import cv_summary

    with_cv = load_run(fabricate_run(tmp_path, "a", n_folds=4).name, tmp_path)
    summary, source = cv_summary(with_cv)
    cv = json.loads((tmp_path / "a" / "cv.json").read_text())
    assert source == "cv.json"
    assert summary.loc["mean", "accuracy"] == pytest.approx(cv["mean"]["accuracy"])
    assert summary.loc["oof", "f1"] == pytest.approx(cv["oof"]["f1"])

    without = load_run(fabricate_run(tmp_path, "b", n_folds=4, write_cv=False).name, tmp_path)
    summary, source = cv_summary(without)
    scores = [json.loads((tmp_path / "b" / f"fold{k}" / "metrics.json").read_text())["metrics"]["f1"] for k in range(4)]
    assert source.startswith("fold metrics.json")
    assert list(summary.index) == ["fold 0", "fold 1", "fold 2", "fold 3", "mean", "std", "oof"]
    assert summary.loc["mean", "f1"] == pytest.approx(np.mean(scores))
    assert summary.loc["std", "f1"] == pytest.approx(np.std(scores))


def test_partial_run_reports_finished_folds_and_names_missing(tmp_path):
    from comp.report import load_run, write_report

    run = fabricate_run(tmp_path, "part", n_folds=3, n_classes=3, finished=[0, 2])
    page = write_report(["part"], runs_dir=tmp_path).read_text()
    assert load_run("part", tmp_path).missing == [1]
    assert "missing folds: 1" in page
    status = pd.read_csv(run / "report" / "folds.csv", index_col="fold")
    assert status.loc[1, "status"] == "missing" and status.loc[0, "status"] == "finished"
    assert all((run / "report" / name).is_file() for name in PNGS)  # OOF from fold0/ and fold2/ oof.csv


def test_comparison_overlay_and_config_differences(tmp_path):
    from comp.report import write_report

    fabricate_run(tmp_path, "base", n_folds=2, n_classes=3, epochs=5)
    fabricate_run(tmp_path, "silu", n_folds=2, n_classes=3, epochs=3, seed=1, config={"model.activation": "silu"},
                  best_params={"train.lr": 0.0005})
    index = write_report(["base", "silu"], runs_dir=tmp_path)
    out = tmp_path / "compare-base-silu"
    assert index == out / "index.html"
    overlay = (out / "curves_overlay.png").read_bytes()
    assert len(overlay) > 10_000 and overlay in _embedded_pngs(index.read_text())
    table = pd.read_csv(out / "comparison.csv", index_col="experiment")
    assert table.loc["silu", "config model.activation"] == "silu"
    assert table.loc["base", "config model.activation"] == "relu"
    assert table.loc["silu", "tuned train.lr"] == pytest.approx(0.0005)
    assert not [c for c in table.columns if c in ("config name", "config train.lr", "config folds.k")]
    page = index.read_text()
    assert "model.activation" in page and 'href="../base/report/index.html"' in page
    assert (tmp_path / "base" / "report" / "index.html").is_file()


def test_no_per_cell_numbers_past_twenty_classes():
    import matplotlib.pyplot as plt

    from comp.report.plots import annotate_cells, plot_confusion

    assert annotate_cells(12) and annotate_cells(20) and not annotate_cells(21) and not annotate_cells(100)
    for n, texts in ((12, 144), (100, 0)):
        fig = plot_confusion(np.eye(n, dtype=int) * 3, [f"c{i}" for i in range(n)], normalised=False, title="t")
        assert len(fig.axes[0].texts) == texts
        plt.close(fig)


def test_cli_report_prints_summary(in_tmp):
    fabricate_run(in_tmp / "runs", "exp", n_folds=2, n_classes=2)
    (in_tmp / "exp.yaml").write_text("name: exp\n")
    result = CliRunner().invoke(main, ["report", "--config", "exp.yaml"])
    assert result.exit_code == 0, result.output
    assert "report: runs/exp/report/index.html" in result.output
    assert re.search(r"exp\s+2/2\s+", result.output)


NO_FOLD = "runs/x: no finished fold to report; run comp train first"


def _in_progress(runs: Path) -> None:
    """Fold 0 has epochs in history.csv but no metrics.json yet; fold 1 has no history."""
    fabricate_run(runs, "x", n_folds=2)
    (runs / "x" / "fold0" / "metrics.json").unlink()
    (runs / "x" / "fold1" / "history.csv").unlink()


@pytest.mark.parametrize("setup, message", [
    (lambda runs: (runs / "x" / "fold0").mkdir(parents=True), NO_FOLD),
    (_in_progress, NO_FOLD),
    (lambda runs: runs.mkdir(), "runs/x: experiment folder not found"),
])
def test_cli_clear_error_without_finished_fold(in_tmp, setup, message):
    setup(in_tmp / "runs")
    result = CliRunner().invoke(main, ["report", "x"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {message}")


def test_write_report_needs_an_experiment(tmp_path):
    from comp.errors import ReportError
    from comp.report import write_report

    with pytest.raises(ReportError, match="no experiment"):
        write_report([], runs_dir=tmp_path)


def test_cli_module_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, comp.cli; assert 'matplotlib' not in sys.modules and 'comp.report' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_macro_f1_averages_over_every_class():
    """A class absent from y_true still counts (scikit-learn's and Kaggle's macro over all classes)."""
    from sklearn.metrics import f1_score

    from comp.metrics import compute_metrics

    y = np.array([0, 0, 1, 1])
    probs = np.eye(3)[[0, 2, 1, 1]]  # one row predicted as class 2, which y_true never has
    expected = f1_score(y, probs.argmax(1), average="macro", labels=[0, 1, 2], zero_division=0)
    assert compute_metrics(y, probs)["f1"] == pytest.approx(expected)
