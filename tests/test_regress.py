"""The regression head: one output trained on the grade, two-hot rows that carry it through OOF, TTA and submit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from comp.cli import main
from comp.config import ModelConfig, load_config
from comp.models.factory import create_model
from comp.models.grade import GradeHead, two_hot
from comp.predict.ensemble import merge_logits
from comp.train.runner import run_training


def test_two_hot_rows_hold_the_grade_and_average_linearly():
    g = torch.tensor([-0.4, 0.0, 1.25, 2.0, 3.7])
    rows = two_hot(g, 3)
    assert torch.allclose(rows.sum(1), torch.ones(5))
    assert torch.allclose(rows @ torch.arange(3.0), g.clamp(0, 2))
    assert rows.argmax(1).tolist() == [0, 0, 1, 2, 2]
    # Views or folds merged with mean: the row of the mean grade.
    merged = merge_logits(torch.stack([two_hot(torch.tensor([0.5]), 3).log(), two_hot(torch.tensor([1.5]), 3).log()]))
    assert merged @ torch.arange(3.0) == pytest.approx(1.0, abs=1e-6)


def test_the_head_is_one_output_when_training_and_k_rows_in_eval():
    model = create_model(ModelConfig(name="timm:test_resnet", head="regress"), 4, 3)
    assert isinstance(model, GradeHead)
    x = torch.rand(2, 3, 16, 16)
    assert model.train()(x).shape == (2, 1)
    rows = torch.softmax(model.eval()(x), dim=1)
    assert rows.shape == (2, 4) and torch.allclose(rows.sum(1), torch.ones(2))


def test_settings_a_regression_head_would_ignore_are_refused(tiny_project):
    project = tiny_project()
    result = CliRunner().invoke(main, ["train", "--config", str(project["path"]), "--set", "model.head=regress",
                                       "--set", "train.label_smoothing=0.1"])
    assert result.exit_code == 2 and "train.label_smoothing" in result.output and "Traceback" not in result.output


def test_regression_head_trains_and_its_oof_and_test_files_hold_grades(tiny_project):
    project = tiny_project(**{"data": {"classes": ["a", "b", "c"]}, "model": {"head": "regress"},
                              "train": {"monitor": "qwk", "epochs": 3, "mixup": 0.4}})
    cfg = load_config(project["path"])
    summary = run_training(cfg, log=lambda _: None)
    run = project["dir"] / "runs/exp"
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert "grade" in oof.columns and oof["grade"].between(0, 2).all()
    assert (oof["grade"] % 1 != 0).any()  # continuous, not class indices
    probs = oof.filter(like="prob_").to_numpy()
    assert np.allclose(probs @ np.arange(3), oof["grade"], atol=1e-4)
    history = pd.read_csv(run / "fold0/history.csv")
    assert (history["valid_loss"] < 2).all()  # SmoothL1 on the grade, not the log loss of two-hot rows
    assert -1 <= summary.cv.oof["qwk"] <= 1  # scored like any run
    result = CliRunner().invoke(main, ["submit", "--config", str(project["path"]), "--ordinal", "--tta", "hflip"])
    assert result.exit_code == 0, result.output
    test_probs = pd.read_csv(project["dir"] / "submissions/exp-tta-probs.csv", dtype={"id": str})
    assert list(test_probs.columns[:2]) == ["id", "grade"] and test_probs["grade"].between(0, 2).all()
    submission = pd.read_csv(project["dir"] / "submissions/exp-tta.csv", dtype=str)
    assert set(submission["label"]) <= {"a", "b", "c"}
    refused = CliRunner().invoke(main, ["submit", "--config", str(project["path"]), "--merge", "geometric"])
    assert refused.exit_code == 2 and "--merge mean" in refused.output
