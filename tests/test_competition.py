"""Competition-folder validation, through the CLI: exit code 2 and a one-line message naming the fault."""

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import DataConfig


def run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.output


def check(config):
    return run("data", "check", "--config", config)


def test_valid_folder(make_competition, write_config):
    root = make_competition()
    code, out = check(write_config(root))
    assert code == 0, out
    assert "18 train images, 5 test images, 3 classes: ok" in out


def test_classes_sorted_ints_and_strings(make_competition):
    root = make_competition(counts={"b": 3, "a": 3})
    comp = load_competition(DataConfig(root=root))
    assert comp.classes_ == ["a", "b"]
    df = pd.read_csv(root / "train.csv")
    df["label"] = df["label"].map({"a": 10, "b": 2})
    df.to_csv(root / "train.csv", index=False)
    comp = load_competition(DataConfig(root=root))
    assert comp.classes_ == ["2", "10"]  # numeric order, not "10" < "2", spelled as written
    assert comp.train.loc[comp.train["label"] == 10, "target"].eq(1).all()


def assert_error(config, *fragments):
    code, out = check(config)
    assert code == 2, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_folder(tmp_path, write_config):
    assert_error(write_config(tmp_path / "nowhere"), "competition folder not found", "comp data demo")


def test_missing_train_csv(make_competition, write_config):
    root = make_competition()
    (root / "train.csv").unlink()
    assert_error(write_config(root), "train.csv: train CSV not found")


def test_missing_column(make_competition, write_config):
    root = make_competition()
    assert_error(write_config(root, data={"label_col": "diagnosis"}), "no column 'diagnosis'", "data.label_col")


def test_empty_csv(make_competition, write_config):
    root = make_competition()
    (root / "train.csv").write_text("")
    assert_error(write_config(root), "train.csv: file is empty")
    (root / "train.csv").write_text("id,label\n")
    assert_error(write_config(root), "has a header but no rows")


def test_duplicate_ids(make_competition, write_config):
    root = make_competition()
    df = pd.read_csv(root / "train.csv")
    df.loc[5, "id"] = df.loc[1, "id"]
    df.to_csv(root / "train.csv", index=False)
    assert_error(write_config(root), "line 7: duplicate id 'cat_001' (first at line 3)")


def test_missing_label(make_competition, write_config):
    root = make_competition()
    df = pd.read_csv(root / "train.csv")
    df.loc[[3, 4], "label"] = None
    df.to_csv(root / "train.csv", index=False)
    assert_error(write_config(root), "line 5: missing 'label' (2 rows without a label, lines 5, 6)")


def test_ids_without_images_listed_with_count(make_competition, write_config):
    root = make_competition()
    for i in range(7):
        (root / "train" / f"dog_{i:03d}.png").unlink(missing_ok=True)
    assert_error(write_config(root), "6 of 18 ids have no image", "dog_000, dog_001", "data.train_dir")


def test_id_escaping_folder(make_competition, write_config):
    root = make_competition()
    df = pd.read_csv(root / "train.csv")
    df.loc[2, "id"] = "../secret"
    df.to_csv(root / "train.csv", index=False)
    assert_error(write_config(root), "line 4: '../secret' resolves outside")


def test_class_smaller_than_k(make_competition, write_config, in_tmp):
    root = make_competition(counts={"a": 6, "b": 2})
    code, out = run("folds", "make", "--config", write_config(root))
    assert code == 2
    assert "class 'b' has 2 rows, fewer than folds.k=3" in out


def test_extension_detected_and_ids_with_extension(make_competition):
    root = make_competition(ext="jpg")
    comp = load_competition(DataConfig(root=root))
    assert all(Path(p).suffix == ".jpg" for p in comp.train["path"])
    df = pd.read_csv(root / "train.csv")
    df["id"] = df["id"] + ".jpg"
    df.to_csv(root / "train.csv", index=False)
    assert len(load_competition(DataConfig(root=root)).train) == 18


def test_configured_extension_and_path_column(make_competition):
    root = make_competition(ext="png")
    with pytest.raises(Exception, match="tried .jpg"):
        load_competition(DataConfig(root=root, ext="jpg"))
    df = pd.read_csv(root / "train.csv")
    df["file"] = "train/" + df["id"] + ".png"
    df.to_csv(root / "train.csv", index=False)
    comp = load_competition(DataConfig(root=root, path_col="file"))
    assert comp.train["path"].iloc[0] == root / "train" / "cat_000.png"


def test_test_table_in_submission_order(make_competition):
    root = make_competition(n_test=4)
    sub = pd.read_csv(root / "sample_submission.csv").iloc[::-1]
    sub.to_csv(root / "sample_submission.csv", index=False)
    test = load_competition(DataConfig(root=root)).test_table()
    assert list(test["id"]) == ["t003", "t002", "t001", "t000"]


def test_test_image_missing(make_competition, write_config):
    root = make_competition()
    (root / "test" / "t002.png").unlink()
    assert_error(write_config(root), "sample_submission.csv: 1 of 5 ids have no image", "t002", "data.test_dir")


def test_bad_config_through_cli(make_competition, write_config):
    root = make_competition()
    code, out = run("data", "check", "--config", write_config(root), "--set", "train.lrr=1")
    assert code == 2 and "did you mean train.lr?" in out


def test_debug_env_shows_traceback(make_competition, write_config, monkeypatch):
    monkeypatch.setenv("COMP_DEBUG", "1")
    result = CliRunner().invoke(main, ["data", "check", "--config", "/nonexistent.yaml"])
    assert result.exception is not None and type(result.exception).__name__ == "ConfigError"


# ---------------------------------------------------------------- the class list (issue: real competition formats)


def relabel(root, mapping):
    frame = pd.read_csv(root / "train.csv", dtype=str)
    frame["label"] = frame["label"].map(mapping)
    frame.to_csv(root / "train.csv", index=False)


def test_labels_keep_their_spelling(make_competition):
    root = make_competition(counts={"a": 3, "b": 3, "c": 3})
    relabel(root, {"a": "000", "b": "010", "c": "002"})
    comp = load_competition(DataConfig(root=root))
    assert comp.classes_ == ["000", "002", "010"]  # numeric order, zeros kept
    assert set(comp.train["label"]) == {"000", "002", "010"}
    relabel(root, {"000": "1.0", "010": "2.0", "002": "10.0"})
    assert load_competition(DataConfig(root=root)).classes_ == ["1.0", "2.0", "10.0"]


def test_declared_order_is_the_class_order(make_competition, write_config):
    root = make_competition(counts={"Mild": 3, "No_DR": 3, "Severe": 3})
    comp = load_competition(DataConfig(root=root, classes=["No_DR", "Mild", "Severe"]))
    assert comp.classes_ == ["No_DR", "Mild", "Severe"] and comp.ordered_
    assert comp.train.loc[comp.train["label"] == "No_DR", "target"].eq(0).all()
    assert not load_competition(DataConfig(root=root)).ordered_  # text sorted: no meaning as grades
    assert_error(write_config(root, data={"classes": ["No_DR", "Mild"]}),
                 "label 'Severe' is not in data.classes", "add it there")
    assert_error(write_config(root, data={"classes": ["No_DR", "Mild", "Severe", "Proliferate_DR"]}),
                 "data.classes lists 'Proliferate_DR', but no row has that label")
    assert_error(write_config(root, data={"classes": ["No_DR", "Mild", "Mild"]}), "data.classes", "listed twice")


def test_nan_and_na_labels_are_missing_unless_declared(make_competition, write_config):
    root = make_competition(counts={"a": 3, "b": 3, "c": 3})
    relabel(root, {"a": "a", "b": "b", "c": "NA"})
    assert_error(write_config(root), "missing 'label' (3 rows without a label", "'NA' reads as missing")
    comp = load_competition(DataConfig(root=root, classes=["a", "b", "NA"]))
    assert comp.classes_ == ["a", "b", "NA"]


def test_qwk_monitor_on_unordered_text_classes_is_refused(tiny_project):
    project = tiny_project()
    code, out = run("train", "--config", project["config"](train={"monitor": "qwk"}))
    assert code == 2 and "data.classes" in out and "Traceback" not in out
