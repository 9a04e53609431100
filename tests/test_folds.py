"""Fold properties in the style of scikit-learn's split tests, determinism, groups and duplicates."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import DataConfig
from comp.errors import FoldsError
from comp.folds import make_folds, merge_groups, read_folds, write_folds


@pytest.fixture
def imbalanced(make_competition):
    return make_competition(counts={"a": 40, "b": 17, "c": 9, "d": 5})


def folds_for(root, k=5, seed=0, **data):
    comp = load_competition(DataConfig(root=root, **data))
    return comp, make_folds(comp, k=k, seed=seed, name="t", group_duplicates=data.pop("dupes", False))


def test_every_row_in_exactly_one_validation_fold(imbalanced):
    comp, folds = folds_for(imbalanced)
    assert len(folds.frame) == len(comp.train)
    assert set(folds.frame["fold"]) == set(range(5))
    assert list(folds.frame["id"]) == list(comp.train["id"])


def test_fold_sizes_differ_by_at_most_one(imbalanced):
    _, folds = folds_for(imbalanced)
    sizes = folds.frame["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_class_ratios_per_fold(imbalanced):
    _, folds = folds_for(imbalanced)
    overall = folds.frame["label"].value_counts(normalize=True)
    for _, part in folds.frame.groupby("fold"):
        share = part["label"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert (share - overall).abs().max() < 0.07
        counts = part["label"].value_counts()
        assert counts["d"] == 1  # 5 members over 5 folds: one each


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_same_seed_byte_identical_files(imbalanced, tmp_path, seed):
    _, a = folds_for(imbalanced, seed=seed)
    _, b = folds_for(imbalanced, seed=seed)
    write_folds(a, tmp_path / "a")
    write_folds(b, tmp_path / "b")
    for suffix in ("csv", "json"):
        assert (tmp_path / "a" / f"t.{suffix}").read_bytes() == (tmp_path / "b" / f"t.{suffix}").read_bytes()


def test_different_seed_differs(imbalanced):
    _, a = folds_for(imbalanced, seed=0)
    _, b = folds_for(imbalanced, seed=1)
    assert not np.array_equal(a.frame["fold"], b.frame["fold"])


def test_groups_never_split(make_competition):
    root = make_competition(counts={"a": 30, "b": 30}, groups=lambda df: [f"p{i // 3}" for i in range(len(df))])
    _, folds = folds_for(root, k=4, group_col="patient")
    assert folds.meta["method"] == "StratifiedGroupKFold"
    assert folds.frame.groupby("group")["fold"].nunique().max() == 1
    assert "group" in folds.frame


def test_byte_identical_duplicates_share_a_fold(make_competition):
    root = make_competition(counts={"a": 20, "b": 20})
    # copy some images under other ids: the same bytes must never sit on both sides of a split
    for src, dst in [("a_000", "a_010"), ("a_001", "a_011"), ("b_002", "b_012"), ("b_002", "b_013")]:
        shutil.copy(root / "train" / f"{src}.png", root / "train" / f"{dst}.png")
    comp = load_competition(DataConfig(root=root))
    folds = make_folds(comp, k=4, seed=0, name="t", group_duplicates=True)
    fold = dict(zip(folds.frame["id"], folds.frame["fold"]))
    assert fold["a_000"] == fold["a_010"] and fold["a_001"] == fold["a_011"]
    assert fold["b_002"] == fold["b_012"] == fold["b_013"]
    assert folds.meta["duplicates_merged"] == 4


def test_merge_groups_links_transitively():
    merged = merge_groups(np.array([0, 0, 1, 2, 3]), np.array([5, 6, 6, 7, 7]))
    assert merged[0] == merged[1] == merged[2] and merged[3] == merged[4] and merged[0] != merged[3]


def test_too_few_groups(make_competition):
    root = make_competition(counts={"a": 6, "b": 6}, groups=lambda df: ["p0"] * 6 + ["p1"] * 6)
    with pytest.raises(FoldsError, match="only 2 groups for folds.k=3"):
        folds_for(root, k=3, group_col="patient")


def test_refuses_to_overwrite_different_file(imbalanced, tmp_path):
    _, a = folds_for(imbalanced, seed=0)
    _, b = folds_for(imbalanced, seed=1)
    assert write_folds(a, tmp_path) == "written"
    assert write_folds(a, tmp_path) == "unchanged"
    before = (tmp_path / "t.csv").read_bytes()
    with pytest.raises(FoldsError, match="--force"):
        write_folds(b, tmp_path)
    assert (tmp_path / "t.csv").read_bytes() == before  # nothing damaged
    assert write_folds(b, tmp_path, force=True) == "written"


def test_read_folds_refuses_other_train_csv(imbalanced, tmp_path):
    comp, folds = folds_for(imbalanced)
    write_folds(folds, tmp_path)
    assert read_folds("t", comp, k=5, folds_dir=tmp_path).k == 5
    with pytest.raises(FoldsError, match="made with k=5 but folds.k=3"):
        read_folds("t", comp, k=3, folds_dir=tmp_path)
    df = pd.read_csv(imbalanced / "train.csv")
    df.iloc[:-1].to_csv(imbalanced / "train.csv", index=False)
    with pytest.raises(FoldsError, match="made from another train.csv"):
        read_folds("t", load_competition(DataConfig(root=imbalanced)), folds_dir=tmp_path)


def test_cli_make_prints_table_and_writes_meta(imbalanced, write_config, in_tmp):
    config = write_config(imbalanced)
    result = CliRunner().invoke(main, ["folds", "make", "--config", str(config), "--k", "4", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "fold" in result.output and "folds/exp.csv written: StratifiedKFold, k=4, seed=3" in result.output
    meta = json.loads((in_tmp / "folds/exp.json").read_text())
    assert meta["k"] == 4 and meta["seed"] == 3 and meta["classes"] == ["a", "b", "c", "d"]
    assert sum(sum(c.values()) for c in meta["class_counts"].values()) == 71
    again = CliRunner().invoke(main, ["folds", "make", "--config", str(config), "--k", "4", "--seed", "4"])
    assert again.exit_code == 2 and "a different folds file exists" in again.output
