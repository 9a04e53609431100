from pathlib import Path

import pytest
import yaml

from comp.config import Config, apply_overrides, load_config, parse_override, write_resolved
from comp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_demo_config_loads():
    cfg = load_config(REPO / "configs/demo.yaml")
    assert cfg.name == "demo" and cfg.data.channels == 1 and cfg.folds.k == 5


def test_unknown_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key; did you mean train\.lr\?"):
        load_config(write(tmp_path, {"train": {"lrr": 0.1}}))


def test_unknown_section_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"zzz: unknown key; valid keys here: name, data, folds"):
        load_config(write(tmp_path, {"zzz": 1}))


def test_wrong_type_names_key_value_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.epochs: 'ten' is not valid \(expected int"):
        load_config(write(tmp_path, {"train": {"epochs": "ten"}}))


def test_choice_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.optimizer: 'adm' is not valid \(expected adamw, adam, nadam, sgd"):
        load_config(write(tmp_path, {}), ["train.optimizer=adm"])


def test_override_is_typed_like_the_file(tmp_path):
    cfg = load_config(write(tmp_path, {}), ["train.lr=1e-3", "train.epochs=3", "folds.k=4", "model.pretrained=null"])
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and cfg.folds.k == 4 and cfg.model.pretrained is None


def test_override_list_and_bool(tmp_path):
    cfg = load_config(write(tmp_path, {}), ["train.class_weights=[1.2, 1.0]", "folds.group_duplicates=true"])
    assert cfg.train.class_weights == [1.2, 1.0] and cfg.folds.group_duplicates is True


def test_override_error_names_set(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set: train\.lr: 'abc'"):
        load_config(write(tmp_path, {}), ["train.lr=abc"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(write(tmp_path, {}), ["train.lr"])


def test_override_unknown_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"did you mean data\.image_size\?"):
        load_config(write(tmp_path, {}), ["data.imagesize=64"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_apply_overrides_creates_sections():
    assert apply_overrides({}, ["train.lr=0.5"]) == {"train": {"lr": 0.5}}
    assert parse_override("a.b=x") == (["a", "b"], "x")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, {"train": {"lr": 0.01}}))
    path = write_resolved(cfg, tmp_path / "out")
    again = Config.model_validate(yaml.safe_load(path.read_text()))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert cfg != load_config(write(tmp_path, {"train": {"lr": 0.02}}))
