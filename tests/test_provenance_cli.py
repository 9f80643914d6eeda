"""`mlbook log`, `mlbook note`, `mlbook checkout` through click's runner and a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.project import Project
from mlbook.provenance.git import snapshot
from mlbook.provenance.journal import add_entry, read_journal, record_step


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-C", str(project.root), *args], prog_name="mlbook")
    return result.exit_code, result.stdout, result.stderr


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_log_table_steps_and_status(project: Project) -> None:
    code, out, _ = invoke(project, "log")
    assert (code, out) == (
        0,
        "no experiments in EXPERIMENT_LOG.md yet; add one with `mlbook new`\n",
    )
    add_entry(project.journal_path, "E012", "Wider CNN")
    record_step(project.journal_path, "E012", "small", "r1", "done", {"acc": 0.9}, "abc1234", None)
    record_step(project.journal_path, "E012", "wide", "r2", "done", {"acc": 0.95}, None, None)
    add_entry(project.journal_path, "E013", "Later")
    code, out, _ = invoke(project, "log")
    assert code == 0
    assert out.splitlines() == [  # piped: plain aligned columns
        "id    title      status       steps  best",
        "E012  Wider CNN  IN PROGRESS    2/2  acc 0.95",
        "E013  Later      TODO           0/0  -",
    ]
    terminal = CliRunner().invoke(
        cli, ["-C", str(project.root), "log"], env={"TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    )
    header = next(line for line in terminal.stdout.splitlines() if "┃" in line)
    assert [c.strip() for c in header.split("┃") if c.strip()] == out.splitlines()[0].split()
    code, out, _ = invoke(project, "log", "E012")
    assert code == 0 and "[E012] Wider CNN · IN PROGRESS" in out and "abc1234 → ?" in out
    code, out, _ = invoke(project, "log", "E012", "--status", "done")
    assert (code, out) == (0, "E012: status DONE\n")
    code, out, _ = invoke(project, "log", "--format", "json")
    data = json.loads(out)
    assert [(e["id"], e["status"]) for e in data] == [("E012", "DONE"), ("E013", "TODO")]
    assert data[0]["steps"][1]["metrics"] == {"acc": 0.95}


def test_log_errors(project: Project) -> None:
    code, _, err = invoke(project, "log", "E404")
    assert code == 1
    assert err == (
        f"error: {project.journal_path}: no entry for E404; "
        "create it with `mlbook new E404 TITLE`\n"
    )
    code, _, err = invoke(project, "log", "--status", "done")
    assert code == 2 and "--status needs an EXP_ID" in err
    add_entry(project.journal_path, "E1", "t")
    code, _, err = invoke(project, "log", "E1", "--status", "nope")
    assert (code, err) == (1, "error: unknown status 'nope'; use one of: todo, in-progress, done\n")
    text = project.journal_path.read_text()
    project.journal_path.write_text(text + "<!-- mlbook:steps E1\n")
    line = len(text.splitlines()) + 1
    code, _, err = invoke(project, "log")
    assert code == 1 and err.startswith(f"error: {project.journal_path}:{line}: broken mlbook")


def test_note_carries_the_current_commit(project: Project) -> None:
    add_entry(project.journal_path, "E1", "t")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")
    head = git(project.root, "rev-parse", "--short=7", "HEAD").strip()
    code, out, _ = invoke(project, "note", "E1", "it [works]")
    assert code == 0
    assert re.fullmatch(rf"E1: noted \d{{4}}-\d\d-\d\d \({head}\): it \[works\]\n", out)
    assert read_journal(project.journal_path)[0].notes[0].endswith(f"({head}): it [works]")


def test_checkout_a_run_before_and_after(project: Project, tmp_path: Path) -> None:
    model = project.models_dir / "E1_x.py"
    model.write_text("W = 1\n")
    before = snapshot(project.root, "r1", "before", "before")
    model.write_text("W = 2\n")
    snapshot(project.root, "r1", "after", "after")
    code, out, _ = invoke(project, "checkout", "r1", str(tmp_path / "b"))
    assert (code, out) == (0, f"wrote r1 ({(before.commit or '')[:7]}) to {tmp_path / 'b'}\n")
    assert (tmp_path / "b" / "Models" / "E1_x.py").read_text() == "W = 1\n"
    code, _, _ = invoke(project, "checkout", "r1", "--after", str(tmp_path / "a"))
    assert code == 0 and (tmp_path / "a" / "Models" / "E1_x.py").read_text() == "W = 2\n"
    assert (tmp_path / "a" / "mlbook.toml").is_file()
    code, _, err = invoke(project, "checkout", "r9", str(tmp_path / "c"))
    assert code == 1 and err.startswith("error: no commit, ref or run called 'r9'")


def test_python_m_note(project: Project) -> None:
    add_entry(project.journal_path, "E1", "t")
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "note", "E1", "from a shell"],
        cwd=project.root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("E1: noted ")
    assert read_journal(project.journal_path)[0].notes[0].endswith(": from a shell")


def test_diff_command_over_the_run_store(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlbook.cli.provenance import diff
    from mlbook.experiments.store import Store

    helper = project.models_dir / "common" / "training.py"
    helper.write_text("LR = 1\n")
    (project.root / "NOTES.md").write_text("one\n")
    used = [("Models/common/training.py", 7, "0" * 64)]
    with Store.for_project(project) as store:
        ids = []
        for lr, acc in [(0.1, 0.9), (0.01, 0.95)]:
            _, run_id = store.create_run(
                experiment="E1", version="v", mode="run", params={"lr": lr, "epochs": 5}
            )
            shot = snapshot(project.root, run_id, "before", "before")
            store.set_provenance(run_id, commit_before=shot.commit, data_version="metadata:aa")
            store.add_files(run_id, used)
            store.finish_run(run_id, "completed", {"acc": acc})
            ids.append(run_id)
            helper.write_text("LR = 2\n")
            (project.root / "NOTES.md").write_text("two\n")
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(diff, [ids[0], ids[1], "--no-color"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{ids[0]} → {ids[1]}" in out
    assert re.search(r"\nlr +0\.1 +0\.01\n", out) and "epochs" not in out
    assert "data: same" in out
    assert re.search(r"\nacc +0\.9 +0\.95 +\+0\.05\n", out)
    assert "-LR = 1\n+LR = 2\n" in out and "NOTES.md" not in out
    out = CliRunner().invoke(diff, [ids[0], ids[1], "--all", "--no-color"]).stdout
    assert "+two" in out
    out = CliRunner().invoke(diff, [ids[1], "--no-color"]).stdout
    assert f"{ids[1]} → working tree" in out and "code: no change in the files" in out
