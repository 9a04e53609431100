"""``comp tune`` on tiny data: the space grammar, the study's files, the exact trial budget, kills and workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.trial import TrialState

from comp.cli import main
from comp.config import Config, apply_params, load_config
from comp.data.balance import class_weights
from comp.errors import ConfigError
from comp.tune import TuneOptions, run_tune
from comp.tune.space import Dimension, apply_values, default_space, parse_space, suggest
from comp.tune.study import (
    WORKER_ATTR,
    TuneError,
    create_storage,
    is_surplus,
    recover_stale,
    worker_mark,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture
def project(tiny_project):
    """A tiny 3-class competition, its config (1 tuning epoch on fold 0) and folds, in an empty project folder."""
    return tiny_project(**{"tune": {"trials": 2, "epochs": 1}})


def quiet(_line: str) -> None:
    pass


def load_study(project, name: str = "exp", storage: str | None = None) -> optuna.Study:
    url = storage or str(project["dir"] / "runs/exp/tune/study.journal")
    return optuna.load_study(study_name=name, storage=create_storage(url))


def with_space(space: dict, classes: list[str] | None = None, **train) -> list[Dimension]:
    cfg = Config.model_validate({"train": train, "tune": {"space": space}})
    return parse_space(cfg, classes or ["a", "b", "c"])


def ask(dims: list[Dimension], classes: list[str], seed: int = 0):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    return trial, suggest(trial, dims, classes)


# -- the space --------------------------------------------------------------------------------------
def test_space_grammar_ranges_choices_and_field_types():
    dims = with_space({
        "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "train.batch_size": {"low": 8, "high": 32, "step": 8},
        "train.optimizer": {"choices": ["adamw", "sgd"]},
        "model": {"dropout": {"low": 0, "high": 0.5}},  # nested sections; ints in YAML, float field
    })
    kinds = {d.key: d.kind for d in dims}
    assert kinds == {"train.lr": "float", "train.batch_size": "int", "train.optimizer": "choice",
                     "model.dropout": "float"}
    for seed in range(5):
        _, values = ask(dims, ["a", "b", "c"], seed)
        assert 1e-4 <= values["train.lr"] <= 1e-2 and values["train.batch_size"] in (8, 16, 24, 32)
        assert isinstance(values["model.dropout"], float) and values["train.optimizer"] in ("adamw", "sgd")
        cfg = apply_values(Config(), values)
        assert cfg.train.batch_size == values["train.batch_size"] and cfg.model.dropout == values["model.dropout"]


@pytest.mark.parametrize("space, message", [
    ({"train.lrr": {"low": 1e-4, "high": 1e-2}}, r"tune.space: train.lrr: unknown key; did you mean train.lr\?"),
    ({"trian.lr": {"low": 1e-4, "high": 1e-2}}, r"trian: unknown key; did you mean train\?"),
    ({"train.lr": {"lo": 1e-4, "high": 1e-2}}, r"tune.space.train.lr: unknown field 'lo'; did you mean low\?"),
    ({"train.lr": {"low": 1e-2, "high": 1e-4}}, r"low=0.01 must be below high=0.0001"),
    ({"train.lr": {"low": 0, "high": 1, "log": True}}, r"a log range needs low > 0"),
    ({"train.momentum": {"low": 0.5, "high": 1.5}}, r"tune.space: train.momentum: 1.5 is not valid"),
    ({"train.optimizer": {"choices": ["adamw", "lion"]}}, r"train.optimizer: 'lion' is not valid"),
    ({"train.epochs": {"low": 1, "high": 9}}, r"cannot be searched \(set tune.epochs instead\)"),
    ({"train.batch_size": {"low": 8.5, "high": 32}}, r"integer setting"),
    ({"train.lr": {"power": {"low": 0, "high": 1}}}, r"per_class and power apply only to train.class_weights"),
])
def test_space_errors_name_the_key_and_the_fix(space, message):
    with pytest.raises(ConfigError, match=message):
        with_space(space)


@pytest.mark.parametrize("n_classes", [3, 100])
def test_class_weight_space_per_class_and_power(n_classes):
    classes = [f"c{i}" for i in range(n_classes)]
    labels = np.arange(5 * n_classes) % n_classes
    per_class = with_space({"train.class_weights": {"per_class": {"low": 0.5, "high": 3.0}}}, classes)
    trial, values = ask(per_class, classes)
    assert len(trial.params) == n_classes and list(trial.params)[0] == "train.class_weights[c0]"
    assert len(values["train.class_weights"]) == n_classes
    assert class_weights(labels, n_classes, values["train.class_weights"]).shape == (n_classes,)
    power = with_space({"train.class_weights": {"power": {"low": 0.0, "high": 1.0}}}, classes)
    trial, values = ask(power, classes)
    assert list(trial.params) == ["train.class_weights"] and 0 <= values["train.class_weights"] <= 1
    weights = class_weights(labels, n_classes, values["train.class_weights"])
    assert weights.shape == (n_classes,) and apply_values(Config(), values).train.class_weights == pytest.approx(
        values["train.class_weights"])


def test_default_space_centres_on_the_config():
    cfg = Config.model_validate({"train": {"lr": 0.003, "weight_decay": 0.0005}})
    space = default_space(cfg)
    assert space["train.lr"] == {"low": pytest.approx(3e-4), "high": pytest.approx(0.03), "log": True}
    assert space["train.weight_decay"]["log"] and space["train.class_weights"] == {"power": {"low": 0.0, "high": 1.0}}
    assert [d.kind for d in parse_space(cfg, ["a", "b"])] == ["float", "float", "power"]


# -- studies ----------------------------------------------------------------------------------------
def test_small_study_writes_loadable_best_params_and_resumes(project):
    result = CliRunner().invoke(main, ["tune", "--config", str(project["path"]), "--trials", "2"])
    assert result.exit_code == 0, result.output
    tune = project["dir"] / "runs/exp/tune"
    assert "best: trial" in result.output and "optuna-dashboard" in result.output
    summary = json.loads((tune / "summary.json").read_text())
    assert summary["trials_finished"] == 2 and summary["epochs_trained"] == 2
    best = summary["best"]
    cfg = apply_params(load_config(project["path"]), tune / "best_params.yaml")
    assert cfg.train.lr == pytest.approx(best["params"]["train.lr"])
    assert cfg.train.class_weights == pytest.approx(best["params"]["train.class_weights"])
    assert (tune / f"trials/{best['trial']}/fold0/history.csv").is_file()
    assert not list(tune.glob("trials/*/fold0/*.pt"))  # checkpoints deleted after each trial
    assert (tune / "optimization_history.png").stat().st_size > 1000 and (tune / "lr_vs_score.png").is_file()
    train = CliRunner().invoke(main, ["train", "--config", str(project["path"]), "--fold", "0", "--epochs", "1",
                                      "--params", str(tune / "best_params.yaml"), "--no-report"])
    assert train.exit_code == 0, train.output

    run_tune(load_config(project["path"]), TuneOptions(trials=3, plots=False), log=quiet)  # adds one trial
    study = load_study(project)
    assert [t.number for t in study.get_trials(states=FINISHED)] == [0, 1, 2]


def test_same_seed_same_trials(project):
    cfg = load_config(project["path"])
    for name in ("first", "second"):
        run_tune(cfg, TuneOptions(trials=2, study_name=name, plots=False), log=quiet)
    first, second = (load_study(project, name).trials for name in ("first", "second"))
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.value for t in first] == [t.value for t in second]


def test_pruned_trials_count_with_the_epochs_they_ran(project, monkeypatch):
    import comp.tune.study as study_module

    monkeypatch.setattr(study_module, "create_pruner", lambda *a: optuna.pruners.ThresholdPruner(upper=-1.0))
    cfg = load_config(project["path"], ["tune.epochs=3"])
    summary = run_tune(cfg, TuneOptions(trials=2), log=quiet)
    assert summary.summary["states"]["PRUNED"] == 2 and summary.summary["trials_finished"] == 2
    assert summary.summary["epochs_trained"] == 2 and summary.summary["epochs_without_pruning"] == 6
    assert summary.best_params is None and any("no complete trial" in s for s in summary.skipped_plots)


def test_steps_unique_per_fold_and_epoch(project):
    cfg = load_config(project["path"], ["tune.folds=[0,2]", "tune.epochs=2", "tune.pruner=none"])
    run_tune(cfg, TuneOptions(trials=1, plots=False), log=quiet)
    trial = load_study(project).trials[0]
    assert sorted(trial.intermediate_values) == [0, 1, 2, 3] and trial.user_attrs["epochs"] == 4
    assert trial.value == pytest.approx(np.mean(list(trial.user_attrs["fold_scores"].values())))


def test_wilcoxon_reports_per_fold_scores(project):
    cfg = load_config(project["path"], ["tune.folds=[0,1,2]", "tune.pruner=wilcoxon"])
    run_tune(cfg, TuneOptions(trials=1, plots=False), log=quiet)
    trial = load_study(project).trials[0]
    assert sorted(trial.intermediate_values) == [0, 1, 2]
    assert trial.intermediate_values == {int(k): v for k, v in trial.user_attrs["fold_scores"].items()}
    with pytest.raises(TuneError, match="wilcoxon compares per-fold scores"):
        run_tune(load_config(project["path"], ["tune.pruner=wilcoxon"]), TuneOptions(study_name="w1"), log=quiet)


def test_space_error_through_cli_is_one_line(project):
    path = project["config"](tune={"space": {"train.lrr": {"low": 1e-4, "high": 1e-2}}})
    result = CliRunner().invoke(main, ["tune", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "error: tune.space: train.lrr: unknown key; did you mean train.lr?" in result.output
    assert "Traceback" not in result.output and not (project["dir"] / "runs/exp/tune/study.journal").exists()


def test_rerun_with_other_settings_is_refused(project):
    run_tune(load_config(project["path"]), TuneOptions(trials=1, plots=False), log=quiet)
    result = CliRunner().invoke(main, ["tune", "--config", str(project["path"]), "--epochs", "3"])
    assert result.exit_code == 2 and "made with other settings (epochs)" in result.output
    assert "--study-name" in result.output and "Traceback" not in result.output


def test_sqlite_storage_url(project):
    url = f"sqlite:///{project['dir'] / 'tune.db'}"
    run_tune(load_config(project["path"]), TuneOptions(trials=1, storage=url, plots=False), log=quiet)
    assert len(load_study(project, storage=url).get_trials(states=FINISHED)) == 1


def test_plots_skip_importances_when_every_trial_scored_the_same(tmp_path, monkeypatch):
    """fANOVA raises on zero variance (seen on a GPU run where two trials tied): the tune must still finish."""
    from comp.tune.plots import write_plots

    study = optuna.create_study(direction="maximize")
    for _ in range(3):
        trial = study.ask()
        trial.suggest_float("train.lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("train.weight_decay", 1e-5, 1e-3, log=True)
        study.tell(trial, 0.6667)
    written, skipped = write_plots(study, tmp_path, "accuracy")
    assert {p.name for p in written} == {"optimization_history.png", "lr_vs_score.png"}
    assert skipped == ["param_importances.png: all 3 complete trials scored the same: nothing to attribute"]

    import comp.tune.plots as plots

    def broken(study, monitor):
        raise RuntimeError("Encountered zero total variance in all trees.")

    monkeypatch.setattr(plots, "_history", broken)
    written, skipped = write_plots(study, tmp_path, "accuracy")
    assert "optimization_history.png: could not be drawn (Encountered zero total variance in all trees.)" in skipped


# -- the budget and dead workers --------------------------------------------------------------------
def test_dead_workers_trial_is_failed_and_requeued_once(tmp_path):
    study = optuna.create_study(study_name="s", storage=create_storage(str(tmp_path / "s.journal")))
    trial = study.ask()
    trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr(WORKER_ATTR, {**worker_mark(trial.number), "pid": dead.pid})
    alive = study.ask()
    alive.set_user_attr(WORKER_ATTR, worker_mark(alive.number))  # this process: alive
    assert recover_stale(study) == [0]
    assert recover_stale(optuna.load_study(study_name="s", storage=create_storage(str(tmp_path / "s.journal")))) == []
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[2].params == study.trials[0].params and study.trials[2].system_attrs["failed_trial"] == 0


def test_surplus_when_lower_trials_fill_the_budget(tmp_path):
    study = optuna.create_study(storage=create_storage(str(tmp_path / "s.journal")))
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    running = study.ask()
    assert not is_surplus(study, running.number, 3)
    assert is_surplus(study, running.number + 1, 3)


@pytest.mark.slow
def test_killed_mid_trial_then_rerun_ends_with_exact_total(project):
    """SIGKILL ``comp tune`` while trial 1 is RUNNING; the rerun retries it and ends with exactly 3 trials."""
    path = project["config"](tune={"trials": 3, "epochs": 2, "pruner": "none"})
    slow_cli = (
        "import sys, time, comp.train.engine as e\n"
        "step = e._optimizer_step\n"
        "e._optimizer_step = lambda *a: (time.sleep(0.3), step(*a))\n"
        "from comp.cli import main\n"
        "main(['tune', '--config', sys.argv[1], '--no-plots'])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", slow_cli, str(path)], cwd=project["dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = project["dir"] / "runs/exp/tune/trials/1/fold0/last.pt"
    deadline = time.time() + 300
    while not last.is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = load_study(project).trials[1]
    assert killed.state == TrialState.RUNNING

    lines = []
    result = run_tune(load_config(path), TuneOptions(plots=False), log=lines.append)
    assert any("trial 1: its worker is gone" in line for line in lines)
    trials = load_study(project).trials
    assert [t.number for t in trials if t.state in FINISHED] == [0, 2, 3]
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [1]
    assert trials[2].system_attrs["failed_trial"] == 1 and trials[2].params == killed.params
    assert result.summary["retried"] == 1 and result.summary["trials_finished"] == 3
    assert yaml.safe_load((project["dir"] / "runs/exp/tune/best_params.yaml").read_text())


@pytest.mark.slow
def test_two_workers_end_with_exactly_the_requested_trials(project):
    result = CliRunner().invoke(main, ["tune", "--config", str(project["path"]), "--trials", "5",
                                       "--n-workers", "2", "--no-plots"])
    assert result.exit_code == 0, result.output
    trials = load_study(project).trials
    assert sum(t.state in FINISHED for t in trials) == 5
    assert all(t.state in FINISHED or t.user_attrs.get("surplus") for t in trials)
    assert len({t.number for t in trials}) == len(trials)



class _ExitingWorker:
    """A worker that ends between two of the parent's looks: its last messages reach the queue as it exits."""

    def __init__(self):
        self.exited = False

    def is_alive(self):
        self.exited = True  # it exits right now, flushing what it queued
        return False

    def join(self):
        self.exited = True


class _FlushedOnExit:
    def __init__(self, worker, messages):
        self.worker, self.messages = worker, list(messages)

    def get(self, timeout=None):
        from queue import Empty

        if not self.worker.exited or not self.messages:
            raise Empty
        return self.messages.pop(0)


def test_a_workers_lines_and_error_reach_the_parent_even_after_it_is_gone():
    """The worker queued its last line and its error and exited between the parent's empty read and its
    is_alive check: both are still logged and raised (the relay used to return with neither)."""
    from comp.tune.run import _relay

    lines, worker = [], _ExitingWorker()
    queue = _FlushedOnExit(worker, [("log", 3, "trial 0: complete"), ("error", 3, "tune.space: bad range")])
    assert _relay([worker], queue, lines.append) == {3: "tune.space: bad range"}
    assert lines == ["[worker 3] trial 0: complete"]
