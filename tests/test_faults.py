"""Faults and bad input: each refused command exits 2 with one line on stderr (no traceback) and leaves
``runs/``, ``folds/`` and ``submissions/`` byte for byte as they were."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import load_config
from tests.test_submit import MODEL, fabricate_run


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for folder in ("runs", "folds", "submissions", "data"):
        for path in sorted((root / folder).rglob("*")) if (root / folder).exists() else []:
            if path.is_file() and path.name != ".lock":  # the lock file is comp's bookkeeping, not a result
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def refused(root: Path, *args, fragment: str) -> str:
    """Run a command that must be refused: exit 2, one error line, no traceback, nothing changed."""
    before = snapshot(root)
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and fragment in lines[0], lines[0]
    assert snapshot(root) == before
    return lines[0]


@pytest.fixture
def run(in_tmp, make_competition, write_config):
    root = make_competition(n_test=7)
    path = write_config(root, name="exp", model=MODEL, train={"device": "cpu"}, submit={"batch_size": 64})
    cfg = load_config(path)
    fabricate_run(cfg, load_competition(cfg.data))
    assert CliRunner().invoke(main, ["submit", "--config", str(path)]).exit_code == 0
    pd.DataFrame({"id": [f"t{i:03d}" for i in range(7)], "label": "cat"}).to_csv(in_tmp / "solution.csv", index=False)
    return {"dir": in_tmp, "config": path, "root": root}


def test_demo_force_replaces_only_a_demo_folder(in_tmp):
    (in_tmp / "runs" / "exp").mkdir(parents=True)
    (in_tmp / "runs" / "exp" / "cv.json").write_text("{}")
    refused(in_tmp, "data", "demo", "--out", ".", "--force", fragment="not a demo folder written by comp")
    (in_tmp / "notes.txt").write_text("mine")
    refused(in_tmp, "data", "demo", "--out", "notes.txt", "--force", fragment="is a file")
    ok = CliRunner().invoke(main, ["data", "demo", "--out", "data/demo", "--size", "8"])
    assert ok.exit_code == 0, ok.output
    again = CliRunner().invoke(main, ["data", "demo", "--out", "data/demo", "--size", "8", "--force"])
    assert again.exit_code == 0, again.output


def test_config_faults_are_one_line(run):
    bad = run["dir"] / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    refused(run["dir"], "data", "check", "--config", bad, fragment="is not UTF-8")
    bad.write_text("name: exp\ntrain:\n  lr: 0.1\ntrain:\n  epochs: 2\n")
    refused(run["dir"], "data", "check", "--config", bad, fragment="'train' is given twice")
    refused(run["dir"], "data", "check", "--config", run["config"], "--set", "name=../../x", fragment="plain name")
    refused(run["dir"], "data", "check", "--config", run["config"], "--set", "train..lr=3",
            fragment="expected key.sub=value")


def test_hand_edited_folds_files_are_refused_before_training(run):
    folds_csv, folds_json = run["dir"] / "folds/exp.csv", run["dir"] / "folds/exp.json"
    frame = pd.read_csv(folds_csv, dtype=str)
    frame.loc[2, "fold"] = "9"
    frame.to_csv(folds_csv, index=False)
    refused(run["dir"], "train", "--config", run["config"], fragment="line 4: fold '9' is not one of 0..2")
    frame.drop(columns="fold").to_csv(folds_csv, index=False)
    refused(run["dir"], "train", "--config", run["config"], fragment="no 'fold' column")
    folds_json.write_text("[1, 2]")
    refused(run["dir"], "train", "--config", run["config"], fragment="not a folds record")


def test_storage_naming_a_folder(run):
    refused(run["dir"], "tune", "--config", run["config"], "--storage", run["dir"] / "runs",
            fragment="is a folder; give a journal file")


def test_read_only_outputs_are_not_replaced(run):
    sub = run["dir"] / "submissions/exp.csv"
    sub.chmod(0o444)
    refused(run["dir"], "submit", "--config", run["config"], fragment="is read-only")
    sub.chmod(0o644)
    ledger = run["dir"] / "submissions/ledger.csv"
    ledger.write_text("timestamp,experiment,config_hash,cv_score,submission,metric,test_score\n")
    ledger.chmod(0o444)
    refused(run["dir"], "score", sub, "--solution", run["dir"] / "solution.csv", "--config", run["config"],
            fragment="ledger.csv: is read-only")


def test_full_disk_is_one_line(run, monkeypatch):
    import comp.io

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "submissions/exp.csv")

    monkeypatch.setattr(comp.io.os, "fsync", full)
    refused(run["dir"], "submit", "--config", run["config"], fragment="the disk is full")


def test_nan_weights_refuse_the_submission(run):
    best = run["dir"] / "runs/exp/fold1/best.pt"
    state = torch.load(best, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, best)
    refused(run["dir"], "submit", "--config", run["config"], fragment=f"fold1/best.pt: weight {name} holds NaN")


def test_a_pickled_object_is_refused_without_torch_advice(run):
    best = run["dir"] / "runs/exp/fold0/best.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "classes": ["a"]}, best)
    line = refused(run["dir"], "submit", "--config", run["config"], fragment="holds Python objects")
    assert "weights_only=False" not in line


def test_score_needs_a_solution_for_every_id(run):
    partial = run["dir"] / "partial.csv"
    pd.read_csv(run["dir"] / "solution.csv").iloc[:3].to_csv(partial, index=False)
    refused(run["dir"], "score", run["dir"] / "submissions/exp.csv", "--solution", partial, "--config", run["config"],
            fragment="have no true label")
    assert json.loads((run["dir"] / "submissions/exp.json").read_text())["oof"]


# ---------------------------------------------------------------- training: staging, lock, NaN, workers


@pytest.fixture
def trained(tiny_project):
    project = tiny_project(folds={"k": 2}, train={"epochs": 1})
    path = project["path"]
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--no-report"])
    assert result.exit_code == 0, result.output
    return {**project, "config": path}


def test_a_refused_train_keeps_the_fold_results(trained):
    refused(trained["dir"], "train", "--config", trained["config"], "--fold", "0", "--no-report",
            "--set", "train.class_weights=[1,2]", fragment="class_weights")
    refused(trained["dir"], "train", "--config", trained["config"], "--fold", "0", "--no-report",
            "--set", "model.name=timm:no_such_net", fragment="no_such_net")
    for setting, fragment in [("model.pretrained=missing.safetensors", "missing.safetensors"),
                              ("augment.transforms=[{name: Blurr}]", "Blurr"),
                              ("data.num_workers=-1", "num_workers")]:
        refused(trained["dir"], "train", "--config", trained["config"], "--fold", "0", "--no-report",
                "--set", setting, fragment=fragment)


def test_nan_at_validation_is_one_line_and_keeps_results(trained, monkeypatch):
    import comp.train.engine as engine

    real = engine.predict_logits

    def nan_logits(*args, **kwargs):
        logits, labels = real(*args, **kwargs)
        return torch.full_like(logits, float("nan")), labels

    monkeypatch.setattr(engine, "predict_logits", nan_logits)
    refused(trained["dir"], "train", "--config", trained["config"], "--fold", "0", "--no-report",
            fragment="fold 0: validation predictions are NaN or inf")


def test_a_worker_error_is_its_own_line(trained):
    folds = pd.read_csv(trained["dir"] / "folds/exp.csv", dtype=str)
    valid_id = folds.loc[folds["fold"] == "0", "id"].iloc[0]  # every validation image is read (training drops a batch)
    (trained["root"] / "train" / f"{valid_id}.png").write_bytes(b"not a png")
    line = refused(trained["dir"], "train", "--config", trained["config"], "--fold", "0", "--no-report",
                   "--set", "data.num_workers=2", fragment="not a readable image")
    assert "DataLoader worker" not in line and "Original Traceback" not in line


def test_one_writer_per_experiment(trained):
    from comp.lock import experiment_lock

    with experiment_lock(trained["dir"] / "runs/exp"):
        line = refused(trained["dir"], "train", "--config", trained["config"], "--fold", "0", "--no-report",
                       fragment="runs/exp: in use by PID")
        assert str(__import__("os").getpid()) in line
        refused(trained["dir"], "submit", "--config", trained["config"], fragment="being written by PID")
    run = trained["dir"] / "runs/exp"
    with experiment_lock(run, shared=True), experiment_lock(run, shared=True):  # readers do not block each other
        pass


def test_a_study_with_no_trial_does_not_block_the_fixed_rerun(tmp_path):
    from comp.tune.study import StudySpec, open_study

    def spec(key, direction="maximize"):
        return StudySpec("s", str(tmp_path / "study.journal"), direction, key, 0, "median", 3, 1)

    open_study(spec({"epochs": 3}))  # the first run failed before any trial
    study = open_study(spec({"epochs": 4}, "minimize"))  # the fixed rerun, another metric included
    assert study.direction.name == "MINIMIZE" and study.user_attrs["comp_study_key"] == {"epochs": 4}


def test_a_refused_train_of_a_new_experiment_leaves_no_folder(trained):
    refused(trained["dir"], "train", "--config", trained["config"], "--set", "name=fresh",
            "--set", "train.class_weights=[1,2]", fragment="class_weights")
    assert not (trained["dir"] / "runs/fresh").exists()


def test_a_publish_cut_between_its_renames_is_finished(trained):
    from comp.train.runner import _recover, staging_dir

    final = trained["dir"] / "runs/exp/fold0"
    staging, old = staging_dir(final), staging_dir(final).with_name("fold0.old")
    new_metrics = (final / "metrics.json").read_text()
    final.rename(old)  # the crash came after the first rename
    staging.mkdir(parents=True)
    (staging / "metrics.json").write_text(new_metrics)
    _recover(final)
    assert (final / "metrics.json").is_file() and not old.exists() and not staging.exists()
    final.rename(old)  # the same crash with an incomplete new run: the old results come back
    staging.mkdir(parents=True)
    _recover(final)
    assert (final / "metrics.json").read_text() == new_metrics and not old.exists()
