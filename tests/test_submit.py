"""Submissions: run checks (folds, classes, configs), every validation check, ``comp submit`` end to end,
``--check``, ``--tta auto``, ``--ordinal``, blends, and ``comp score`` with its ledger.

Run folders are fabricated: tiny ``timm:test_resnet`` models with random weights, saved as the
training engine saves them (docs/artifacts.md).
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from comp.cli import main
from comp.competition import load_competition
from comp.config import load_config
from comp.errors import CheckpointError, SubmitError
from comp.folds import folds_hash, make_folds, write_folds
from comp.models.factory import create_model
from comp.predict.runs import check_classes, load_experiment
from comp.runfolder.checkpoint import save_checkpoint
from comp.submit.format import build_submission, sample_format
from comp.submit.score import infer_experiment
from comp.submit.validate import check_file

MODEL = {"name": "timm:test_resnet"}


def fabricate_run(cfg, comp, seed=0, classes=None, config_hash="h1", full=False):
    """Write runs/<name>/fold<k>/best.pt (+ full/), oof.csv and cv.json the way the engine does."""
    folds = make_folds(comp, k=cfg.folds.k, seed=cfg.folds.seed, name=cfg.folds.name)
    write_folds(folds, force=True)
    run = cfg.run_dir
    members = [f"fold{k}" for k in range(cfg.folds.k)] + (["full"] if full else [])
    for i, member in enumerate(members):
        torch.manual_seed(seed * 100 + i)
        model = create_model(cfg.model, comp.num_classes, cfg.data.channels)
        state = {"model": model.state_dict(), "classes": list(classes or comp.classes_), "config": cfg.to_dict(),
                 "config_hash": config_hash, "folds_hash": folds_hash(cfg.folds.name),
                 "fold": i if member != "full" else "full", "num_classes": comp.num_classes,
                 "in_chans": cfg.data.channels}
        save_checkpoint(state, run / member / "best.pt")
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(comp.num_classes), len(comp.train))
    oof = pd.DataFrame({"id": comp.train["id"], "label": comp.train["label"], "fold": folds.frame["fold"]})
    for k, c in enumerate(comp.classes_):
        oof[f"prob_{c}"] = probs[:, k]
    oof.to_csv(run / "oof.csv", index=False)
    cv = {"experiment": cfg.name, "config_hash": config_hash, "monitor": "accuracy",
          "oof": {"accuracy": 0.5, "f1": 0.4, "qwk": 0.3, "auc": 0.6, "logloss": 1.1}}
    (run / "cv.json").write_text(json.dumps(cv))
    return run


@pytest.fixture
def project(in_tmp, make_competition, write_config):
    """A competition (3 classes, 18 train / 7 test images), its config, folds and one fabricated run ``exp``."""
    root = make_competition(n_test=7)
    path = write_config(root, name="exp", model=MODEL, train={"device": "cpu"}, submit={"batch_size": 64})
    cfg = load_config(path)
    comp = load_competition(cfg.data)
    fabricate_run(cfg, comp)
    solution = pd.DataFrame({"id": [f"t{i:03d}" for i in range(7)], "label": [["cat", "dog", "eel"][i % 3]
                                                                              for i in range(7)]})
    solution.to_csv(in_tmp / "solution.csv", index=False)
    return {"root": root, "config": path, "cfg": cfg, "comp": comp, "dir": in_tmp}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ---------------------------------------------------------------- runs: folds, classes, configs


def test_missing_fold_refused(project):
    (project["dir"] / "runs/exp/fold1/best.pt").unlink()
    with pytest.raises(SubmitError, match=r"fold\(s\) 1 of 3 have no best.pt"):
        load_experiment("exp", project["comp"])


def test_fold_beyond_k_refused(project):
    shutil.copytree(project["dir"] / "runs/exp/fold0", project["dir"] / "runs/exp/fold3")
    with pytest.raises(SubmitError, match="fold3 but the folds file has k=3"):
        load_experiment("exp", project["comp"])


def test_missing_full_refused_and_full_loaded(project):
    with pytest.raises(SubmitError, match="full/best.pt: not found"):
        load_experiment("exp", project["comp"], use_full=True)
    fabricate_run(project["cfg"], project["comp"], full=True)
    exp = load_experiment("exp", project["comp"], use_full=True)
    assert [m.name for m in exp.members] == ["fold0", "fold1", "fold2", "full"]


def test_folds_disagreeing_on_config_refused(project):
    path = project["dir"] / "runs/exp/fold2/best.pt"
    state = torch.load(path, weights_only=True)
    state["config_hash"] = "other"
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="trained with config other"):
        load_experiment("exp", project["comp"])


def test_classes_unlike_the_competition_refused(project):
    fabricate_run(project["cfg"], project["comp"], classes=["cat", "dog", "fox"])
    exp = load_experiment("exp", project["comp"])
    with pytest.raises(CheckpointError, match="trained on classes"):
        check_classes([exp], project["comp"])


def test_blend_with_other_classes_refused(project):
    cfg2 = project["cfg"].model_copy(update={"name": "exp2"})
    fabricate_run(cfg2, project["comp"], classes=["cat", "dog", "fox"])
    experiments = [load_experiment(n, project["comp"]) for n in ("exp", "exp2")]
    with pytest.raises(SubmitError, match="cannot blend exp .* with exp2"):
        check_classes(experiments, project["comp"])
    result = invoke("submit", "exp", "exp2", "--config", project["config"])
    assert result.exit_code == 2 and "cannot blend" in result.output


# ---------------------------------------------------------------- format and validation


@pytest.fixture
def label_fmt(tmp_path):
    path = tmp_path / "sample.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "label": ["x", "x", "x"]}).to_csv(path, index=False)
    return sample_format(path, ["x", "y"], "id")


@pytest.fixture
def prob_fmt(tmp_path):
    path = tmp_path / "sample_probs.csv"
    pd.DataFrame({"id": ["a", "b"], "prob_y": [0.5, 0.5], "prob_x": [0.5, 0.5]}).to_csv(path, index=False)
    return sample_format(path, ["x", "y"], "id")


def check_text(tmp_path, text, fmt):
    path = tmp_path / "sub.csv"
    path.write_text(text)
    return check_file(path, fmt)


def test_sample_formats(label_fmt, prob_fmt, tmp_path):
    assert (label_fmt.label_col, label_fmt.class_cols) == ("label", None)
    assert prob_fmt.class_cols == ["prob_x", "prob_y"]  # matched by name after the prefix, not by position
    path = tmp_path / "numbered.csv"
    pd.DataFrame({"id": ["a"], **{f"p_{c}": [0.1] for c in (10, 11, 12)}}).to_csv(path, index=False)
    assert sample_format(path, [10, 11, 12], "id").class_cols == ["p_10", "p_11", "p_12"]
    pd.DataFrame({"id": ["a"], "u": [0.5], "v": [0.5], "w": [0]}).to_csv(path, index=False)
    with pytest.raises(SubmitError, match="no column for class"):
        sample_format(path, ["x", "y", "z"], "id")


def test_build_follows_sample_order(label_fmt, prob_fmt):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # rows for ids c, a, b
    frame = build_submission(label_fmt, ["c", "a", "b"], probs)
    assert frame.to_dict("list") == {"id": ["a", "b", "c"], "label": ["y", "x", "x"]}
    frame = build_submission(prob_fmt, ["b", "a"], probs[:2])
    assert list(frame.columns) == ["id", "prob_y", "prob_x"] and frame["prob_y"].tolist() == [0.8, 0.1]
    with pytest.raises(SubmitError, match="have no prediction"):
        build_submission(label_fmt, ["a", "b"], probs[:2])


def test_valid_file_passes(label_fmt, prob_fmt, tmp_path):
    assert check_text(tmp_path, "id,label\na,x\nb,y\nc,x\n", label_fmt) == 3
    assert check_text(tmp_path, "id,prob_y,prob_x\na,0.25,0.75\nb,1,0\n", prob_fmt) == 2


@pytest.mark.parametrize(("text", "message"), [
    ("id,label\na,x\nb,y\nz,x\n", "line 4, column 'id': id 'z' is not in sample.csv"),
    ("id,label\na,x\nc,y\nb,x\n", "line 3, column 'id': id 'c' where sample.csv has 'b'"),
    ("id,label\na,x\na,y\nc,x\n", "line 3, column 'id': duplicate id 'a'"),
    ("id,label\na,x\nb,y\n", "2 rows but sample.csv has 3; id 'c' is missing"),
    ("id,label\na,x\nb,\nc,x\n", "line 3, column 'label': missing value ''"),
    ("id,label\na,x\nb,NaN\nc,x\n", "line 3, column 'label': missing value 'NaN'"),
    ("id,label\na,x\nb,q\nc,x\n", "line 3, column 'label': 'q' is not a class"),
    ("id,target\na,x\nb,y\nc,x\n", "column 'label' is missing"),
    ("id,label,extra\na,x,1\nb,y,1\nc,x,1\n", "column 'extra' is not in the sample"),
    ("label,id\nx,a\ny,b\nx,c\n", "column 1 is 'label' where the sample has 'id'"),
])
def test_label_checks(label_fmt, tmp_path, text, message):
    with pytest.raises(SubmitError, match=message.replace("(", r"\(")):
        check_text(tmp_path, text, label_fmt)


@pytest.mark.parametrize(("text", "message"), [
    ("id,prob_y,prob_x\na,0.5,0.4\nb,1,0\n", "line 2: probabilities sum to 0.9, not 1"),
    ("id,prob_y,prob_x\na,0.5,0.5\nb,1.5,-0.5\n", "line 3, column 'prob_y': '1.5' is outside"),
    ("id,prob_y,prob_x\na,0.5,0.5\nb,abc,0\n", "line 3, column 'prob_y': 'abc' is not a number"),
    ("id,prob_y,prob_x\na,0.5,nan\nb,1,0\n", "line 2, column 'prob_x': missing value 'nan'"),
])
def test_probability_checks(prob_fmt, tmp_path, text, message):
    with pytest.raises(SubmitError, match=message):
        check_text(tmp_path, text, prob_fmt)


def test_infer_experiment_from_file_name():
    assert infer_experiment("submissions/exp1.csv") == "exp1"
    assert infer_experiment("submissions/exp1-tta.csv") == "exp1"
    assert infer_experiment("exp1+exp2-tta.csv") == "exp1+exp2"


# ---------------------------------------------------------------- comp submit / comp score end to end


def test_submit_end_to_end_passes_check_and_scores(project):
    cfg = project["config"]
    result = invoke("submit", "--config", cfg)
    assert result.exit_code == 0, result.output
    sub = project["dir"] / "submissions/exp.csv"
    sample = pd.read_csv(project["root"] / "sample_submission.csv", dtype=str)
    written = pd.read_csv(sub, dtype=str)
    assert list(written.columns) == list(sample.columns) and written["id"].tolist() == sample["id"].tolist()
    assert set(written["label"]) <= {"cat", "dog", "eel"}
    probs = pd.read_csv(project["dir"] / "submissions/exp-probs.csv")
    assert list(probs.columns) == ["id", "prob_cat", "prob_dog", "prob_eel"]
    assert np.allclose(probs.iloc[:, 1:].sum(axis=1), 1.0)
    check = invoke("submit", "--config", cfg, "--check", sub)
    assert (check.exit_code, check.output.strip()) == (0, "ok")

    score = invoke("score", sub, "--solution", project["dir"] / "solution.csv", "--config", cfg,
                   "--metric", "accuracy", "--metric", "logloss")
    assert score.exit_code == 0, score.output
    ledger = pd.read_csv(project["dir"] / "submissions/ledger.csv")
    assert ledger["metric"].tolist() == ["accuracy", "logloss"]
    assert ledger["experiment"].tolist() == ["exp", "exp"] and ledger["config_hash"].tolist() == ["h1", "h1"]
    oof = json.loads((project["dir"] / "submissions/exp.json").read_text())["oof"]  # this submission's OOF score
    assert ledger["cv_score"].tolist() == pytest.approx([oof["accuracy"], oof["logloss"]], abs=1e-6)
    assert oof["accuracy"] != 0.5  # not the fabricated training cv.json
    assert 0 <= ledger["test_score"][0] <= 1
    invoke("score", sub, "--solution", project["dir"] / "solution.csv", "--config", cfg)
    assert len(pd.read_csv(project["dir"] / "submissions/ledger.csv")) == 3


def test_check_reports_first_problem_exit_2(project):
    bad = project["dir"] / "bad.csv"
    bad.write_text("id,label\nt000,cat\nt001,wolf\n")
    result = invoke("submit", "--config", project["config"], "--check", bad)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "error:" in result.output


def test_submit_tta_blend_weights(project):
    cfg2 = project["cfg"].model_copy(update={"name": "exp2"})
    fabricate_run(cfg2, project["comp"], seed=1)
    result = invoke("submit", "exp", "exp2", "--weights", "0.6,0.4", "--tta", "hflip", "--merge", "geometric",
                    "--config", project["config"])
    assert result.exit_code == 0, result.output
    sub = project["dir"] / "submissions/exp+exp2-tta.csv"
    assert invoke("submit", "--config", project["config"], "--check", sub).exit_code == 0
    meta = json.loads((project["dir"] / "submissions/exp+exp2-tta.json").read_text())
    assert meta["weights"] == pytest.approx([0.6, 0.4]) and meta["views"] == ["identity", "hflip"]
    wrong = invoke("submit", "exp", "exp2", "--weights", "1,2,3", "--config", project["config"])
    assert wrong.exit_code == 2 and "3 weights for 2 experiments" in wrong.output


def test_submit_tta_auto_prints_table(project):
    result = invoke("submit", "--tta", "auto", "--config", project["config"])
    assert result.exit_code == 0, result.output
    assert "policy" in result.output and "logloss" in result.output and "--tta auto:" in result.output
    assert result.output.count("d4") >= 3  # one row per merge mode


def test_submit_ordinal(in_tmp, make_competition, write_config):
    root = make_competition(counts={"0": 6, "1": 6, "2": 6}, n_test=4)
    path = write_config(root, name="grades", model=MODEL, train={"device": "cpu"})
    cfg = load_config(path)
    fabricate_run(cfg, load_competition(cfg.data))
    result = invoke("submit", "--ordinal", "--config", path)
    assert result.exit_code == 0, result.output
    assert "OOF QWK" in result.output
    written = pd.read_csv(in_tmp / "submissions/grades.csv")
    assert set(written["label"]) <= {0, 1, 2}

    # A sample with one probability column per class: no labels to cut, and the columns get probabilities.
    sample = pd.read_csv(root / "sample_submission.csv")[["id"]].assign(c2=0.2, c0=0.5, c1=0.3)
    sample.to_csv(root / "sample_submission.csv", index=False)
    refused = invoke("submit", "--ordinal", "--config", path)
    assert refused.exit_code == 2 and "drop --ordinal" in refused.output
    assert invoke("submit", "--config", path).exit_code == 0
    written = pd.read_csv(in_tmp / "submissions/grades.csv")
    assert list(written.columns) == ["id", "c2", "c0", "c1"]
    assert np.allclose(written[["c0", "c1", "c2"]].sum(axis=1), 1.0)
    assert invoke("submit", "--config", path, "--check", in_tmp / "submissions/grades.csv").output.strip() == "ok"


def test_ordinal_refuses_named_classes(project):
    result = invoke("submit", "--ordinal", "--config", project["config"])
    assert result.exit_code == 2 and "needs ordered classes" in result.output and "data.classes" in result.output


def test_tta_flag_swallowing_an_experiment_name_gets_a_hint(project):
    result = invoke("submit", "--tta", "exp", "--config", project["config"])
    assert result.exit_code == 2 and "comp submit exp --tta" in result.output


# ---------------------------------------------------------------- target kinds (issue: real competition formats)


def write_sample(path, column, values):
    pd.DataFrame({"id": [f"t{i}" for i in range(len(values))], column: values}).to_csv(path, index=False)
    return path


def test_sample_kind_is_read_from_its_values(tmp_path):
    path = tmp_path / "sample.csv"
    fmt = sample_format(write_sample(path, "target", [0.5, 0.5]), ["0", "1"], "id")
    assert fmt.kind == "binary" and fmt.proba_col == "target" and fmt.positive == 1 and "0.5" in fmt.reason
    fmt = sample_format(write_sample(path, "label", ["0", "0"]), ["0", "1"], "id")
    assert fmt.kind == "label" and "submit.target=proba" in fmt.reason  # all-zeros: labels, and says how to switch
    assert sample_format(path, ["0", "1"], "id", target="proba").kind == "binary"
    assert sample_format(write_sample(path, "target", [0, 0]), ["cat", "dog"], "id").kind == "binary"
    fmt = sample_format(write_sample(path, "target", [0.5, 0.5]), ["cat", "dog"], "id", positive="cat")
    assert fmt.positive == 0
    with pytest.raises(SubmitError, match="submit.positive: 'cow' is not a class"):
        sample_format(path, ["cat", "dog"], "id", positive="cow")
    with pytest.raises(SubmitError, match="only for 2 classes"):
        sample_format(path, ["a", "b", "c"], "id", target="proba")


def test_binary_probability_column_gets_p_positive(tmp_path):
    fmt = sample_format(write_sample(tmp_path / "s.csv", "target", [0.5, 0.5]), ["0", "1"], "id")
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    out = build_submission(fmt, ["t1", "t0"], probs)
    assert out["target"].tolist() == [0.8, 0.1]  # P(class "1"), in the sample's id order
    fmt.positive = 0
    assert build_submission(fmt, ["t1", "t0"], probs)["target"].tolist() == [0.2, 0.9]


def test_labels_validated_as_spelled(tmp_path):
    fmt = sample_format(write_sample(tmp_path / "s.csv", "label", ["000", "000"]), ["000", "001"], "id")
    ok = tmp_path / "ok.csv"
    write_sample(ok, "label", ["001", "000"])
    assert check_file(ok, fmt) == 2
    write_sample(ok, "label", ["1", "0"])
    with pytest.raises(SubmitError, match="'1' is not a class"):
        check_file(ok, fmt)


def test_score_reads_the_file_not_a_side_file(project):
    """A label file scored by logloss is scored on its own one-hot rows: the side -probs.csv is never read."""
    from sklearn.metrics import log_loss

    cfg = project["config"]
    assert invoke("submit", "--config", cfg).exit_code == 0
    sub = project["dir"] / "submissions/exp.csv"
    (project["dir"] / "submissions/exp-probs.csv").unlink()
    result = invoke("score", sub, "--solution", project["dir"] / "solution.csv", "--config", cfg,
                    "--metric", "logloss")
    assert result.exit_code == 0, result.output
    written = pd.read_csv(sub, dtype=str)
    truth = pd.read_csv(project["dir"] / "solution.csv", dtype=str).set_index("id").loc[written["id"], "label"]
    onehot = pd.get_dummies(written["label"]).reindex(columns=["cat", "dog", "eel"], fill_value=0).to_numpy(float)
    expected = log_loss(truth, np.clip(onehot, 1e-15, 1), labels=["cat", "dog", "eel"])
    line = next(ln for ln in result.output.splitlines() if ln.startswith("logloss"))
    assert float(line.split()[1]) == pytest.approx(expected, abs=1e-5)


def test_solution_must_cover_the_submission(project):
    cfg = project["config"]
    assert invoke("submit", "--config", cfg).exit_code == 0
    partial = project["dir"] / "partial.csv"
    pd.read_csv(project["dir"] / "solution.csv").iloc[:3].to_csv(partial, index=False)
    result = invoke("score", project["dir"] / "submissions/exp.csv", "--solution", partial, "--config", cfg)
    assert result.exit_code == 2 and "4 of the submission's 7 ids have no true label" in result.output


def test_score_reads_the_file_as_it_was_written(project, tmp_path):
    """A binary file written with submit.positive=cat is scored as P(cat) even when the config no longer says so."""
    from sklearn.metrics import roc_auc_score

    root = project["root"]
    sample = pd.read_csv(root / "sample_submission.csv").assign(label=0.5)
    sample.to_csv(root / "sample_submission.csv", index=False)
    train = pd.read_csv(root / "train.csv")
    train = train[train["label"] != "eel"]
    train.to_csv(root / "train.csv", index=False)
    cfg = project["config"]
    cfg_obj = load_config(cfg)
    fabricate_run(cfg_obj, load_competition(cfg_obj.data))
    assert invoke("submit", "--config", cfg, "--set", "submit.positive=cat").exit_code == 0
    solution = pd.DataFrame({"id": [f"t{i:03d}" for i in range(7)], "label": ["cat", "dog"] * 3 + ["cat"]})
    solution.to_csv(tmp_path / "sol.csv", index=False)
    result = invoke("score", project["dir"] / "submissions/exp.csv", "--solution", tmp_path / "sol.csv",
                    "--config", cfg, "--metric", "auc")
    assert result.exit_code == 0, result.output
    written = pd.read_csv(project["dir"] / "submissions/exp.csv")
    expected = roc_auc_score(solution["label"] == "cat", written["label"])
    line = next(ln for ln in result.output.splitlines() if ln.startswith("auc"))
    assert float(line.split()[1]) == pytest.approx(expected, abs=1e-6)


def test_a_declared_class_spelled_like_a_missing_value_is_a_label(tmp_path):
    fmt = sample_format(write_sample(tmp_path / "s.csv", "label", ["NA", "NA"]), ["NA", "pos"], "id")
    ok = write_sample(tmp_path / "ok.csv", "label", ["pos", "NA"])
    assert check_file(ok, fmt) == 2
