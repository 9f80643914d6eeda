"""The runner with real child processes: modes, faults, Ctrl-C, kill -9, parallel runners."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from support import gone, mlbook_cli, script, wait_for

import mlbook
from mlbook.errors import ExperimentError, MlbookWarning
from mlbook.experiments.query import metric_summaries, run_files
from mlbook.experiments.runner import RunInfo, RunObserver, run_experiments
from mlbook.experiments.store import Store
from mlbook.project import Project

FAULTS = """
    import os, signal, sys
    import mlbook
    from common import shared

    exp = mlbook.Experiment(
        base={"epochs": 5},
        versions={"ok": {}, "raises": {}, "exits": {}, "killed": {}, "last": {}},
        title="faults",
    )

    @exp.model
    def build(p):
        return {"epochs": p.epochs}

    @exp.train
    def train(run, model):
        for epoch in run.iterate(range(run.params.epochs)):
            run.log(step=epoch, loss=1.0 / (epoch + 1))
        v = run.version
        if v == "raises":
            raise ValueError("boom in " + v)
        if v == "exits":
            sys.exit(3)
        if v == "killed":
            run.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        run.save_weights(model)
        return {"acc": 0.9 if v == "ok" else 0.5}
"""

SLOW = """
    import time
    import mlbook

    exp = mlbook.Experiment(versions={"first": {}, "second": {}})

    @exp.train
    def train(run):
        for step in run.iterate(range(100000)):
            run.log(step=step, loss=1.0)
            run.flush()
            time.sleep(0.02)
        return {"acc": 1.0}
"""


def metric_count(project: Project) -> int:
    path = project.state_dir / "runs.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            row = db.execute("SELECT sum(count) FROM metric_summary").fetchone()
            return int(row[0] or 0)
    except sqlite3.OperationalError:
        return 0


@pytest.fixture
def faults(project: Project) -> Project:
    (project.models_dir / "common" / "shared.py").write_text("VALUE = 1\n")
    script(project, "E001_faults.py", FAULTS)
    return project


def test_every_fault_is_recorded_and_the_next_version_runs(faults: Project) -> None:
    result = run_experiments(faults, ["E001"])
    status = {r.version: r.status for r in result.runs}
    assert status == {
        "ok": "completed",
        "raises": "failed",
        "exits": "failed",
        "killed": "failed",
        "last": "completed",
    }
    assert result.exit_code == 1
    stored = {r.version: r for r in mlbook.runs(faults)}
    assert 'raise ValueError("boom in " + v)' in (stored["raises"].error or "")
    assert "ValueError: boom in raises" in (stored["raises"].error or "")
    assert "sys.exit(3) called" in (stored["exits"].error or "")
    assert "killed by SIGKILL" in (stored["killed"].error or "")
    assert stored["ok"].metrics == {"acc": 0.9}
    assert stored["ok"].weights is not None and (faults.root / stored["ok"].weights).is_file()
    assert stored["ok"].python
    # metrics logged before the exception and before the SIGKILL are kept
    for version in ("raises", "killed"):
        assert metric_summaries(faults, stored[version])["loss"].count == 5
    files = run_files(faults, stored["ok"].id)
    assert [f.path for f in files] == [
        "Models/E001_faults.py",
        "Models/common/__init__.py",
        "Models/common/shared.py",
    ]
    out = faults.outputs_dir / "E001" / "ok" / stored["ok"].id
    assert (out / "output.log").exists()


def test_test_mode_records_nothing_and_cuts_loops(faults: Project) -> None:
    seen: list[RunInfo] = []

    class Watch:
        def run_started(self, info: RunInfo) -> None:
            pass

        def run_progress(self, info: RunInfo) -> None:
            pass

        def run_finished(self, info: RunInfo) -> None:
            seen.append(info)

    result = run_experiments(
        faults, ["E001"], mode="test", versions=["ok", "raises"], test_steps=3, listener=Watch()
    )
    assert [r.status for r in result.runs] == ["completed", "failed"]
    assert seen[0].step == 3 and seen[0].latest == {"loss": pytest.approx(1 / 3)}
    assert not (faults.state_dir / "runs.sqlite").exists()
    assert not faults.outputs_dir.exists()
    assert not seen[0].dir.exists()  # temporary outputs are removed


def test_observers_see_each_run(faults: Project) -> None:
    calls: list[tuple[str, str, str]] = []

    class Recorder(RunObserver):
        def before_run(self, info: RunInfo, store: Store | None) -> None:
            calls.append(("before", info.version, info.status))
            assert store is not None
            store.set_provenance(info.run_id, commit_before="abc", data_version="d1")

        def after_run(self, info: RunInfo, store: Store | None) -> None:
            calls.append(("after", info.version, info.status))
            raise RuntimeError("side channel down")

    with pytest.warns(MlbookWarning, match="after the run: side channel down"):
        run_experiments(faults, ["E001"], versions=["ok"], observers=[Recorder()])
    assert calls == [("before", "ok", "running"), ("after", "ok", "completed")]
    (record,) = mlbook.runs(faults)
    assert (record.commit_before, record.data_version, record.status) == ("abc", "d1", "completed")


def test_unknown_ids_and_versions(faults: Project) -> None:
    with pytest.raises(
        ExperimentError, match="unknown experiment E9; experiments in Models/: E001"
    ):
        run_experiments(faults, ["E9"])
    with pytest.raises(ExperimentError, match="unknown version big; versions: ok, raises"):
        run_experiments(faults, ["E001"], versions=["big"])


def test_jobs_run_versions_in_parallel(project: Project) -> None:
    script(
        project,
        "E002_par.py",
        """
        import time
        import mlbook
        exp = mlbook.Experiment(versions={"a": {}, "b": {}})

        @exp.train
        def train(run):
            time.sleep(0.6)
        """,
    )
    result = run_experiments(project, ["E002"], jobs=2)
    a, b = sorted(mlbook.runs(project), key=lambda r: r.version)
    assert all(r.status == "completed" for r in result.runs)
    assert a.started is not None and b.started is not None and a.ended and b.ended
    assert max(a.started, b.started) < min(a.ended, b.ended)  # they overlapped


def test_resume_reads_the_old_checkpoint(project: Project) -> None:
    script(
        project,
        "E003_ckpt.py",
        """
        import mlbook
        exp = mlbook.Experiment(base={"epochs": 4})

        @exp.train
        def train(run):
            found = run.load_checkpoint()
            start = found.step + 1 if found else 0
            for epoch in range(start, run.params.epochs):
                run.save_checkpoint({"epoch": epoch}, step=epoch, keep_last=2)
                if epoch == 1 and not found:
                    raise RuntimeError("stop after epoch 1")
            return {"start": start}
        """,
    )
    run_experiments(project, ["E003"])
    (first,) = mlbook.runs(project)
    assert first.status == "failed"
    assert len(list((project.root / first.outputs / "checkpoints").glob("*.ckpt"))) == 2
    result = run_experiments(project, resume=first.id[:17])
    assert result.runs[0].status == "completed"
    resumed = mlbook.runs(project, status="completed")[0]
    assert resumed.resumed_from == first.id and resumed.metrics == {"start": 2.0}
    with pytest.raises(ExperimentError, match="no run 'nope' to resume"):
        run_experiments(project, resume="nope")


def test_export_mode_calls_the_export_hook(faults: Project) -> None:
    script(
        faults,
        "E004_exp.py",
        """
        import mlbook
        exp = mlbook.Experiment(versions={"v": {"w": 2}})
        exp.model(lambda p: {"w": p.w})

        @exp.train
        def train(run, model):
            run.save_weights(model)

        @exp.export
        def export(run, model):
            return {"has_weights": run.source_weights is not None, "w": model["w"]}
        """,
    )
    run_experiments(faults, ["E004"])
    result = run_experiments(faults, ["E004"], mode="export")
    assert result.runs[0].metrics == {"has_weights": True, "w": 2.0}
    result = run_experiments(faults, ["E001"], versions=["ok"], mode="export")
    assert "export mode needs an export hook" in (result.runs[0].error or "")


def test_kill_9_of_the_runner_leaves_a_crashed_run_with_its_metrics(project: Project) -> None:
    script(project, "E005_slow.py", SLOW)
    runner = mlbook_cli(project, "run", "E005")
    wait_for(lambda: metric_count(project) >= 3)
    os.kill(runner.pid, signal.SIGKILL)
    runner.communicate()
    with Store.for_project(project, recover=False) as store:
        child_pid = store.db.execute("SELECT pid FROM runs").fetchone()[0]
    wait_for(lambda: gone(child_pid), 10)
    (record,) = mlbook.runs(project)  # opening the store finds the dead runner
    assert record.status == "crashed"
    assert "died while this run was running" in (record.error or "")
    assert metric_count(project) >= 3


def test_ctrl_c_marks_the_run_interrupted_and_stops(project: Project) -> None:
    script(project, "E006_slow.py", SLOW)
    runner = mlbook_cli(project, "run", "E006")
    wait_for(lambda: metric_count(project) >= 3)
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=20)
    assert runner.returncode == 130, err
    (record,) = mlbook.runs(project)  # "second" never started
    assert record.version == "first" and record.status == "interrupted"
    assert "KeyboardInterrupt" in (record.error or "")


def test_two_runners_at_once_both_record(project: Project) -> None:
    script(
        project,
        "E007_quick.py",
        """
        import mlbook
        exp = mlbook.Experiment(versions={"a": {}, "b": {}})

        @exp.train
        def train(run):
            for step in range(200):
                run.log(step=step, loss=0.5)
            return {"acc": 1.0}
        """,
    )
    runners = [mlbook_cli(project, "run", "E007", "-q") for _ in range(2)]
    try:
        errors = [runner.communicate(timeout=60)[1] for runner in runners]
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
                runner.communicate()
    assert [r.returncode for r in runners] == [0, 0], errors
    found = mlbook.runs(project)
    assert len(found) == 4 and {r.status for r in found} == {"completed"}
    assert metric_count(project) == 800


def test_run_data_reads_the_named_dataset(project: Project) -> None:
    data = project.datasets_dir / "pets"
    data.mkdir()
    lines = [
        {"id": "1", "file": "1.jpg", "labels": ["cat"], "split": "train"},
        {"id": "2", "file": "2.jpg", "labels": ["dog"], "split": "train"},
        {"id": "3", "file": "3.jpg", "labels": ["dog"], "split": "test"},
    ]
    (data / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    script(
        project,
        "E008_data.py",
        """
        import mlbook
        exp = mlbook.Experiment(dataset="pets")

        @exp.train
        def train(run):
            return {"train": len(run.data("train")), "test": len(run.data("test"))}
        """,
    )
    result = run_experiments(project, ["E008"], mode="test")
    assert result.runs[0].metrics == {"train": 2.0, "test": 1.0}, result.runs[0].error
    assert result.runs[0].dataset_dir == data


def test_new_tells_observers_and_grid_versions_run(project: Project) -> None:
    from mlbook.experiments.runner import new_experiment

    created: list[tuple[str, str, str]] = []

    class Journal(RunObserver):
        def experiment_created(self, project: Project, ident: str, title: str, path: Path) -> None:
            created.append((ident, title, path.name))

    path = new_experiment(project, "E010", "grid search", observers=[Journal()])
    assert created == [("E010", "grid search", "E010_grid_search.py")]
    text = path.read_text().replace(
        'versions={\n        "small": {"width": 16},\n        "large": {"width": 64},\n    },',
        'versions={"small": {"width": 16}},\n    grid={"lr": [0.1, 0.2]},',
    )
    path.write_text(text)
    result = run_experiments(project, ["E010"], observers=[])
    assert [(r.version, r.status) for r in result.runs] == [
        ("small-lr=0.1", "completed"),
        ("small-lr=0.2", "completed"),
    ], [r.error for r in result.runs]
    assert {r.params["lr"] for r in mlbook.runs(project)} == {0.1, 0.2}
