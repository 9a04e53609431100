"""``comp init`` on awkward folders: what it detects, what it flags, and a config that loads."""

from __future__ import annotations

import pandas as pd
import yaml
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import build_config


def init(folder, *args):
    result = CliRunner().invoke(main, ["init", str(folder), *map(str, args)])
    return result.exit_code, result.output


def test_upper_case_extension_and_a_corrupt_image(in_tmp, make_competition):
    root = make_competition(ext="JPG")
    (root / "train" / "cat_000.JPG").write_bytes(b"not a jpeg")
    code, out = init(root, "--name", "upper")
    assert code == 0, out
    cfg = build_config(yaml.safe_load((in_tmp / "configs/upper.yaml").read_text()))
    assert cfg.data.ext == "jpg" and len(load_competition(cfg.data).train) == 18
    assert "cat_000.JPG: not readable as an image" in out


def test_labels_spelled_like_missing_values_are_declared_and_flagged(in_tmp, make_competition):
    root = make_competition(counts={"pos": 6, "NA": 6})
    code, out = init(root, "--name", "na")
    assert code == 0, out
    text = (in_tmp / "configs/na.yaml").read_text()
    assert "TODO: labels NA read as missing unless declared" in text
    cfg = build_config(yaml.safe_load(text))
    assert load_competition(cfg.data).classes_ == ["NA", "pos"]


def test_binary_sample_of_class_labels_is_flagged(in_tmp, make_competition):
    root = make_competition(counts={"0": 6, "1": 6})
    pd.read_csv(root / "sample_submission.csv").assign(label=0).to_csv(root / "sample_submission.csv", index=False)
    code, out = init(root, "--name", "bin")
    assert code == 0 and "set submit.target: proba" in out
    assert init(root, "--name", "bin")[0] == 2  # an existing config is not replaced without --force
