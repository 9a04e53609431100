"""The fold loop on tiny synthetic data: outputs, determinism, resume after SIGKILL, faults, full fit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from comp.cli import main
from comp.config import load_config
from comp.errors import CheckpointError, FoldsError, TrainError
from comp.runfolder.checkpoint import load_checkpoint
from comp.train.runner import run_training


@pytest.fixture
def project(tiny_project):
    """A tiny competition, its config (3 folds, 2 epochs) and folds file, in an empty project folder."""
    return tiny_project(**{"augment": {"preset": "light"}})


def quiet(_line: str) -> None:
    pass


def history(run: Path, fold: int = 0) -> pd.DataFrame:
    return pd.read_csv(run / f"fold{fold}" / "history.csv").drop(columns=["seconds", "images_per_s"])


def test_all_folds_write_every_artifact(project):
    cfg = load_config(project["path"])
    summary = run_training(cfg, log=quiet)
    run = project["dir"] / "runs/exp"
    for f in range(3):
        for name in ("best.pt", "last.pt", "history.csv", "metrics.json", "oof.csv"):
            assert (run / f"fold{f}" / name).is_file(), name
        metrics = json.loads((run / f"fold{f}/metrics.json").read_text())
        assert metrics["epochs_run"] == 2 and metrics["monitor"] == "accuracy" and metrics["finished"]
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert list(oof.columns) == ["id", "label", "fold", "prob_a", "prob_b", "prob_c"]
    assert list(oof["id"]) == list(pd.read_csv(project["root"] / "train.csv")["id"])
    assert np.allclose(oof.filter(like="prob_").sum(axis=1), 1.0, atol=1e-4)
    cv = json.loads((run / "cv.json").read_text())
    assert set(cv["per_fold"]) == {"0", "1", "2"} and cv["complete"]
    assert cv["mean"]["accuracy"] == pytest.approx(np.mean([v["accuracy"] for v in cv["per_fold"].values()]))
    assert summary.cv.oof["accuracy"] == cv["oof"]["accuracy"]
    assert (run / "config.yaml").is_file()


def test_checkpoints_load_weights_only_with_metadata(project):
    run_training(load_config(project["path"], ["train.epochs=1"]), folds=[0], log=quiet)
    last = load_checkpoint(project["dir"] / "runs/exp/fold0/last.pt")
    best = load_checkpoint(project["dir"] / "runs/exp/fold0/best.pt")
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "classes", "config_hash", "folds_hash"):
        assert key in last, key
    assert last["classes"] == ["a", "b", "c"] and last["epoch"] == 1
    assert "optimizer" not in best  # best.pt is for prediction: weights and metadata only


def test_same_seed_same_metrics_and_oof(project):
    cfg = load_config(project["path"])
    run_training(cfg, folds=[0], log=quiet)
    first = history(project["dir"] / "runs/exp")
    oof_first = (project["dir"] / "runs/exp/fold0/oof.csv").read_bytes()
    run_training(cfg, folds=[0], log=quiet)
    pd.testing.assert_frame_equal(first, history(project["dir"] / "runs/exp"))
    assert (project["dir"] / "runs/exp/fold0/oof.csv").read_bytes() == oof_first


def test_resume_skips_finished_fold(project):
    cfg = load_config(project["path"])
    run_training(cfg, folds=[0], log=quiet)
    lines = []
    run_training(cfg, folds=[0], resume=True, log=lines.append)
    assert any("already finished" in line for line in lines)
    assert not any("epoch" in line and "/2" in line for line in lines)


def test_resume_after_sigkill_matches_uninterrupted(project):
    """Kill the CLI with SIGKILL during epoch 2 of 3, resume, and compare with an uninterrupted run."""
    path = project["config"](train={"epochs": 3, "batch_size": 4})
    cfg = load_config(path)
    run_training(cfg, folds=[0], log=quiet)
    reference = history(project["dir"] / "runs/exp")
    reference_oof = (project["dir"] / "runs/exp/fold0/oof.csv").read_bytes()

    shutil.rmtree(project["dir"] / "runs/exp/fold0")
    # The real CLI in a child process, each step slowed so that the kill lands mid-epoch.
    slow_cli = (
        "import sys, time, comp.train.engine as e\n"
        "step = e._optimizer_step\n"
        "e._optimizer_step = lambda *a: (time.sleep(0.3), step(*a))\n"
        "from comp.cli import main\n"
        "main(['train', '--config', sys.argv[1], '--fold', '0', '--no-report'])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same float sums as this process
    proc = subprocess.Popen([sys.executable, "-c", slow_cli, str(path)], cwd=project["dir"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = project["dir"] / "runs/exp/.staging/fold0/last.pt"  # a run trains aside until it is complete
    deadline = time.time() + 120
    while not (last.is_file() and load_checkpoint(last)["epoch"] >= 1):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.1)
    time.sleep(0.5)  # inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(last)["epoch"] == 1  # the kill interrupted epoch 2
    assert not (project["dir"] / "runs/exp/.staging/fold0/history.csv").exists()
    assert not (project["dir"] / "runs/exp/fold0").exists()

    lines = []
    run_training(cfg, folds=[0], resume=True, log=lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    pd.testing.assert_frame_equal(reference, history(project["dir"] / "runs/exp"))
    assert (project["dir"] / "runs/exp/fold0/oof.csv").read_bytes() == reference_oof


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(project, monkeypatch):
    import comp.train.fold as fold_module

    real = fold_module.create_criterion
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        criterion = real(*args, **kwargs)

        def forward(logits, labels):
            calls["n"] += 1
            loss = torch.nn.functional.cross_entropy(logits, labels)
            # 18 training rows, batch 8, drop_last: 2 steps per epoch (validation uses the plain log loss)
            return loss * float("nan") if calls["n"] == 4 else loss

        criterion.forward = forward
        return criterion

    monkeypatch.setattr(fold_module, "create_criterion", poisoned)
    with pytest.raises(TrainError, match=r"fold 0: loss is nan at epoch 2, step 2;.*last good checkpoint is kept"):
        run_training(load_config(project["path"], ["train.batch_size=8"]), folds=[0], log=quiet)
    last = load_checkpoint(project["dir"] / "runs/exp/.staging/fold0/last.pt")  # --resume continues from it
    assert not (project["dir"] / "runs/exp/fold0").exists()  # nothing half-done takes a fold's place
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_nan_loss_through_cli_is_one_line(project):
    result = CliRunner().invoke(main, ["train", "--config", str(project["path"]), "--fold", "0",
                                       "--set", "train.lr=1e30", "--set", "train.optimizer=sgd", "--no-report"])
    assert result.exit_code == 2, result.output
    assert "error: fold 0: loss is" in result.output and "Traceback" not in result.output


def test_resume_refuses_other_folds_file(project):
    cfg = load_config(project["path"], ["train.epochs=1"])
    run_training(cfg, folds=[0], log=quiet)
    result = CliRunner().invoke(main, ["folds", "make", "--config", str(project["path"]), "--seed", "5", "--force"])
    assert result.exit_code == 0
    with pytest.raises(CheckpointError, match="trained on another folds file"):
        run_training(cfg, folds=[0], resume=True, log=quiet)


def test_resume_refuses_other_config(project):
    run_training(load_config(project["path"], ["train.epochs=1"]), folds=[0], log=quiet)
    with pytest.raises(CheckpointError, match="trained with another config"):
        run_training(load_config(project["path"], ["train.epochs=1", "train.lr=0.5"]), folds=[0], resume=True,
                     log=quiet)


def test_folds_file_from_other_k_or_train_csv_refused(project):
    with pytest.raises(FoldsError, match="made with k=3 but folds.k=4"):
        run_training(load_config(project["path"], ["folds.k=4"]), log=quiet)
    df = pd.read_csv(project["root"] / "train.csv")
    df.iloc[:-1].to_csv(project["root"] / "train.csv", index=False)
    with pytest.raises(FoldsError, match="made from another train.csv"):
        run_training(load_config(project["path"]), log=quiet)


def test_bad_fold_argument(project):
    with pytest.raises(TrainError, match="fold 7 does not exist; the folds file has k=3"):
        run_training(load_config(project["path"]), folds=[7], log=quiet)


def test_full_fit_uses_mean_best_epoch(project):
    cfg = load_config(project["path"], ["train.epochs=2", "train.monitor=loss"])
    summary = run_training(cfg, full=True, log=quiet)
    best = [json.loads((project["dir"] / f"runs/exp/fold{f}/metrics.json").read_text())["best_epoch"]
            for f in range(3)]
    full = pd.read_csv(project["dir"] / "runs/exp/full/history.csv")
    assert len(full) == max(1, round(np.mean(best)))
    assert summary.results[-1].fold == "full"
    assert load_checkpoint(project["dir"] / "runs/exp/full/best.pt")["fold"] == "full"


def test_early_stopping_and_ema(project):
    cfg = load_config(project["path"], ["train.epochs=6", "train.early_stopping=1", "train.ema=0.9",
                                        "train.monitor=accuracy", "train.lr=1e-12"])
    summary = run_training(cfg, folds=[0], log=quiet)
    assert len(summary.results[0].history) < 6  # lr ~0 with EMA: no progress, stops after one bad epoch


@pytest.mark.parametrize("extra", [
    ["train.optimizer=sgd", "train.scheduler=plateau", "train.class_weights=balanced"],
    ["train.optimizer=adam", "train.scheduler=onecycle", "train.sampler_strength=1.0", "train.grad_clip=1.0"],
    ["train.scheduler=none", "train.label_smoothing=0.1", "train.class_weights=[1.0,2.0,1.0]",
     "augment.preset=medium", "data.channels=1"],
])
def test_loop_options_run(project, extra):
    summary = run_training(load_config(project["path"], ["train.epochs=1", *extra]), folds=[0], log=quiet)
    assert summary.results[0].history[0]["train_loss"] > 0


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(project):
    path = project["config"](train={"epochs": 1, "batch_size": 8, "device": "cpu"})  # CPU even where a GPU is
    run_training(load_config(path, ["name=single"]), folds=[0], log=quiet)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "comp", "train", "--config", str(path), "--fold", "0", "--no-report", "--set", "name=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=project["dir"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ddp = project["dir"] / "runs/ddp/fold0"
    single = project["dir"] / "runs/single/fold0"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert len(pd.read_csv(ddp / "oof.csv")) == len(pd.read_csv(single / "oof.csv"))
    assert yaml.safe_load((project["dir"] / "runs/ddp/config.yaml").read_text())["name"] == "ddp"
    assert proc.stdout.count("fold 0 epoch") == 1  # only rank 0 logs


def test_more_torchrun_processes_than_gpus_is_one_clear_error(monkeypatch):
    """Seen on a 1-GPU machine: rank 1 of ``torchrun --nproc-per-node 2`` asked for cuda:1 and crashed in CUDA."""
    from comp.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    for setting in ("auto", "cuda"):
        with pytest.raises(TrainError, match=r"LOCAL_RANK 1 has no GPU of its own \(this machine has 1\); start "
                                             r"torchrun with --nproc-per-node 1, or set train.device=cpu"):
            resolve_device(setting, local_rank=1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an explicit GPU is kept
    with pytest.raises(TrainError, match=r"train.device=cuda:2: this machine has 1 GPU\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:2")


def test_workers_and_the_next_epoch_started_ahead_change_nothing(project, monkeypatch):
    """With workers, epoch N+1 starts loading before epoch N validates; the run must equal one with none."""
    import comp.train.fold as fold_module

    def with_workers(n: int):
        return cfg.model_copy(update={"data": cfg.data.model_copy(update={"num_workers": n})})

    cfg = load_config(project["path"], ["train.epochs=3"])
    run_training(with_workers(0), folds=[0], log=quiet)
    plain = history(project["dir"] / "runs/exp")
    plain_oof = (project["dir"] / "runs/exp/fold0/oof.csv").read_bytes()
    started, real = [], fold_module.start_epoch
    monkeypatch.setattr(fold_module, "start_epoch", lambda loader, epoch: started.append(epoch) or real(loader, epoch))
    run_training(with_workers(2), folds=[0], log=quiet)
    assert started == [1, 2]  # epochs 2 and 3 were started before the validation of 1 and 2
    pd.testing.assert_frame_equal(plain, history(project["dir"] / "runs/exp"))
    assert (project["dir"] / "runs/exp/fold0/oof.csv").read_bytes() == plain_oof
