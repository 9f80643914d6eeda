"""ProvenanceObserver with a real project, real git and the real run store."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mlbook.config import GitSettings
from mlbook.errors import MlbookWarning
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.journal import add_entry, read_journal
from mlbook.provenance.observer import ProvenanceObserver


@dataclass
class Info:
    """The attributes of the runner's RunInfo that the observer reads."""

    run_id: str
    experiment: str = "E001"
    version: str = "small"
    mode: str = "run"
    status: str = "running"
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_dir: str | None = None


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def committed(project: Project) -> None:
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")


def row(store: Store, run_id: str) -> tuple[Any, ...]:
    return tuple(
        store.db.execute(
            "SELECT commit_before, commit_after, commit_reason, data_version, python FROM runs "
            "WHERE id = ?",
            (run_id,),
        ).fetchone()
    )


def test_a_run_is_snapshotted_and_journaled(project: Project) -> None:
    ds = project.datasets_dir / "digits"
    ds.mkdir()
    (ds / "dataset.json").write_text('{"name": "digits"}')
    script = project.models_dir / "E001_cnn.py"
    script.write_text("W = 1\n")
    add_entry(project.journal_path, "E001", "CNN")
    committed(project)
    branch_before = git(project.root, "log", "--format=%H", "HEAD")
    obs = ProvenanceObserver(project)
    with Store.for_project(project) as store:
        _, run_id = store.create_run(experiment="E001", version="small", mode="run", params={})
        info = Info(run_id, dataset_dir=str(ds))
        obs.before_run(info, store)
        (project.outputs_dir / "E001").mkdir(parents=True)
        result = project.models_dir / "results.txt"
        result.write_text("acc 0.962\n")
        info.status, info.metrics = "completed", {"acc": 0.962, "note": "x"}
        obs.after_run(info, store)
        before, after, reason, data, python = row(store, run_id)
    assert git(project.root, "log", "--format=%H", "HEAD") == branch_before
    assert git(project.root, "rev-parse", f"refs/mlbook/runs/{run_id}/before").strip() == before
    assert git(project.root, "show", f"{after}:Models/results.txt") == "acc 0.962\n"
    assert (
        git(project.root, "log", "-1", "--format=%s", after).strip()
        == "[E001.1] results: acc=0.962"
    )
    assert (
        git(project.root, "log", "-1", "--format=%s", before).strip() == "[E001.1] before run small"
    )
    assert reason is None and data.startswith("sha256:") and re.match(r"\d+\.\d+", python)
    [entry] = read_journal(project.journal_path)
    [step] = entry.steps
    assert (step.run_id, step.done, step.metrics) == (run_id, True, {"acc": 0.962})
    assert (step.before, step.after) == (before[:7], after[:7])
    assert entry.status == "IN PROGRESS"
    # the after snapshot holds the final step line (without its own hash)
    logged = git(project.root, "show", f"{after}:EXPERIMENT_LOG.md")
    assert f"1. [x] small — run {run_id} · acc 0.962 · {before[:7]} → ?" in logged


def test_failed_run_without_git_commits(project: Project) -> None:
    off = msgspec.structs.replace(project.config, git=GitSettings(commits="off"))
    project = Project(project.root, off)
    obs = ProvenanceObserver(project)
    with Store.for_project(project) as store:
        _, run_id = store.create_run(experiment="E002", version="v", mode="run", params={})
        info = Info(run_id, experiment="E002", version="v")
        obs.before_run(info, store)
        info.status = "failed"
        obs.after_run(info, store)
        before, after, reason, _, _ = row(store, run_id)
    assert (before, after, reason) == (None, None, '[git] commits = "off" in mlbook.toml')
    [step] = read_journal(project.journal_path)[0].steps
    assert (step.status, step.before, step.after) == ("failed", None, None)


def test_test_mode_and_new_experiment(project: Project) -> None:
    obs = ProvenanceObserver(project)
    obs.before_run(Info("test-1", mode="test"), None)
    assert read_journal(project.journal_path) == []
    obs.experiment_created(project, "E003", "A title", project.models_dir / "E003_a.py")
    assert [(e.id, e.title, e.status) for e in read_journal(project.journal_path)] == [
        ("E003", "A title", "TODO")
    ]


def test_a_lost_commit_has_its_reason_recorded_and_warned(project: Project) -> None:
    committed(project)
    (project.root / ".git" / "index").write_bytes(b"DIRC broken")  # git cannot read it
    obs = ProvenanceObserver(project)
    with Store.for_project(project) as store:
        _, run_id = store.create_run(experiment="E001", version="small", mode="run", params={})
        info = Info(run_id)
        with pytest.warns(MlbookWarning, match=f"run {run_id}: no before commit: git .* failed"):
            obs.before_run(info, store)
        before, _, reason, _, _ = row(store, run_id)
        assert before is None and reason and "failed" in reason
        info.status = "completed"
        obs.after_run(info, store)  # lost for the same reason: warned once per run
        before, after, after_reason, _, _ = row(store, run_id)
    assert (before, after) == (None, None)
    assert after_reason == reason and "\n" not in reason
    [step] = read_journal(project.journal_path)[0].steps
    assert step.status == "done"  # the journal went on


def test_a_broken_journal_still_gets_the_run_its_commits(project: Project) -> None:
    project.journal_path.write_text("## [E001] x\n<!-- mlbook:steps E001 -->\n")  # never closed
    committed(project)
    obs = ProvenanceObserver(project)
    with Store.for_project(project) as store:
        _, run_id = store.create_run(experiment="E001", version="small", mode="run", params={})
        info = Info(run_id)
        match = f"run {run_id}: journal step not written: .*EXPERIMENT_LOG.md:2: mlbook block"
        with pytest.warns(MlbookWarning, match=match) as caught:
            obs.before_run(info, store)
        assert len(caught) == 1  # once per stage, however often the journal was tried
        info.status = "completed"
        with pytest.warns(MlbookWarning, match=match) as caught:
            obs.after_run(info, store)
        assert len(caught) == 1
        before, after, reason, _, _ = row(store, run_id)
    assert before and after and reason is None
    assert git(project.root, "rev-parse", f"refs/mlbook/runs/{run_id}/after").strip() == after


def test_without_git_a_run_warns_once_and_records_why(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(project.root / ".git")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(project.root.parent))
    obs = ProvenanceObserver(project)
    with Store.for_project(project) as store:
        _, run_id = store.create_run(experiment="E001", version="small", mode="run", params={})
        info = Info(run_id)
        with pytest.warns(MlbookWarning) as caught:
            obs.before_run(info, store)
        [warning] = caught
        assert str(warning.message) == (
            f"run {run_id}: no before commit: {project.root} is not in a git repository: "
            'run `git init` to record each run\'s code; or set [git] commits = "off"'
        )
        info.status = "completed"
        obs.after_run(info, store)  # the same reason again: no second warning
        before, after, reason, _, _ = row(store, run_id)
    assert (before, after) == (None, None)
    assert (
        reason
        == f"{project.root} is not in a git repository: run `git init` to record each run's code"
    )


def test_a_lost_after_commit_is_recorded_beside_a_good_before_commit(project: Project) -> None:
    committed(project)
    obs = ProvenanceObserver(project)
    with Store.for_project(project) as store:
        _, run_id = store.create_run(experiment="E001", version="small", mode="run", params={})
        info = Info(run_id)
        obs.before_run(info, store)
        (project.root / ".git" / "index").write_bytes(b"DIRC broken")
        info.status = "completed"
        with pytest.warns(MlbookWarning, match=f"run {run_id}: no after commit: git .* failed"):
            obs.after_run(info, store)
        before, after, reason, _, _ = row(store, run_id)
    assert before and after is None
    assert reason.startswith("after: git ") and "failed" in reason
