"""comp export / comp predict: an offline bundle writes what comp submit writes, with nothing else around."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import load_config
from tests.test_submit import MODEL, fabricate_run

# Run in a child Python: refuse optuna and matplotlib, check which comp is imported, then run the CLI.
BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("optuna", "matplotlib"):
            raise ImportError(name + " was imported by comp predict")
sys.meta_path.insert(0, Block())
import comp
assert comp.__file__.startswith(sys.argv[1]), comp.__file__
from comp.cli import main
main(sys.argv[2:], prog_name="comp")
"""


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _competition(make_competition, write_config, *, counts=None, sample=None, name="exp", **cfg):
    root = make_competition(counts=counts, n_test=7)
    if sample is not None:
        frame = pd.read_csv(root / "sample_submission.csv", dtype=str)
        sample(frame).to_csv(root / "sample_submission.csv", index=False)
    model = cfg.pop("model", MODEL)
    path = write_config(root, name=name, model=model, train={"device": "cpu"}, submit={"batch_size": 4}, **cfg)
    cfg = load_config(path)
    return root, path, cfg, load_competition(cfg.data)


def _strip_to_bundle(in_tmp: Path, root: Path) -> None:
    """What a Kaggle notebook has: no runs/, no folds/, no training images or train.csv."""
    for folder in ("runs", "folds"):
        shutil.rmtree(in_tmp / folder, ignore_errors=True)
    shutil.rmtree(root / "train")
    (root / "train.csv").unlink()


def _predict(bundle: Path, root: Path, out: Path, *extra):
    return invoke("predict", bundle, "--test-dir", root / "test", "--sample", root / "sample_submission.csv",
                  "--out", out, *extra)


@pytest.mark.parametrize("case", ["label+hflip", "proba+d4+geometric", "binary", "blend+ordinal", "blend+auto",
                                  "regress+ordinal"])
def test_predict_writes_byte_for_byte_what_submit_writes(in_tmp, make_competition, write_config, case):
    counts = {"0": 6, "1": 6, "2": 6} if case.startswith("blend") else {"0": 9, "1": 9} if case == "binary" else None
    sample = {"proba+d4+geometric": lambda f: f.assign(cat=0.3, dog=0.3, eel=0.4).drop(columns="label"),
              "binary": lambda f: f.assign(label=0.5)}.get(case)
    extra = {"model": {**MODEL, "head": "regress"}, "data": {"classes": ["cat", "dog", "eel"]}} \
        if case == "regress+ordinal" else {}
    root, path, cfg, comp = _competition(make_competition, write_config, counts=counts, sample=sample, **extra)
    fabricate_run(cfg, comp)
    args = {"label+hflip": ["--tta", "hflip"], "proba+d4+geometric": ["--tta", "d4", "--merge", "geometric"],
            "binary": ["--tta", "vflip"], "blend+ordinal": ["exp", "exp2", "--weights", "2,1", "--ordinal"],
            "blend+auto": ["exp", "exp2", "--weights", "auto", "--tta", "hflip"],
            "regress+ordinal": ["--tta", "hflip+scale:0.9,1.1", "--ordinal"]}[case]
    if case.startswith("blend"):
        cfg2 = load_config(path, ["name=exp2"])
        fabricate_run(cfg2, comp, seed=5)
    submitted = invoke("submit", "--config", path, *args)
    assert submitted.exit_code == 0, submitted.output
    written = [p for p in sorted((in_tmp / "submissions").glob("*.csv")) if not p.name.endswith("-probs.csv")][0]
    exported = invoke("export", "--config", path, "--out", in_tmp / "bundle", *args)
    assert exported.exit_code == 0, exported.output
    _strip_to_bundle(in_tmp, root)
    result = _predict(in_tmp / "bundle", root, in_tmp / "predicted.csv")
    assert result.exit_code == 0, result.output
    assert (in_tmp / "predicted.csv").read_bytes() == written.read_bytes()
    assert "7 rows" in result.output and "ms/image" in result.output
    plan = json.loads((in_tmp / "bundle/plan.json").read_text())
    meta = json.loads(written.with_suffix(".json").read_text())
    assert plan["views"] and len(plan["views"]) == len(meta["views"]) and plan["merge"] == meta["merge"]
    assert plan["weights"] == meta["weights"] and plan["sample"]["kind"] == meta["target"]["kind"]
    if case == "blend+auto":  # the fitted weights are frozen, not refitted or reset to equal
        assert meta["weights"] == list(meta["weights_auto"]["weights"].values())


@pytest.fixture
def bundle(in_tmp, make_competition, write_config):
    """An exported fabricated run, with the competition's training data and runs/ removed."""
    root, path, cfg, comp = _competition(make_competition, write_config)
    fabricate_run(cfg, comp)
    result = invoke("export", "--config", path, "--out", in_tmp / "bundle", "--tta", "hflip")
    assert result.exit_code == 0, result.output
    _strip_to_bundle(in_tmp, root)
    return {"dir": in_tmp / "bundle", "root": root, "tmp": in_tmp}


def _refused(result, fragment: str, out: Path, before: bytes | None = None) -> None:
    assert result.exit_code == 2, result.output
    assert fragment in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (out.read_bytes() == before) if before is not None else not out.exists()


def test_predict_reads_each_file_once_and_a_typo_in_workers_is_one_error(bundle, monkeypatch):
    import comp.bundle.manifest as manifest

    hashed: list[str] = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    out = bundle["tmp"] / "submission.csv"
    assert _predict(bundle["dir"], bundle["root"], out).exit_code == 0  # no --batch-size: the plan's
    listed = json.loads((bundle["dir"] / "manifest.json").read_text())["files"]
    assert sorted(hashed) == sorted(Path(name).name for name in listed)  # each checksum computed once
    typo = _predict(bundle["dir"], bundle["root"], out, "--num-workers", "two")
    assert typo.exit_code == 2 and "'two': use auto or a whole number >= 0" in typo.output


def test_an_altered_weights_file_is_refused_before_loading(bundle):
    weights = bundle["dir"] / "models/exp/fold1.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = bundle["tmp"] / "submission.csv"
    out.write_text("id,label\nearlier,file\n")
    before = out.read_bytes()
    _refused(_predict(bundle["dir"], bundle["root"], out), "fold1.safetensors: checksum mismatch", out, before)


def test_a_missing_file_and_a_folder_that_is_not_a_bundle_are_refused(bundle, in_tmp):
    out = in_tmp / "submission.csv"
    (bundle["dir"] / "plan.json").unlink()
    _refused(_predict(bundle["dir"], bundle["root"], out), "plan.json: listed in manifest.json but missing", out)
    _refused(_predict(in_tmp, bundle["root"], out), "not a comp bundle (no manifest.json)", out)


def test_a_bundle_of_another_format_names_both_versions_and_the_fix(bundle):
    manifest = json.loads((bundle["dir"] / "manifest.json").read_text())
    manifest.update(format=99, comp_version="9.0.0")
    (bundle["dir"] / "manifest.json").write_text(json.dumps(manifest))
    out = bundle["tmp"] / "submission.csv"
    _refused(_predict(bundle["dir"], bundle["root"], out), "bundle format 99 (made by comp 9.0.0)", out)
    assert "pip install --no-index --no-deps" in _predict(bundle["dir"], bundle["root"], out).output


def test_test_images_missing_for_sample_ids_are_named(bundle):
    (bundle["root"] / "test/t003.png").unlink()
    out = bundle["tmp"] / "submission.csv"
    _refused(_predict(bundle["dir"], bundle["root"], out), "1 of 7 ids have no image", out)
    assert "t003" in _predict(bundle["dir"], bundle["root"], out).output


def test_a_sample_with_other_columns_is_refused(bundle):
    sample = bundle["root"] / "sample_submission.csv"
    pd.read_csv(sample).rename(columns={"label": "target"}).to_csv(sample, index=False)
    out = bundle["tmp"] / "submission.csv"
    _refused(_predict(bundle["dir"], bundle["root"], out),
             "columns id, target but the bundle was exported for id, label", out)


def test_a_hidden_test_set_with_other_ids_is_predicted(bundle):
    """Kaggle swaps in the hidden test set: other ids, more rows, same columns."""
    root = bundle["root"]
    for i in range(3):
        shutil.copy(root / "test/t000.png", root / f"test/hidden{i}.png")
    pd.DataFrame({"id": [f"hidden{i}" for i in range(3)] + ["t001"], "label": "cat"}).to_csv(
        root / "sample_submission.csv", index=False)
    out = bundle["tmp"] / "submission.csv"
    result = _predict(bundle["dir"], root, out)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, dtype=str)
    assert written["id"].tolist() == ["hidden0", "hidden1", "hidden2", "t001"]
    assert written["label"].iloc[0] == written["label"].iloc[1] == written["label"].iloc[2]  # the same image


def test_export_refuses_a_folder_that_is_not_a_bundle_and_replaces_an_earlier_bundle(in_tmp, make_competition,
                                                                                    write_config):
    root, path, cfg, comp = _competition(make_competition, write_config)
    fabricate_run(cfg, comp)
    (in_tmp / "notes").mkdir()
    (in_tmp / "notes/mine.txt").write_text("keep me")
    refused = invoke("export", "--config", path, "--out", in_tmp / "notes")
    assert refused.exit_code == 2 and "is not a comp bundle" in refused.output
    assert (in_tmp / "notes/mine.txt").read_text() == "keep me"
    assert invoke("export", "--config", path, "--out", in_tmp / "b", "--tta", "hflip").exit_code == 0
    again = invoke("export", "--config", path, "--out", in_tmp / "b")
    assert again.exit_code == 0, again.output
    assert json.loads((in_tmp / "b/plan.json").read_text())["tta"] == "none"
    assert not list(in_tmp.glob(".b.*"))  # no temp or old folder left beside it
    manifest = json.loads((in_tmp / "b/manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(in_tmp / "b")) for p in (in_tmp / "b").rglob("*") if p.is_file())
    assert sorted([*manifest["files"], "manifest.json"]) == on_disk
    assert all(p.stat().st_mode & 0o044 for p in (in_tmp / "b").rglob("*.safetensors"))  # readable when shared


def test_predict_imports_neither_optuna_nor_matplotlib(bundle):
    out = bundle["tmp"] / "submission.csv"
    root = str(Path(__file__).resolve().parents[1] / "comp")
    args = ["predict", str(bundle["dir"]), "--test-dir", str(bundle["root"] / "test"),
            "--sample", str(bundle["root"] / "sample_submission.csv"), "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", BLOCKER, root, *args], capture_output=True, text=True,
                          cwd=bundle["tmp"], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file()


def _offline_venv(tmp: Path) -> Path:
    """A fresh venv that sees this environment's packages but not comp, as a Kaggle image has torch and timm."""
    deps = tmp / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("comp-", "comp.", "__editable__", "_comp")) and entry.name not in ("comp",):
            (deps / entry.name).symlink_to(entry)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_deps.pth").write_text(str(deps) + "\n")
    return venv


@pytest.mark.slow
def test_the_bundled_wheel_installs_offline_and_predicts_what_submit_wrote(in_tmp, make_competition, write_config):
    root, path, cfg, comp = _competition(make_competition, write_config)
    fabricate_run(cfg, comp)
    assert invoke("submit", "--config", path, "--tta", "hflip").exit_code == 0
    assert invoke("export", "--config", path, "--out", in_tmp / "bundle", "--tta", "hflip").exit_code == 0
    kaggle = in_tmp / "kaggle"
    shutil.copytree(in_tmp / "bundle", kaggle / "input/bundle")
    _strip_to_bundle(in_tmp, root)
    venv = _offline_venv(kaggle)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="", HF_HUB_OFFLINE="1",
               PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")
    wheel = next((kaggle / "input/bundle").glob("comp-*-py3-none-any.whl"))
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q", "--no-index", str(wheel)]
    installed = subprocess.run(pip, capture_output=True, text=True, env=env, cwd=kaggle, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    out = kaggle / "working/submission.csv"
    out.parent.mkdir()
    args = ["predict", str(kaggle / "input/bundle"), "--test-dir", str(root / "test"),
            "--sample", str(root / "sample_submission.csv"), "--out", str(out)]
    proc = subprocess.run([str(venv / "bin/python"), "-c", BLOCKER, str(venv), *args], capture_output=True,
                          text=True, env=env, cwd=out.parent, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_bytes() == (in_tmp / "submissions/exp-tta.csv").read_bytes()
    assert (venv / "bin/comp").is_file()  # the wheel's console script
