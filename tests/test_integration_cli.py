"""The parts wired together, through the real `mlbook` executable in subprocesses.

`mlbook run` in a git project records before/after commits on hidden refs, a
journal step, and `mlbook diff` shows a change to shared code between two runs.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlbook import __version__ as mlbook_version

MLBOOK = str(Path(sys.executable).parent / "mlbook")

SCRIPT = """import mlbook
from common.helpers import scale

exp = mlbook.Experiment(base={"k": 2}, versions={"small": {}, "big": {"k": 5}})


@exp.train
def train(run):
    for step in run.iterate(range(3)):
        run.log(step=step, loss=1.0 / (step + 1))
    (run.dir / "result.txt").write_text(f"{scale(run.params.k)}\\n")
    return {"acc": scale(run.params.k) / 100}
"""


def mlbook(cwd: Path, *args: str, expect: int = 0) -> str:
    done = subprocess.run([MLBOOK, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_run_records_provenance_and_diff_shows_shared_code_change(tmp_path: Path) -> None:
    mlbook(tmp_path, "init", "proj")
    root = tmp_path / "proj"
    mlbook(root, "new", "E001", "scaled values")
    (script,) = (root / "Models").glob("E001_*.py")
    script.write_text(SCRIPT)
    helper = root / "Models" / "common" / "helpers.py"
    helper.write_text("def scale(k):\n    return k * 3\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    head = git(root, "rev-parse", "HEAD")

    mlbook(root, "run", "E001", "--version", "small")
    assert git(root, "rev-parse", "HEAD") == head
    assert git(root, "status", "--porcelain") == " M EXPERIMENT_LOG.md\n"
    (first,) = json.loads(mlbook(root, "runs", "--format", "json"))
    refs = git(root, "for-each-ref", "--format=%(refname)", f"refs/mlbook/runs/{first['id']}")
    assert refs.split() == [
        f"refs/mlbook/runs/{first['id']}/after",
        f"refs/mlbook/runs/{first['id']}/before",
    ]
    after_files = git(
        root, "show", "--name-only", "--format=", f"refs/mlbook/runs/{first['id']}/after"
    )
    assert "result.txt" in after_files
    shown = json.loads(mlbook(root, "show", first["id"], "--format", "json"))
    assert shown["python"] == platform.python_version()
    assert shown["packages"]["mlbook"] == mlbook_version
    assert [f["path"] for f in shown["files"]] == [
        script.relative_to(root).as_posix(),
        "Models/common/__init__.py",
        "Models/common/helpers.py",
    ]
    journal = (root / "EXPERIMENT_LOG.md").read_text()
    assert f"1. [x] small — run {first['id']} · acc 0.06" in journal

    helper.write_text("def scale(k):\n    return k * 4\n")
    mlbook(root, "run", "E001", "--version", "small")
    runs = json.loads(mlbook(root, "runs", "--format", "json"))
    second = next(r for r in runs if r["id"] != first["id"])
    out = mlbook(root, "diff", first["id"], second["id"], "--no-color")
    assert "Models/common/helpers.py" in out
    assert "-    return k * 3" in out and "+    return k * 4" in out
    assert git(root, "rev-parse", "HEAD") == head


def test_branch_mode_refuses_to_run_during_a_merge(tmp_path: Path) -> None:
    mlbook(tmp_path, "init", "proj")
    root = tmp_path / "proj"
    config = root / "mlbook.toml"
    config.write_text(config.read_text().replace('commits = "refs"', 'commits = "branch"'))
    mlbook(root, "new", "E001", "merge test")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    (root / ".git" / "MERGE_HEAD").write_text(git(root, "rev-parse", "HEAD"))
    done = subprocess.run(
        [MLBOOK, "run", "E001"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot commit on the branch: ")
    assert "in the middle of a merge; finish or abort it first" in done.stderr
    assert json.loads(mlbook(root, "runs", "--format", "json")) == []
    (root / ".git" / "MERGE_HEAD").unlink()
    mlbook(root, "run", "E001", "--mode", "test")  # test mode never commits: not refused


def test_a_failing_side_channel_warns_in_one_line_and_the_run_goes_on(tmp_path: Path) -> None:
    mlbook(tmp_path, "init", "proj")
    root = tmp_path / "proj"
    mlbook(root, "new", "E001", "broken journal")
    journal = root / "EXPERIMENT_LOG.md"
    head, _, tail = journal.read_text().rpartition("<!-- /mlbook:steps -->")
    journal.write_text(head + tail)  # the entry's closing marker, broken by hand
    done = subprocess.run(
        [MLBOOK, "run", "E001", "-q"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    # once when the runner settles the journal, then before and after each of two versions;
    # the journal is a side channel: the runs still get their before/after commits
    kinds = [re.sub(r"^warning: (run \S+: )?", "", w).split(":")[0] for w in warnings]
    assert kinds == ["journal"] + ["journal step not written"] * 4
    assert all("EXPERIMENT_LOG.md:" in w and "is never closed" in w for w in warnings)
    assert "Traceback" not in done.stderr and "UserWarning" not in done.stderr
    assert {r["status"] for r in json.loads(mlbook(root, "runs", "--format", "json"))} == {
        "completed"
    }
    refs = subprocess.run(
        ["git", "for-each-ref", "refs/mlbook/runs"], cwd=root, capture_output=True, text=True
    )
    assert len(refs.stdout.splitlines()) == 4  # before and after of both versions


SLOW = """import time

import mlbook

exp = mlbook.Experiment(versions={"slow": {}})


@exp.train
def train(run):
    for step in run.iterate(range(600)):
        run.log(step=step, loss=1.0)
        run.flush()
        time.sleep(0.05)
"""


@pytest.mark.slow
def test_a_runner_killed_mid_run_leaves_the_journal_step_crashed(tmp_path: Path) -> None:
    import signal
    import time

    mlbook(tmp_path, "init", "proj")
    root = tmp_path / "proj"
    mlbook(root, "new", "E001", "killed")
    (script,) = (root / "Models").glob("E001_*.py")
    script.write_text(SLOW)
    runner = subprocess.Popen(
        [MLBOOK, "run", "E001", "-q"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while "· running ·" not in (root / "EXPERIMENT_LOG.md").read_text():
            assert time.monotonic() < deadline and runner.poll() is None
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    out = mlbook(root, "log", "E001")
    (run,) = json.loads(mlbook(root, "runs", "--format", "json"))
    assert run["status"] == "crashed"
    journal = (root / "EXPERIMENT_LOG.md").read_text()
    assert f"1. [ ] slow — run {run['id']} · crashed ·" in journal
    assert "· running ·" not in journal
    assert "crashed" in out
