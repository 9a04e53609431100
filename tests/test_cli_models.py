"""``comp models list`` and ``comp models check`` through click's CliRunner."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from comp.cli import main
from comp.models import list_models


def run(*args: str):
    return CliRunner().invoke(main, ["models", *args])


def test_list():
    result = run("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "params", "GMACs", "GFLOPs"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == list_models()
    assert rows["resnet50"][0] == "25557032"


def test_list_options():
    result = run("list", "--size", "32", "--channels", "1", "--classes", "7")
    assert result.exit_code == 0, result.output
    resnet18 = next(line for line in result.output.splitlines() if line.startswith("resnet18"))
    assert resnet18.split()[1] == "11173831"  # 1-channel stem and a 7-class head


def test_check_passes():
    # one thread: the CI machine may be shared, and oversubscribed threads make timings crawl
    result = run("check", "resnet18", "--size", "32", "--batch", "2", "--threads", "1", "--reps", "3")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("resnet18"))
    cells = row.split()
    assert cells[1] == cells[2] == "11689512"
    assert cells[3] == "yes" and cells[-1] == "PASS"
    assert float(cells[4]) < 1e-5


def test_check_unknown_name_exits_2():
    result = run("check", "resnet18", "resnet19")
    assert result.exit_code == 2
    assert "resnet19" in result.output and "did you mean resnet18" in result.output
    assert all(name in result.output for name in list_models())
    assert "PASS" not in result.output  # validated before any check runs


def test_check_needs_names():
    result = run("check")
    assert result.exit_code == 2
    assert "--all" in result.output


def test_help_does_not_import_torch():
    code = "import sys; from comp.cli import main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_check_failure_exits_1(monkeypatch):
    import comp.models.check as check

    bad = check.CheckResult("resnet18", 10, 10, True, True, max_abs_diff=0.5, time_ours=1.0, time_ref=1.0)
    monkeypatch.setattr(check, "check_models", lambda names, progress=None, **kwargs: [bad])
    result = run("check", "resnet18")
    assert result.exit_code == 1
    assert "FAIL" in result.output
