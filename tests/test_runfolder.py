"""The run folder as code: the layout, the records, and docs/artifacts.md held to them."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from comp.config import load_config
from comp.errors import ArtifactError
from comp.runfolder import layout
from comp.runfolder.checkpoint import CHECKPOINT_KEYS, RESUME_KEYS, load_checkpoint
from comp.runfolder.layout import FULL, RunFolder, classes_of, member_name, parse_member, prob_columns
from comp.runfolder.records import CVSummary, FoldMetrics, oof_table, read_oof, write_oof
from comp.train.runner import run_training

DOCS = Path(__file__).resolve().parents[1] / "docs" / "artifacts.md"


def _documented(entry: str) -> str:
    """The text of the docs bullet that starts with ``- `<entry>```, up to the next bullet."""
    text = DOCS.read_text()
    match = re.search(rf"^- `{re.escape(entry)}`.*?(?=^- |^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/artifacts.md has no bullet for {entry}"
    return match.group(0)


def _keys_after(text: str, marker: str) -> list[str]:
    """The backticked names after ``marker`` in ``text`` (the key list of a record)."""
    return re.findall(r"`([a-z_]+)`", text.split(marker, 1)[1])


def test_docs_list_the_records_keys():
    metrics = _documented("fold<k>/metrics.json")
    assert _keys_after(metrics, "keys") == [f.name for f in dataclasses.fields(FoldMetrics)]
    cv = _documented("cv.json")
    assert _keys_after(cv, "keys") == [f.name for f in dataclasses.fields(CVSummary)]
    checkpoint = _documented("fold<k>/best.pt")
    both, resume = checkpoint.split("Keys of both:", 1)[1].split("adds", 1)
    assert re.findall(r"`([a-z_]+)`", both)[:len(CHECKPOINT_KEYS)] == list(CHECKPOINT_KEYS)
    assert re.findall(r"`([a-z_]+)`", resume)[:len(RESUME_KEYS)] == list(RESUME_KEYS)


def test_docs_name_every_file_of_the_layout():
    text = DOCS.read_text()
    names = [layout.BEST, layout.LAST, layout.HISTORY, layout.METRICS, layout.OOF, layout.CV, layout.CONFIG,
             layout.LOCK, layout.STAGING, layout.BEST_PARAMS, layout.TUNE_SUMMARY, f"{layout.TUNE}/",
             f"{layout.REPORT}/", f"{layout.TRIALS}/", f"{layout.FULL}/", layout.PROB_PREFIX]
    assert [n for n in names if n not in text] == []


def test_layout_paths_and_member_names(tmp_path):
    run = RunFolder.of("exp", tmp_path)
    assert run.name == "exp" and run.root == tmp_path / "exp"
    assert run.member(2).best == tmp_path / "exp/fold2/best.pt"
    assert run.member(FULL).last == tmp_path / "exp/full/last.pt"
    assert run.member(0).staging.metrics == tmp_path / "exp/.staging/fold0/metrics.json"
    assert run.best_params == tmp_path / "exp/tune/best_params.yaml"
    assert (member_name(3), member_name(FULL)) == ("fold3", "full")
    assert [parse_member(n) for n in ("fold12", "full", "fold", "folds", "fold1x")] == [12, FULL, None, None, None]
    for name in ("fold0", "fold10", "fold_old", "full"):
        (run.root / name).mkdir(parents=True)
    (run.root / "fold3").touch()  # a file, not a fold
    assert sorted(run.fold_dirs()) == [0, 10]
    assert classes_of(["id", *prob_columns(["a", "007"])]) == ["a", "007"]


def test_records_round_trip_and_refuse_torn_files(tmp_path):
    metrics = FoldMetrics(0, "qwk", "max", 3, 0.8, 4, 5, True, True, {"qwk": 0.8}, "c1", "f1")
    metrics.write(tmp_path / "m.json")
    assert FoldMetrics.read(tmp_path / "m.json") == metrics
    assert metrics.belongs_to("f1", "c1") and not metrics.belongs_to("f1", "c2")
    assert not dataclasses.replace(metrics, finished=False).belongs_to("f1", "c1")
    (tmp_path / "torn.json").write_text('{"fold": 0,')
    with pytest.raises(ArtifactError, match="torn.json: not readable JSON"):
        FoldMetrics.read(tmp_path / "torn.json")
    assert CVSummary.read_if_present(tmp_path / "torn.json") is None
    assert CVSummary.read_if_present(tmp_path / "absent.json") is None
    frame = oof_table(np.array(["x", "y"]), np.array(["NA", "007"]), 1, ["NA", "007"], np.eye(2))
    write_oof(tmp_path / "oof.csv", frame)
    back = read_oof(tmp_path / "oof.csv")
    assert list(back["label"]) == ["NA", "007"] and list(back.columns) == ["id", "label", "fold", "prob_NA",
                                                                            "prob_007"]


def test_trained_run_matches_the_records(tiny_project):
    project = tiny_project(**{"train": {"epochs": 1}})
    summary = run_training(load_config(project["path"]), log=lambda _: None)
    run = RunFolder.of("exp", project["dir"] / "runs")
    for f in range(3):
        written = json.loads(run.member(f).metrics.read_text())
        assert list(written) == [field.name for field in dataclasses.fields(FoldMetrics)]
        assert set(load_checkpoint(run.member(f).best)) == set(CHECKPOINT_KEYS)
        assert set(load_checkpoint(run.member(f).last)) == set(CHECKPOINT_KEYS) | set(RESUME_KEYS)
    written = json.loads(run.cv.read_text())
    assert list(written) == [field.name for field in dataclasses.fields(CVSummary)]
    assert CVSummary.read(run.cv) == summary.cv


def test_a_metrics_file_of_another_layout_is_a_fold_to_retrain_not_a_crash(tiny_project):
    """A fold<k>/metrics.json missing keys (older comp, hand-edited) does not belong to this CV: the CV
    waits for it, --full does not count it; nothing raises (it used to be skipped, then it was a TypeError)."""
    project = tiny_project(**{"train": {"epochs": 1}})
    cfg = load_config(project["path"])
    run_training(cfg, folds=[0, 1], log=lambda _: None)
    run = RunFolder.of("exp", project["dir"] / "runs")
    run.member(1).metrics.write_text("{}")
    assert run_training(cfg, folds=[], log=lambda _: None).cv is None
    metrics = json.loads(run.member(0).metrics.read_text())
    del metrics["stopped_early"]
    run.member(0).metrics.write_text(json.dumps(metrics))
    assert FoldMetrics.read(run.member(0).metrics).finished  # a key added later reads with its default
    assert not FoldMetrics.read(run.member(1).metrics).belongs_to("", "")


def test_metrics_json_is_written_last(tiny_project, monkeypatch):
    """A fold whose OOF table failed to write has no metrics.json: nothing reads it as complete."""
    import comp.train.fold as fold_module

    project = tiny_project(**{"train": {"epochs": 1}})

    def torn(path, frame):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(fold_module, "write_oof", torn)
    with pytest.raises(OSError):
        run_training(load_config(project["path"]), folds=[0], log=lambda _: None)
    staging = RunFolder.of("exp", project["dir"] / "runs").member(0).staging
    assert staging.history.is_file() and not staging.metrics.is_file()
