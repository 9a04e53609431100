"""The Optuna study: storage, sampler, pruner, the trial budget and recovery of trials whose worker died.

The budget counts finished trials (COMPLETE + PRUNED) across reruns and workers. Trial numbers are
handed out atomically by the storage, so a trial is *surplus* when the trials numbered before it
(finished, running or waiting) already fill the budget: it is failed at once, marked ``surplus``,
and the study ends with exactly the requested count however many workers raced for the last slot.

A trial whose process was killed stays RUNNING in the storage. On this host its worker's pid is
checked (stale as soon as the process is gone); RDB storages also run Optuna's heartbeat for
workers on other machines. A stale trial is failed and re-queued once with the same parameters.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import socket
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from comp.errors import TuneError

WORKER_ATTR = "comp_worker"
SURPLUS_ATTR = "surplus"
KEY_ATTR = "comp_study_key"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMS = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
MAX_RETRY = 3
HEARTBEAT_S, GRACE_S = 30, 120  # RDB heartbeat; also how long a RUNNING trial may go without a worker mark


def default_storage(tune_dir: Path) -> str:
    """The journal file in ``runs/<exp>/tune/`` (safe for several processes writing at once)."""
    return str(tune_dir / "study.journal")


def is_rdb_url(url: str) -> bool:
    """Whether ``url`` is a database URL (it has a scheme) rather than a journal file path."""
    return "://" in url


def create_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: an RDB URL (``sqlite:///``, ``postgresql://``) or a journal file path.

    Raises:
        TuneError: The database cannot be reached or the URL is malformed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if not is_rdb_url(url):
        from optuna.storages.journal import JournalFileBackend

        if Path(url).is_dir():
            raise TuneError(f"--storage {url}: is a folder; give a journal file (e.g. {Path(url) / 'study.journal'}) "
                            f"or a database URL (postgresql://...)")
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=FlockLock(url)))
    url = _with_installed_driver(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S, heartbeat_stale_trial_callback=retry)
        except Exception as exc:  # sqlalchemy / driver errors: one line naming the URL
            # Workers starting together on a new database race to create its tables: the loser retries.
            error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            time.sleep(1 + attempt)
    raise TuneError(f"--storage {redact_url(url)}: cannot open the database ({error})")


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` through psycopg2 when psycopg (3), SQLAlchemy 2.1's default driver, is not installed."""
    if not url.startswith("postgresql://") or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        raise TuneError("--storage postgresql://...: no PostgreSQL driver; pip install psycopg2-binary "
                        "(or: pip install -e '.[postgres]')")
    return "postgresql+psycopg2://" + url[len("postgresql://"):]


class FlockLock:
    """The journal file's write lock as an ``flock`` that the kernel drops when its process dies.

    Optuna's own file locks are files that a killed process leaves behind, blocking every other
    worker for their 30 s grace period (or for good when the journal path is relative).
    """

    def __init__(self, journal_path: str):
        self.path = journal_path + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock, waiting for it; returns True."""
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock, if held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def redact_url(url: str) -> str:
    """The URL without its password (printed in messages)."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("://")[-1]:
        return url
    scheme, _, userpass = head.partition("://")
    return f"{scheme}://{userpass.split(':')[0]}:***@{tail}"


class TrialSeededSampler(BaseSampler):
    """TPE whose random state is set from ``(seed, trial number)`` at the start of each trial.

    One worker with one seed repeats its trials exactly; workers sharing a study never draw alike,
    because no two trials share a number.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._inner = TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Reseed the TPE sampler from ``(seed, trial number)``, then start the trial."""
        digest = hashlib.blake2b(repr((self.seed, trial.number)).encode(), digest_size=4).digest()
        self._inner = TPESampler(seed=int.from_bytes(digest, "little"))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The inner TPE sampler's relative search space."""
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Sample with the inner TPE sampler."""
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """Sample one parameter with the inner TPE sampler."""
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Let the inner TPE sampler finish the trial."""
        self._inner.after_trial(study, trial, state, values)


def create_pruner(name: str, steps: int, n_folds: int) -> optuna.pruners.BasePruner:
    """The pruner for ``tune.pruner``.

    Args:
        name: ``median``, ``hyperband``, ``wilcoxon`` or ``none``.
        steps: Reported steps per trial (epochs x folds; the folds for ``wilcoxon``).
        n_folds: Scored folds (``wilcoxon`` compares per-fold scores, so it needs several).
    """
    if name == "median":  # the first epoch is too noisy to judge on
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(steps, 1), reduction_factor=3)
    if name == "wilcoxon":
        if n_folds < 2:
            raise TuneError("tune.pruner=wilcoxon compares per-fold scores and needs several tune.folds "
                            "(e.g. --set tune.folds=[0,1,2,3,4]); with one fold use median or hyperband")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


@dataclass
class StudySpec:
    """What a study is and where it lives."""

    name: str
    storage: str
    direction: str  # "maximize" | "minimize"
    key: dict[str, Any]  # what its trials were made from; a rerun must match
    seed: int
    pruner: str
    steps: int
    n_folds: int


def open_study(spec: StudySpec) -> optuna.Study:
    """Create the study, or load it and check it was made from the same settings.

    Raises:
        TuneError: The stored study was made from another config, folds file, space or metric.
    """
    # Optuna's own INFO/WARNING lines would repeat what the workers log about each trial (and warn
    # about every surplus trial); real errors still propagate.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = create_storage(spec.storage)

    def create() -> optuna.Study:
        return optuna.create_study(
            study_name=spec.name, storage=storage, direction=spec.direction, load_if_exists=True,
            sampler=TrialSeededSampler(spec.seed), pruner=create_pruner(spec.pruner, spec.steps, spec.n_folds),
        )

    study = create()
    stored = study.user_attrs.get(KEY_ATTR)
    differs = stored != spec.key or study.direction.name.lower() != spec.direction
    if stored is not None and differs and not study.get_trials(deepcopy=False):
        # A run that failed before its first trial left only the settings behind: the fixed rerun starts anew.
        optuna.delete_study(study_name=spec.name, storage=storage)
        study, stored = create(), None
    if stored is None:
        study.set_user_attr(KEY_ATTR, spec.key)
    elif stored != spec.key:
        changed = ", ".join(k for k in spec.key if stored.get(k) != spec.key[k])
        raise TuneError(f"study {spec.name!r} in {redact_url(spec.storage)} was made with other settings "
                        f"({changed}); its trials would not compare: pass --study-name NEW, or delete the "
                        f"study to start over")
    if study.direction.name.lower() != spec.direction:
        raise TuneError(f"study {spec.name!r} is {study.direction.name.lower()}d, the metric needs {spec.direction}")
    return study


# -- the trial budget -------------------------------------------------------------------------------
def count_states(study: optuna.Study, states: tuple[TrialState, ...] = FINISHED) -> int:
    """The number of the study's trials in ``states``."""
    return len(study.get_trials(deepcopy=False, states=states))


def is_surplus(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether the trials numbered below ``number`` that finished, run or wait already fill ``budget``."""
    trials = study.get_trials(deepcopy=False, states=CLAIMS)
    return sum(t.number < number for t in trials) >= budget


def budget_reached(study: optuna.Study, budget: int) -> bool:
    """Finished plus running trials fill the budget (waiting ones still need a worker)."""
    return count_states(study, (*FINISHED, TrialState.RUNNING)) >= budget


# -- workers and stale trials -----------------------------------------------------------------------
def worker_mark(number: int) -> dict[str, Any]:
    """Who runs trial ``number``: host, pid and the process start time (pids are reused)."""
    pid = os.getpid()
    return {"trial": number, "host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _process_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, starttime; after the command name in parentheses


def _alive(mark: dict[str, Any]) -> bool:
    try:
        os.kill(mark["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(mark["pid"])
    return start is None or mark.get("start") is None or start == mark["start"]


def is_stale(trial: optuna.trial.FrozenTrial, host: str, now: float) -> bool:
    """A RUNNING trial whose worker on this host is gone, or that never got a worker mark within GRACE_S."""
    mark = trial.user_attrs.get(WORKER_ATTR)
    if not mark or mark.get("trial") != trial.number:  # a re-queued trial carries its original's mark
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > GRACE_S
    return mark["host"] == host and not _alive(mark)


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail the stale RUNNING trials and re-queue each with the same parameters.

    Several workers may look at once: the storage lets only one of them fail a given trial, and
    only that one re-queues it.

    Returns:
        The numbers of the trials found stale on this host (those of other machines, found by the
        RDB heartbeat, are re-queued but not listed).
    """
    with warnings.catch_warnings():  # RDB storages: trials whose heartbeat stopped, on any machine
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # re-queued by the storage's retry callback
    host, now, recovered = socket.gethostname(), time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, host, now):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, UpdateFinishedTrialError):
            continue  # another worker got there first
        requeue(study, trial)
        recovered.append(trial.number)
    return recovered


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a WAITING copy of ``trial`` (same parameters), unless it was retried MAX_RETRY times already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)
