"""Issue 13: an honest CV and sound training (each test failed on the code before the fix)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from comp.config import load_config
from comp.runfolder.checkpoint import load_checkpoint
from comp.train.optim import create_criterion
from comp.train.runner import run_training


@pytest.fixture
def project(tiny_project):
    """A tiny 3-class competition (3 folds, 2 epochs of a 0.37M-parameter timm model) in an empty folder."""
    return tiny_project()


def quiet(_line: str) -> None:
    pass


def _batch(seed: int = 0, n: int = 12, c: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)


@pytest.mark.parametrize("weights,eps", [(None, 0.0), (None, 0.1), ([0.5, 2.0, 1.0], 0.0)])
def test_loss_equals_pytorch_when_weights_or_smoothing_alone(weights, eps):
    logits, target = _batch()
    w = None if weights is None else torch.tensor(weights)
    ours = create_criterion(w, eps, torch.device("cpu"))(logits, target)
    torch.testing.assert_close(ours, nn.CrossEntropyLoss(weight=w, label_smoothing=eps)(logits, target))


def test_loss_smooths_the_target_then_weights_each_sample():
    logits, target = _batch(1)
    w, eps = torch.tensor([0.2, 3.0, 1.5]), 0.1
    ours = create_criterion(w, eps, torch.device("cpu"))(logits, target)
    q = torch.full_like(logits, eps / 3) + (1 - eps) * nn.functional.one_hot(target, 3)
    per_sample = -(q * torch.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(ours, (w[target] * per_sample).sum() / w[target].sum())


def test_weighted_smoothed_loss_keeps_each_samples_optimum():
    """A majority-class image (weight 0.2, rare classes 3.0) must still be pulled to P(true) = 1 - e + e/C."""
    w, eps = torch.tensor([0.2, 3.0, 3.0]), 0.1
    criterion = create_criterion(w, eps, torch.device("cpu"))
    logits = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=2.0)
    for _ in range(500):
        opt.zero_grad()
        criterion(logits, torch.tensor([0])).backward()
        opt.step()
    p_true = torch.softmax(logits.detach(), 1)[0, 0].item()
    assert p_true == pytest.approx(1 - eps + eps / 3, abs=1e-3)  # the old loss pulled it far lower


# -- 2. EMA warm-up ----------------------------------------------------------------------------------


def test_ema_warms_up_so_early_updates_follow_the_model():
    from comp.train.optim import ModelEma

    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = ModelEma(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    # t=0: decay min(0.999, 1/10) = 0.1, so the average moves 90% of the way (without warm-up: 0.1%)
    assert ema.state_dict()["weight"].flatten().tolist() == pytest.approx([0.9, 0.9])
    for _ in range(10_000):
        ema.update(model)
    assert ema.current_decay() == 0.999 and ema.updates == 10_001


def test_ema_horizon_longer_than_a_third_of_the_run_is_one_warning_line(project):
    lines = []
    run_training(load_config(project["path"], ["train.epochs=1", "train.ema=0.999"]), folds=[0], log=lines.append)
    warned = [line for line in lines if "warning: train.ema=0.999" in line]
    assert len(warned) == 1 and "\n" not in warned[0], lines
    lines.clear()
    run_training(load_config(project["path"], ["train.epochs=4", "train.ema=0.5"]), folds=[0], log=lines.append)
    assert not [line for line in lines if "warning" in line]


def test_ema_resume_continues_the_warm_up_exactly(project):
    from comp.competition import load_competition
    from comp.device import setup_runtime
    from comp.folds import folds_hash, read_folds
    from comp.train.runner import fold_spec, run_fold, training_hash

    cfg = load_config(project["path"], ["train.epochs=3", "train.ema=0.9"])
    comp = load_competition(cfg.data)
    folds = read_folds(cfg.folds.name, comp, k=cfg.folds.k)
    runtime = setup_runtime(cfg.train)

    def spec(name):
        return fold_spec(folds, 0, project["dir"] / name, 3, folds_hash(cfg.folds.name), training_hash(cfg))

    whole = run_fold(cfg, comp, spec("whole"), runtime, log=quiet)

    def stop_after_first(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_fold(cfg, comp, spec("cut"), runtime, callback=stop_after_first, log=quiet)
    assert load_checkpoint(project["dir"] / "cut/.staging/fold0/last.pt")["ema_updates"] > 0
    resumed = run_fold(cfg, comp, spec("cut"), runtime, resume=True, log=quiet)
    drop = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in whole.history]
    a = load_checkpoint(project["dir"] / "whole/fold0/last.pt")["model"]
    b = load_checkpoint(project["dir"] / "cut/fold0/last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- 4. one yardstick for selection and tuning ---------------------------------------------------------


def test_valid_loss_is_plain_logloss_whatever_the_weights_and_smoothing(project):
    """``monitor: loss`` selects epochs and scores trials: it must not be each trial's own weighted criterion."""
    cfg = load_config(project["path"], ["train.epochs=1", "train.monitor=loss", "train.label_smoothing=0.3",
                                        "train.class_weights=[1.0,8.0,1.0]"])
    row = run_training(cfg, folds=[0], log=quiet).results[0].history[0]
    assert row["valid_loss"] == pytest.approx(row["logloss"], rel=1e-4)


# -- 7. the full fit's epoch count and ties in the monitor ----------------------------------------------


def test_full_fit_counts_only_folds_of_this_folds_file_and_config(project):
    cfg = load_config(project["path"], ["train.epochs=1"])
    run_training(cfg, log=quiet)
    stale = {"best_epoch": 12, "finished": True, "folds_hash": "old", "config_hash": "old"}
    run = project["dir"] / "runs/exp"
    (run / "fold7").mkdir()
    (run / "fold7/metrics.json").write_text(json.dumps(stale))  # left by an earlier k=8 run
    run_training(cfg, folds=[], full=True, log=quiet)
    assert len(pd.read_csv(run / "full/history.csv")) == 1  # was round(mean(1, 1, 1, 12)) = 4


def test_a_tie_in_the_monitor_keeps_the_epoch_with_the_lower_logloss(project, monkeypatch):
    import comp.train.fold as fold_module

    scripted = iter([(0.8, 0.5), (0.8, 0.3), (0.7, 0.2)])  # (accuracy, logloss) of epochs 1..3
    real = fold_module.evaluate

    def evaluate(*args, **kwargs):
        metrics, probs = real(*args, **kwargs)
        metrics["accuracy"], metrics["logloss"] = next(scripted)
        return metrics, probs

    monkeypatch.setattr(fold_module, "evaluate", evaluate)
    result = run_training(load_config(project["path"], ["train.epochs=3"]), folds=[0], log=quiet).results[0]
    assert result.best_epoch == 2 and result.best_score == 0.8


# -- 6. cut-points judged out of fold ------------------------------------------------------------------


def _grade_probs(centre: np.ndarray, num_classes: int = 5) -> np.ndarray:
    grades = np.arange(num_classes)
    probs = np.exp(-((grades[None] - centre[:, None]) ** 2) / 0.5)
    return probs / probs.sum(1, keepdims=True)


def test_cutpoints_that_only_fit_their_own_rows_are_dropped_and_the_output_says_so():
    from comp.predict.ordinal import crossfit_cutpoints

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 150)
    probs = _grade_probs(y + rng.normal(0, 0.9, 150))  # unbiased but noisy: tuning only fits the noise
    cut = crossfit_cutpoints(probs, y, np.arange(150) % 5)
    assert cut.qwk_in_sample > cut.qwk_start + 0.01  # what was reported before, as the gain
    assert not cut.kept and cut.qwk_tuned == cut.qwk_start
    assert cut.thresholds.tolist() == [0.5, 1.5, 2.5, 3.5] and "dropped" in cut.note


def test_cutpoints_that_help_out_of_fold_are_kept_and_reported_out_of_fold():
    from comp.predict.ordinal import apply_cutpoints, crossfit_cutpoints, expected_grade, qwk

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 1000)
    probs = _grade_probs(0.55 * y + 0.4 + rng.normal(0, 0.15, 1000))  # the model under-calls severe grades
    cut = crossfit_cutpoints(probs, y, np.arange(1000) % 5)
    assert cut.kept and cut.qwk_tuned > cut.qwk_start + 0.1
    in_sample = qwk(y, apply_cutpoints(expected_grade(probs), cut.thresholds), 5)
    assert in_sample == pytest.approx(cut.qwk_in_sample) and cut.qwk_tuned < in_sample


def test_submit_ordinal_reports_the_out_of_fold_qwk(in_tmp, make_competition, write_config):
    from click.testing import CliRunner
    from test_submit import MODEL, fabricate_run

    from comp.cli import main
    from comp.competition import load_competition

    root = make_competition(counts={"0": 10, "1": 10, "2": 10}, n_test=4)
    path = write_config(root, name="grades", model=MODEL, train={"device": "cpu"})
    cfg = load_config(path)
    fabricate_run(cfg, load_competition(cfg.data), seed=3)  # random OOF probabilities: any tuned gain is noise
    result = CliRunner().invoke(main, ["submit", "--ordinal", "--config", str(path)])
    assert result.exit_code == 0, result.output
    meta = json.loads((in_tmp / "submissions/grades.json").read_text())["ordinal"]
    assert meta["qwk_in_sample"] > meta["qwk_start"] and not meta["kept"]
    assert meta["thresholds"] == [0.5, 1.5] and "cut-points dropped" in result.output


# -- 5. tuning and CV kept apart -----------------------------------------------------------------------


def test_train_after_tune_does_not_rerun_the_best_trial_and_cv_marks_the_tuned_fold(tiny_project):
    from comp.tune import TuneOptions, run_tune

    project = tiny_project(tune={"trials": 1, "epochs": 1, "folds": [0], "space": {"train.lr": {"choices": [0.01]}}})
    run_tune(load_config(project["path"]), TuneOptions(trials=1, plots=False), log=quiet)
    tune = project["dir"] / "runs/exp/tune"
    from click.testing import CliRunner

    from comp.cli import main

    result = CliRunner().invoke(main, ["train", "--config", str(project["path"]), "--epochs", "1", "--no-report"])
    assert result.exit_code == 0, result.output
    trial = pd.read_csv(tune / "trials/0/fold0/history.csv").drop(columns=["seconds", "images_per_s"])
    fold0 = pd.read_csv(project["dir"] / "runs/exp/fold0/history.csv").drop(columns=["seconds", "images_per_s"])
    assert list(trial.columns) == list(fold0.columns) and trial["train_loss"][0] != fold0["train_loss"][0]
    cv = json.loads((project["dir"] / "runs/exp/cv.json").read_text())
    assert cv["tuned_folds"] == [0] and cv["untuned"]["folds"] == [1, 2]
    untuned = [cv["per_fold"][f]["accuracy"] for f in ("1", "2")]
    assert cv["untuned"]["mean"]["accuracy"] == pytest.approx(np.mean(untuned))
    honest = cv["untuned"]["oof"]["accuracy"]
    printed = f"CV accuracy of the folds comp tune did not score on (2, pooled OOF): {honest:.4f}"
    assert printed in result.output  # the honest figure is on the screen, not only in cv.json


# -- 3. DDP validates the weights it saves -------------------------------------------------------------


def _repredict_best(project, cfg_path, run: str) -> tuple[np.ndarray, np.ndarray]:
    """One process re-predicts ``runs/<run>/fold0/best.pt`` on fold 0's rows: (re-predicted, OOF) probs."""
    from comp.competition import load_competition
    from comp.device import setup_runtime
    from comp.folds import read_folds
    from comp.train.engine import evaluate
    from comp.train.fold import FoldTrainer
    from comp.train.runner import fold_spec

    cfg = load_config(cfg_path)
    comp = load_competition(cfg.data)
    spec = fold_spec(read_folds(cfg.folds.name, comp, k=3), 0, project["dir"] / "scratch", 1, "", "")
    trainer = FoldTrainer(cfg, comp, spec, setup_runtime(cfg.train))
    trainer.model.load_state_dict(load_checkpoint(project["dir"] / f"runs/{run}/fold0/best.pt")["model"])
    _, probs = evaluate(trainer.model, trainer.loaders.valid, trainer.loaders.valid_index, len(spec.valid_idx),
                        trainer.ctx)
    oof = pd.read_csv(project["dir"] / f"runs/{run}/fold0/oof.csv").filter(like="prob_").to_numpy()
    return probs, oof


@pytest.mark.slow
@pytest.mark.parametrize("ema", [None, 0.5])
def test_ddp_oof_is_a_reprediction_of_best_pt(project, ema):
    import os
    import subprocess
    import sys

    path = project["config"](train={"epochs": 2, "batch_size": 8, "device": "cpu", "ema": ema})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "comp", "train", "--config", str(path), "--fold", "0", "--no-report", "--set", "name=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=project["dir"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again, oof = _repredict_best(project, path, "ddp")
    assert np.abs(again - oof).max() < 1e-5  # before: rank 1's half used its own BatchNorm statistics


def test_sync_bn_on_cpu_ddp_is_refused_and_ignored_alone_with_a_warning():
    from comp.device import Runtime
    from comp.errors import TrainError
    from comp.train.checks import setting_warnings, use_sync_bn

    ddp_cpu = Runtime(device=torch.device("cpu"), amp_dtype=None, rank=0, world_size=2, local_rank=0)
    with pytest.raises(TrainError, match="train.sync_bn=true: SyncBatchNorm needs CUDA"):
        use_sync_bn(True, ddp_cpu)
    assert use_sync_bn(None, ddp_cpu) is False
    ddp_cuda = Runtime(device=torch.device("cuda", 0), amp_dtype=None, rank=0, world_size=2, local_rank=0)
    assert use_sync_bn(None, ddp_cuda) is True and use_sync_bn(False, ddp_cuda) is False
    from comp.config import Config

    cfg = Config()
    cfg.train.sync_bn = True
    assert any("train.sync_bn=true does nothing" in line for line in setting_warnings(cfg, 100, distributed=False))
    assert not setting_warnings(cfg, 100, distributed=True)


# -- 8. no setting silently ignored --------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["plateau", "none"])
def test_warmup_without_a_schedule_that_warms_up_is_refused(scheduler):
    from comp.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.warmup_epochs.*train.scheduler={scheduler} has no warm-up"):
        load_config(_demo_config(), [f"train.scheduler={scheduler}", "train.warmup_epochs=1"])
    assert load_config(_demo_config(), ["train.scheduler=cosine", "train.warmup_epochs=1"]).train.warmup_epochs == 1


def _demo_config():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "configs/demo.yaml"


def test_onecycle_keeps_sgd_momentum_as_set():
    from comp.config import TrainConfig
    from comp.train.optim import create_optimizer, create_scheduler

    cfg = TrainConfig(optimizer="sgd", momentum=0.5, scheduler="onecycle")
    optimizer = create_optimizer(nn.Linear(2, 2), cfg, torch.device("cpu"))
    scheduler = create_scheduler(optimizer, cfg, steps_per_epoch=10, epochs=2)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["momentum"] == 0.5  # was cycled between 0.85 and 0.95


def test_class_weights_with_sampler_strength_is_one_warning(project):
    lines = []
    run_training(load_config(project["path"], ["train.epochs=1", "train.class_weights=balanced",
                                               "train.sampler_strength=1.0"]), folds=[0], log=lines.append)
    assert len([line for line in lines if "up-weighted twice" in line]) == 1


def test_vgg_classifier_dropout_defaults_to_torchvisions():
    from comp.config import ModelConfig
    from comp.models.factory import create_model

    def dropouts(**kw):
        model = create_model(ModelConfig(name="vgg11_bn", **kw), num_classes=3, in_chans=1)
        return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]

    assert dropouts() == [0.5, 0.5]
    assert dropouts(dropout=0.0) == [0.0, 0.0]


def test_full_weight_sets_the_full_fits_share(in_tmp, make_competition, write_config):
    from click.testing import CliRunner
    from test_submit import MODEL, fabricate_run

    from comp.cli import main
    from comp.competition import load_competition

    root = make_competition(n_test=6)
    path = write_config(root, name="exp", model=MODEL, train={"device": "cpu"})
    cfg = load_config(path)
    fabricate_run(cfg, load_competition(cfg.data), full=True)

    def probs(*args):
        result = CliRunner().invoke(main, ["submit", "--config", str(path), *args])
        assert result.exit_code == 0, result.output
        return pd.read_csv(in_tmp / "submissions/exp-probs.csv").filter(like="prob").to_numpy()

    folds_only = probs()
    assert np.allclose(probs("--use-full", "--set", "submit.full_weight=0"), folds_only, atol=1e-6)
    assert not np.allclose(probs("--use-full", "--set", "submit.full_weight=0.5"), folds_only, atol=1e-3)
    refused = CliRunner().invoke(main, ["submit", "--config", str(path), "--set", "submit.full_weight=0.5"])
    assert refused.exit_code == 2 and "add --use-full or set submit.full_weight=null" in refused.output


def test_tta_auto_leaves_out_resizing_for_a_fixed_size_vit(in_tmp, make_competition, write_config):
    from click.testing import CliRunner
    from test_submit import fabricate_run

    from comp.cli import main
    from comp.competition import load_competition

    root = make_competition(n_test=3)
    path = write_config(root, name="vit", model={"name": "timm:vit_tiny_patch16_224"},
                        data={"image_size": 224, "cache_dir": str(in_tmp / "cache")}, train={"device": "cpu"})
    cfg = load_config(path)
    fabricate_run(cfg, load_competition(cfg.data))
    result = CliRunner().invoke(main, ["submit", "--tta", "auto", "--config", str(path)])
    assert result.exit_code == 0, result.output  # was: "Input height (202) doesn't match model (224)"
    assert "d4" in result.output and "scale" not in result.output


def test_a_pretrained_timm_model_is_normalised_with_its_own_mean_and_std():
    from comp.config import ModelConfig
    from comp.models.factory import IMAGENET_MEAN, resolve_normalization

    vit = ModelConfig(name="timm:vit_tiny_patch16_224", pretrained="timm-cache")
    assert resolve_normalization(vit, None, None) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # was ImageNet's
    assert resolve_normalization(vit.model_copy(update={"pretrained": None}), None, None)[0] == IMAGENET_MEAN
    assert resolve_normalization(vit, (0.1, 0.2, 0.3), (1, 1, 1)) == ((0.1, 0.2, 0.3), (1, 1, 1))  # as set
    assert load_config(_demo_config()).augment.mean == (0.5, 0.5, 0.5)


def test_a_new_setting_at_its_neutral_value_keeps_earlier_runs_hashes():
    """augment.on_device arrived after runs were trained: at false those runs train exactly as before, so
    their config hash (checked by --resume, --full and the CV) must not change with the upgrade."""
    from comp.config import Config, with_values
    from comp.train.runner import training_hash

    assert training_hash(Config()) == "5ed1b67020b1349c"  # the default config's hash before the new key
    assert training_hash(with_values(Config(), {"augment.on_device": True}, "test")) != "5ed1b67020b1349c"
