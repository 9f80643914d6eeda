"""End to end: real runs through the runner with the provenance observer, real git, real store.

The issue's "done when": after a run, the user's branch and status are as before
(the journal aside, which mlbook keeps in step), the after ref holds the results,
the journal shows the step with both hashes, and editing a shared helper in
Models/common/ shows in the diff of the next run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlbook.experiments.query import get_run, run_files
from mlbook.experiments.runner import new_experiment, run_experiments
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.diff import diff_runs, run_side
from mlbook.provenance.journal import read_journal
from mlbook.provenance.observer import ProvenanceObserver

SCRIPT = """import mlbook
from common.helpers import scale

exp = mlbook.Experiment(title="demo", base={"k": 2}, versions={"small": {}})


@exp.train
def train(run, model):
    value = scale(run.params.k)
    (run.dir / "result.txt").write_text(f"value {value}\\n")
    return {"acc": value / 10}
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_run_records_code_journal_and_diff(project: Project) -> None:
    obs = [ProvenanceObserver(project)]
    script = new_experiment(project, "E001", "demo", name="demo", observers=obs)
    script.write_text(SCRIPT)
    helper = project.models_dir / "common" / "helpers.py"
    helper.write_text("def scale(k):\n    return k * 3\n")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")
    branch = git(project.root, "log", "--format=%H")
    status = git(project.root, "status", "--porcelain")

    first = run_experiments(project, ["E001"], observers=obs)
    assert first.ok, first
    assert git(project.root, "log", "--format=%H") == branch
    changed = git(project.root, "status", "--porcelain")
    assert changed.replace(" M EXPERIMENT_LOG.md\n", "") == status

    with Store.for_project(project) as store:
        record_a = get_run(store, first.runs[0].run_id)
        files_a = run_files(store, record_a.id)
    outputs = f"{record_a.outputs}/result.txt"
    after = f"refs/mlbook/runs/{record_a.id}/after"
    # the run's output directory is git-ignored (Models/outputs/) but the after
    # snapshot holds it, and the journal with the run's final step line
    assert git(project.root, "show", f"{after}:{outputs}") == "value 6\n"
    assert f"run {record_a.id} · acc 0.6" in git(project.root, "show", f"{after}:EXPERIMENT_LOG.md")
    [entry] = read_journal(project.journal_path)
    [step] = entry.steps
    assert (step.version, step.run_id, step.done, step.metrics) == (
        "small",
        record_a.id,
        True,
        {"acc": 0.6},
    )
    assert step.before == (record_a.commit_before or "")[:7]
    assert step.after == (record_a.commit_after or "")[:7]
    assert "Models/common/helpers.py" in [f[0] for f in files_a]

    helper.write_text("def scale(k):\n    return k * 4\n")
    second = run_experiments(project, ["E001"], observers=obs)
    assert second.ok
    with Store.for_project(project) as store:
        record_b = get_run(store, second.runs[0].run_id)
        side_b = run_side(record_b, run_files(store, record_b.id))
        side_a = run_side(record_a, files_a)
    result = diff_runs(project.root, side_a, side_b)
    assert "-    return k * 3\n+    return k * 4" in result.code
    assert [m.key for m in result.metrics] == ["acc"]
    assert [s.run_id for s in read_journal(project.journal_path)[0].steps] == [
        record_a.id,
        record_b.id,
    ]
