"""Competition formats end to end: each Kaggle layout built from the digits at 16 px, then
``comp init`` -> ``folds make`` -> ``train`` (1 epoch) -> ``submit`` -> ``score``.

Every test recomputes the score of the written file with scikit-learn, reading the CSVs as text
(labels as the competition spells them), and asserts that ``comp score`` printed the same number.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, log_loss, roc_auc_score

from comp.cli import main

pytestmark = pytest.mark.slow  # each test trains 2 folds for an epoch (a few seconds)

FAST = ["--set", "folds.k=2", "--set", "train.epochs=1", "--set", "model.name=timm:test_resnet",
        "--set", "train.device=cpu", "--set", "train.batch_size=16", "--set", "train.lr=0.01"]


def invoke(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def write_digit(path: Path, pixels: np.ndarray) -> None:
    img = cv2.resize((pixels * 15).astype(np.uint8), (16, 16), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def digits_folder(root: Path, names: dict[int, str], *, per_class=14, n_test=15, id_col="id", label_col="label",
                  train_dir="train", test_dir="test", sample_value=None, path_col=None, groups=False,
                  proba_cols=None) -> pd.DataFrame:
    """A Kaggle folder from the digits ``names`` maps (digit -> label as spelled); returns the solution.

    ``sample_value``: the sample's target value (default: the first label); ``proba_cols``: one
    sample column per class instead; ``path_col``: train images under images/<label>/ named by that
    column; ``groups``: a patient_id column, two images per patient.
    """
    digits = load_digits()
    rows, test = [], []
    for digit, label in names.items():
        idx = np.flatnonzero(digits.target == digit)
        for n, i in enumerate(idx[:per_class]):
            rows.append({id_col: f"tr{digit}_{n:03d}", label_col: label, "_i": i})
        test += [(i, label) for i in idx[per_class:per_class + n_test // len(names) + 1]]
    train = pd.DataFrame(rows)
    for row in train.itertuples():
        rel = f"images/{getattr(row, label_col)}/{getattr(row, id_col)}.png" if path_col else None
        write_digit(root / (rel or f"{train_dir}/{getattr(row, id_col)}.png"), digits.images[row._3])
        if path_col:
            train.loc[row.Index, path_col] = rel
    if groups:
        train["patient_id"] = [f"p{k // 2:03d}" for k in range(len(train))]
    train.drop(columns="_i").to_csv(root / "train.csv", index=False)
    solution = pd.DataFrame({id_col: [f"te{k:03d}" for k in range(len(test))], label_col: [t[1] for t in test]})
    for k, (i, _) in enumerate(test):
        write_digit(root / test_dir / f"te{k:03d}.png", digits.images[i])
    sample = solution[[id_col]].copy()
    if proba_cols:
        for column in proba_cols:
            sample[column] = 1.0 / len(proba_cols)
    else:
        sample[label_col] = sample_value if sample_value is not None else next(iter(names.values()))
    sample.to_csv(root / "sample_submission.csv", index=False)
    return solution


def chain(tmp: Path, root: Path, name: str, *sets: str, submit=(), init=True) -> Path:
    """init -> folds make -> train -> submit; returns the config written by ``comp init``."""
    if init:
        invoke("init", root, "--name", name)
    config = tmp / "configs" / f"{name}.yaml"
    args = ["--config", config, *FAST, *sets]
    invoke("folds", "make", *args)
    invoke("train", *args)
    invoke("submit", *args, *submit)
    return config


def comp_score(config: Path, submission: Path, solution: Path, metric: str, *sets: str) -> float:
    output = invoke("score", submission, "--solution", solution, "--metric", metric, "--config", config, *FAST, *sets)
    line = next(ln for ln in output.splitlines() if ln.startswith(metric + " "))
    return float(line.split()[1])


def read_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def save_solution(tmp: Path, solution: pd.DataFrame) -> Path:
    path = tmp / "solution.csv"
    solution.to_csv(path, index=False)
    return path


def assert_accuracy_rescored(tmp: Path, config: Path, name: str, solution: pd.DataFrame) -> pd.DataFrame:
    """comp score's accuracy of submissions/<name>.csv equals scikit-learn's on the labels as written."""
    written = read_text(tmp / f"submissions/{name}.csv")
    expected = accuracy_score(solution["label"], written["label"])  # exact-match scoring, as Kaggle does
    got = comp_score(config, tmp / f"submissions/{name}.csv", save_solution(tmp, solution), "accuracy")
    assert got == pytest.approx(expected, abs=1e-6)
    return written


def test_aptos_layout_with_ordinal_and_qwk(in_tmp):
    root = in_tmp / "aptos"
    solution = digits_folder(root, {0: "0", 1: "1", 2: "2", 3: "3", 4: "4"}, id_col="id_code",
                             label_col="diagnosis", train_dir="train_images", test_dir="test_images", per_class=8)
    config = chain(in_tmp, root, "aptos", submit=["--ordinal"])
    text = config.read_text()
    assert "id_col: id_code" in text and "train_dir: train_images" in text and "monitor: qwk" in text
    written = read_text(in_tmp / "submissions/aptos.csv")
    assert list(written.columns) == ["id_code", "diagnosis"]
    sol = save_solution(in_tmp, solution)
    expected = cohen_kappa_score(solution["diagnosis"].astype(int), written["diagnosis"].astype(int),
                                 weights="quadratic")
    assert comp_score(config, in_tmp / "submissions/aptos.csv", sol, "qwk") == pytest.approx(expected, abs=1e-6)


GRADES = ["No_DR", "Mild", "Moderate", "Severe", "Proliferate_DR"]


def test_string_grades_in_a_declared_order(in_tmp):
    root = in_tmp / "grades"
    solution = digits_folder(root, dict(enumerate(GRADES)), per_class=8)
    invoke("init", root, "--name", "grades")
    config = in_tmp / "configs/grades.yaml"
    assert "TODO: if the classes are ordered grades" in config.read_text()
    refused = CliRunner().invoke(main, ["train", "--config", config, *FAST, "--set", "train.monitor=qwk"])
    assert refused.exit_code == 2 and "data.classes" in refused.output
    declared = ["--set", f"data.classes=[{','.join(GRADES)}]", "--set", "train.monitor=qwk"]
    chain(in_tmp, root, "grades", *declared, submit=["--ordinal"], init=False)
    folds_meta = (in_tmp / "folds/grades.json").read_text()
    assert folds_meta.index('"No_DR"') < folds_meta.index('"Mild"') < folds_meta.index('"Proliferate_DR"')
    written = read_text(in_tmp / "submissions/grades.csv")
    assert set(written["label"]) <= set(GRADES)
    rank = {g: k for k, g in enumerate(GRADES)}
    expected = cohen_kappa_score(solution["label"].map(rank), written["label"].map(rank), weights="quadratic")
    got = comp_score(config, in_tmp / "submissions/grades.csv", save_solution(in_tmp, solution), "qwk", *declared)
    assert got == pytest.approx(expected, abs=1e-6)


def test_zero_padded_labels_are_written_as_spelled(in_tmp):
    root = in_tmp / "padded"
    solution = digits_folder(root, {0: "000", 1: "001", 2: "002"})
    config = chain(in_tmp, root, "padded")
    written = assert_accuracy_rescored(in_tmp, config, "padded", solution)
    assert set(written["label"]) <= {"000", "001", "002"} and written["label"].str.len().eq(3).all()


def test_binary_probability_column_scored_by_auc_and_logloss(in_tmp):
    root = in_tmp / "cactus"
    solution = digits_folder(root, {0: "0", 1: "1"}, id_col="id", label_col="has_cactus", sample_value=0.5)
    config = chain(in_tmp, root, "cactus")
    assert "monitor: auc" in config.read_text() and "binary" in config.read_text()
    written = pd.read_csv(in_tmp / "submissions/cactus.csv")
    p = written["has_cactus"].to_numpy()
    assert ((p > 0) & (p < 1)).all() and len(np.unique(p)) > 2  # probabilities, not hard 0/1 labels
    y = solution["has_cactus"].astype(int).to_numpy()
    sol = save_solution(in_tmp, solution)
    assert comp_score(config, in_tmp / "submissions/cactus.csv", sol, "auc") == pytest.approx(
        roc_auc_score(y, p), abs=1e-6)
    assert comp_score(config, in_tmp / "submissions/cactus.csv", sol, "logloss") == pytest.approx(
        log_loss(y, p), abs=1e-6)


def test_binary_labels_scored_by_f1(in_tmp):
    root = in_tmp / "cells"
    solution = digits_folder(root, {0: "HEM", 1: "ALL"}, sample_value="HEM")
    config = chain(in_tmp, root, "cells")
    assert "monitor: f1" in config.read_text()
    written = read_text(in_tmp / "submissions/cells.csv")
    assert set(written["label"]) <= {"ALL", "HEM"}
    expected = f1_score(solution["label"], written["label"], pos_label="HEM")  # Kaggle's binary F1: the second class
    got = comp_score(config, in_tmp / "submissions/cells.csv", save_solution(in_tmp, solution), "f1")
    assert got == pytest.approx(expected, abs=1e-6)


def test_one_probability_column_per_class_scored_by_logloss(in_tmp):
    root = in_tmp / "species"
    names = {3: "three", 5: "five", 8: "eight"}
    solution = digits_folder(root, names, proba_cols=["eight", "five", "three"])
    config = chain(in_tmp, root, "species")
    written = pd.read_csv(in_tmp / "submissions/species.csv")
    assert list(written.columns) == ["id", "eight", "five", "three"]
    probs = written[["eight", "five", "three"]].to_numpy()
    expected = log_loss(solution["label"], probs, labels=["eight", "five", "three"])
    got = comp_score(config, in_tmp / "submissions/species.csv", save_solution(in_tmp, solution), "logloss")
    assert got == pytest.approx(expected, abs=1e-6)


def test_path_column_with_sub_folders(in_tmp):
    root = in_tmp / "paths"
    solution = digits_folder(root, {1: "one", 7: "seven", 9: "nine"}, path_col="path")
    config = chain(in_tmp, root, "paths")
    assert "path_col: path" in config.read_text()
    assert_accuracy_rescored(in_tmp, config, "paths", solution)


def test_group_column_keeps_patients_in_one_fold(in_tmp):
    root = in_tmp / "eyes"
    solution = digits_folder(root, {0: "0", 1: "1", 2: "2"}, groups=True)
    config = chain(in_tmp, root, "eyes")
    assert "group_col: patient_id" in config.read_text()
    folds = pd.read_csv(in_tmp / "folds/eyes.csv", dtype=str)
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    assert_accuracy_rescored(in_tmp, config, "eyes", solution)


def test_ledger_puts_the_submission_next_to_its_own_oof_score(in_tmp):
    root = in_tmp / "ledger"
    solution = digits_folder(root, {0: "0", 1: "1", 2: "2"})
    config = chain(in_tmp, root, "ledger", submit=["--tta", "hflip"])
    meta = (in_tmp / "submissions/ledger-tta.json").read_text()
    sol = save_solution(in_tmp, solution)
    comp_score(config, in_tmp / "submissions/ledger-tta.csv", sol, "accuracy")
    row = pd.read_csv(in_tmp / "submissions/ledger.csv").iloc[-1]
    oof = float(re.search(r'"accuracy": ([0-9.e-]+)', meta.split('"oof"')[1]).group(1))
    assert row["cv_score"] == pytest.approx(oof, abs=1e-6)  # the TTA submission's OOF, not the plain training OOF
