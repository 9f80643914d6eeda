"""The experiment commands: new, ls, run, runs, show (CliRunner and real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.project import Project

DEMO = """
    import mlbook

    exp = mlbook.Experiment(
        base={"epochs": 4},
        versions={"small": {"w": 1}, "broken": {"w": 2}, "large": {"w": 3}},
        title="demo",
    )

    @exp.train
    def train(run):
        for epoch in run.iterate(range(run.params.epochs)):
            run.log(step=epoch, loss=1.0 / (epoch + 1))
        if run.version == "broken":
            raise RuntimeError("this version is broken")
        return {"acc": 0.5 + run.params.w / 10}
"""


@pytest.fixture
def demo(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    (project.models_dir / "E001_demo.py").write_text(textwrap.dedent(DEMO), encoding="utf-8")
    monkeypatch.chdir(project.root)
    return project


def mlbook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlbook", *args], capture_output=True, text=True, timeout=60
    )


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def on_a_terminal(*args: str) -> str:
    """The output as a terminal gets it: rich's TTY_COMPATIBLE switch, 200 columns."""
    env = {"TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def rich_headers(out: str, title: str | None = None) -> list[str]:
    """The header cells of the rich table (after ``title``): the first line with ┃."""
    lines = out.splitlines()
    if title is not None:
        lines = lines[lines.index(title) :]
    header = next(line for line in lines if "┃" in line)
    return [cell.strip() for cell in header.split("┃") if cell.strip()]


def test_new_writes_a_runnable_script(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project.root)
    code, out = invoke("new", "E013", "wider CNN")
    assert code == 0, out
    assert "created  Models/E013_wider_cnn.py" in out
    assert '"""E013: wider CNN' in (project.models_dir / "E013_wider_cnn.py").read_text()
    code, out = invoke("new", "E013", "again")
    assert code == 1
    assert "error: experiment E013 exists: Models/E013_wider_cnn.py; pick another ID" in out
    code, out = invoke("new", "13", "bad")
    assert code == 1 and "does not match [experiments] id_pattern" in out
    done = mlbook("run", "E013", "--mode", "test")
    assert done.returncode == 0, done.stderr
    assert "2 run(s): 2 completed (test mode: nothing recorded)" in done.stdout


def test_ls(demo: Project) -> None:
    code, out = invoke("ls")
    assert code == 0
    assert out.splitlines()[1].split() == [
        "E001",
        "Models/E001_demo.py",
        "small,",
        "broken,",
        "large",
        "train",
    ]
    code, out = invoke("ls", "--format", "json")
    (entry,) = json.loads(out)
    assert entry["versions"]["large"] == {"epochs": 4, "w": 3}


def test_the_tour(demo: Project) -> None:
    """Test mode in seconds, then a real run: two completed, one failed with its traceback."""
    test = mlbook("run", "E001", "--mode", "test")
    assert test.returncode == 1
    assert "3 run(s): 2 completed, 1 failed (test mode: nothing recorded)" in test.stdout
    assert "RuntimeError: this version is broken" in test.stderr
    real = mlbook("run", "E001", "--skip-version", "large")
    assert real.returncode == 1
    assert "2 run(s): 1 completed, 1 failed" in real.stdout
    real = mlbook("run", "E001", "-v", "large", "-q")
    assert real.returncode == 0 and real.stderr == ""

    code, out = invoke("runs")
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "experiment",
        "version",
        "status",
        "started",
        "time",
        "metrics",
    ]
    assert [line.split()[2:4] for line in lines[1:]] == [
        ["large", "completed"],
        ["broken", "failed"],
        ["small", "completed"],
    ]
    terminal = on_a_terminal("runs")
    assert rich_headers(terminal) == lines[0].split()  # one renderer: the same columns
    assert "┃" not in out and "[" not in out  # piped: plain text, no markup
    rows = [line for line in terminal.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in row.split("│")][3:5] for row in rows] == [
        ["large", "completed"],
        ["broken", "failed"],
        ["small", "completed"],
    ]
    code, out = invoke("runs", "acc>0.7", "--format", "json")
    assert [r["version"] for r in json.loads(out)] == ["large"]
    code, out = invoke("runs", "--status", "failed", "--format", "csv")
    header, row = out.splitlines()
    assert header.startswith("id,experiment,version,mode,status,created,duration,params.epochs")
    failed_id = row.split(",")[0]

    code, out = invoke("show", failed_id)
    assert code == 0
    assert f"{failed_id}  E001/broken  run  failed" in out
    assert "loss" in out and "▁" in out  # the series' sparkline
    assert 'raise RuntimeError("this version is broken")' in out
    assert [line.split() for line in out.splitlines() if line.startswith("loss")] == [
        ["loss", "4", "0.25", "█▃▁▁"]
    ]
    terminal = on_a_terminal("show", failed_id)
    for title, headers in [
        ("params", ["param", "value"]),
        ("metric series", ["series", "points", "last", "trend"]),
        ("files", ["path", "kind", "size", "sha256"]),
    ]:
        assert title in out.splitlines()
        assert rich_headers(terminal, title) == headers
        piped = out.splitlines()
        assert piped[piped.index(title) + 1].split() == headers
    code, out = invoke("show", failed_id, "--format", "json")
    data = json.loads(out)
    assert data["series"]["loss"][0] == [0, 1.0] and len(data["series"]["loss"]) == 4
    assert [f["path"] for f in data["files"]] == ["Models/E001_demo.py"]


def test_errors_are_one_line(demo: Project) -> None:
    code, out = invoke("run", "E9")
    assert code == 1
    assert out == "error: unknown experiment E9; experiments in Models/: E001\n"
    code, out = invoke("run", "E001", "--version", "huge")
    assert out == (
        "error: Models/E001_demo.py: unknown version huge; versions: small, broken, large\n"
    )
    code, out = invoke("runs", "acc>>1")
    assert code == 1 and out.startswith("error: filter 'acc>>1': expected NAME OP VALUE")
    code, out = invoke("show", "nope")
    assert code == 1 and out == "error: no run 'nope'; list runs with `mlbook runs`\n"
    code, out = invoke("runs")
    assert code == 0 and out == "no runs recorded yet: `mlbook run` records them\n"
    code, out = invoke("runs", "acc>0.5")
    assert code == 0
    assert out == "no runs match (check the metric names with `mlbook show RUN_ID`)\n"
