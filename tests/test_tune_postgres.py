"""Two ``comp tune`` processes sharing one study on a real PostgreSQL server (a private cluster in a temp dir).

Needs the server binaries (Debian: ``apt-get install -y postgresql``) and psycopg2; skipped with the
reason otherwise. As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from comp.cli import main
from comp.tune.study import create_storage

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    on_path = shutil.which("initdb")
    if found:
        return Path(found[-1]).parent
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    runuser = shutil.which("runuser")
    return [runuser, "-u", user, "--", *cmd] if runuser else ["su", user, "-s", "/bin/sh", "-c", " ".join(cmd)]


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"PostgreSQL: {what} failed: {tail[0]}")


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free local port; yields its URL and stops it afterwards."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (Debian: apt-get install -y postgresql)")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        user = "postgres"
    data = Path(tempfile.mkdtemp(prefix="comp-pg-"))
    if user is not None:
        shutil.chown(data, user=user)
    port = _free_port()
    pg_ctl = str(bindir / "pg_ctl")
    _run(_as_user(user, [str(bindir / "initdb"), "-D", str(data / "db"), "-U", "comp", "--auth=trust",
                         "--no-sync"]), "initdb")
    _run(_as_user(user, [pg_ctl, "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "-t", "60",
                         "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
         "pg_ctl start")
    try:
        yield f"postgresql://comp@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_user(user, [pg_ctl, "-D", str(data / "db"), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def project(make_competition, write_config, in_tmp):
    root = make_competition(counts={"a": 9, "b": 9, "c": 9})
    path = write_config(root, model={"name": "timm:test_resnet"},
                        train={"epochs": 2, "batch_size": 8, "lr": 0.01},
                        data={"cache_dir": str(in_tmp / "cache")}, tune={"trials": 4, "epochs": 1})
    result = CliRunner().invoke(main, ["folds", "make", "--config", str(path)])
    assert result.exit_code == 0, result.output
    return {"path": path, "dir": in_tmp}


def test_two_processes_share_one_postgres_study(project, postgres_url):
    """Two ``comp tune`` processes (as on two machines) against one database: exactly 4 trials in all."""
    cmd = [sys.executable, "-m", "comp", "tune", "--config", str(project["path"]), "--storage", postgres_url,
           "--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=project["dir"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
    study = optuna.load_study(study_name="exp", storage=create_storage(postgres_url))
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert all(t.state != TrialState.FAIL or t.user_attrs.get("surplus") for t in trials)
    assert len({t.user_attrs["comp_worker"]["pid"] for t in trials if "comp_worker" in t.user_attrs}) == 2
    assert (project["dir"] / "runs/exp/tune/best_params.yaml").is_file()
