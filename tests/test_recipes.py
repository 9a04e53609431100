"""Every recipe in configs/ loads, and trains one step on generated images in the folder layout it documents.

The pretrained recipes read ImageNet weights from a fake Hugging Face cache made here (random weights in
the hub layout) with the network off: nothing downloads.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from safetensors.torch import save_file

from comp.cli import main
from comp.config import ModelConfig, load_config
from comp.models import create_model
from comp.models.hub import resolve_tag
from comp.train.runner import run_training
from tests.conftest import write_image

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = ["leukemia", "retinopathy", "butterflies", "butterflies_vgg19", "flowers"]


def ids_layout(root: Path, classes: list, per_class: int, id_col="id", label_col="label", ext="png",
               csv="train.csv"):
    """train.csv (id,label) + train/<id>.<ext> + test/ + sample_submission.csv."""
    rows = []
    for c, label in enumerate(classes):
        for i in range(per_class):
            rows.append({id_col: f"img_{c}_{i}", label_col: label})
            write_image(root / "train" / f"img_{c}_{i}.{ext}", 20 + 40 * c, size=24, seed=len(rows))
    pd.DataFrame(rows).to_csv(root / csv, index=False)
    for i in range(3):
        write_image(root / "test" / f"t{i}.{ext}", 60, size=24, seed=99 + i)
    pd.DataFrame({id_col: [f"t{i}" for i in range(3)], label_col: classes[0]}).to_csv(
        root / "sample_submission.csv", index=False)


def path_layout(root: Path, classes: list, per_class: int):
    """butterflies: train/<SPECIES>/<n>.jpg named by a path column, test.csv id,path."""
    rows = []
    for c, label in enumerate(classes):
        for i in range(per_class):
            rel = f"train/{label}/{i:03d}.jpg"
            write_image(root / rel, 20 + 40 * c, size=24, seed=len(rows))
            rows.append({"id": f"{label}_{i}", "label": label, "path": rel})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    tests = [{"id": f"t{i}", "path": f"test/{classes[0]}/{i}.jpg"} for i in range(3)]
    for row in tests:
        write_image(root / row["path"], 60, size=24, seed=7)
    pd.DataFrame(tests).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": [r["id"] for r in tests], "label": classes[0]}).to_csv(
        root / "sample_submission.csv", index=False)


LAYOUTS = {
    "leukemia": lambda root: ids_layout(root, ["ALL", "HEM"], 4, ext="bmp"),
    "retinopathy": lambda root: ids_layout(root, [0, 1, 2, 3, 4], 2, id_col="image", label_col="level",
                                           ext="jpeg", csv="trainLabels.csv"),
    "butterflies": lambda root: path_layout(root, ["ADONIS", "ATLAS MOTH", "MONARCH"], 3),
    "butterflies_vgg19": lambda root: path_layout(root, ["ADONIS", "ATLAS MOTH", "MONARCH"], 3),
    "flowers": lambda root: ids_layout(root, ["rose", "daisy", "tulip"], 3, ext="jpg"),
}


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A Hugging Face cache holding (random) ImageNet weights for whatever a recipe asks, network off."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    def add(model: ModelConfig):
        cfg = resolve_tag(model.pretrained, model.name)
        snap = tmp_path / "hf" / "hub" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
        (snap / "refs").mkdir(parents=True)
        (snap / "refs" / "main").write_text("feed")
        (snap / "snapshots" / "feed").mkdir(parents=True)
        net = create_model(ModelConfig(name=model.name), 1000, 3)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  snap / "snapshots" / "feed" / "model.safetensors")

    return add


def test_every_config_is_a_recipe_here():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(RECIPES + ["demo"])
    for name in RECIPES:
        text = (CONFIGS / f"{name}.yaml").read_text()
        assert "Expected folder" in text and "Course report" in text, name


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_one_step_in_its_layout(recipe, tmp_path, monkeypatch, offline_hub):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    LAYOUTS[recipe](root)
    path = CONFIGS / f"{recipe}.yaml"
    overrides = [f"data.root={root}", "data.image_size=32", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.num_workers=0", "folds.k=2", "train.epochs=1", "train.batch_size=4"]
    cfg = load_config(path, overrides)
    if cfg.model.pretrained:
        offline_hub(cfg.model)
    args = ["folds", "make", "--config", str(path)] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run_training(cfg, folds=[0], log=lambda line: None)
    metrics = json.loads((tmp_path / "runs" / cfg.name / "fold0" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["monitor"] == cfg.train.monitor
    assert (tmp_path / "runs" / cfg.name / "fold0" / "oof.csv").is_file()
