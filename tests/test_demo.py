import subprocess
import sys

import cv2
import pandas as pd
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import DataConfig


def test_demo_folder_is_a_valid_competition(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["data", "demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    comp = load_competition(DataConfig(root=out))
    assert comp.classes_ == [str(d) for d in range(10)] and len(comp.train) == 1437
    test = comp.test_table()
    solution = pd.read_csv(out / "solution.csv", dtype={"id": str})
    assert list(solution["id"]) == list(test["id"]) and len(test) == 360
    assert set(solution["id"]).isdisjoint(comp.train["id"])
    img = cv2.imread(str(comp.train["path"].iloc[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (32, 32) and img.max() > 100


def test_demo_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["data", "demo", "--out", str(out)])
    assert result.exit_code == 2 and "already exists; pass --force" in result.output
    assert (out / "keep.txt").read_text() == "mine"


def test_help_does_not_import_heavy_libraries():
    code = "import sys, comp.cli; print(' '.join(m for m in ('torch', 'timm', 'optuna') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
