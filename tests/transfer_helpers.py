"""Two clones of one project with real runs, for the transfer tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlbook.experiments.query import metric_series, runs
from mlbook.experiments.runner import new_experiment, run_experiments
from mlbook.project import Project
from mlbook.provenance.observer import ProvenanceObserver
from mlbook.scaffold import init_project

SCRIPT = """import mlbook

exp = mlbook.Experiment(
    title="{title}", base={{"k": 2}}, versions={{"small": {{}}, "big": {{"k": 5}}}}
)


@exp.train
def train(run, model):
    for step in range(30):
        run.log(step=step, loss=run.params.k / (step + 1), acc=step / 30)
    (run.dir / "result.txt").write_text(f"k {{run.params.k}}\\n")
    (run.dir / "big.bin").write_bytes(b"x" * {big})
    return {{"acc": run.params.k / 10}}
"""


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its output."""
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def add_experiment(project: Project, ident: str, title: str, big: int = 10) -> None:
    """Write experiment ``ident`` into the project and commit it."""
    script = new_experiment(project, ident, title, observers=[ProvenanceObserver(project)])
    script.write_text(SCRIPT.format(title=title, big=big))
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", f"add {ident}")


def run(project: Project, ident: str) -> list[str]:
    """Run every version of ``ident`` (recorded, with provenance); return the run IDs."""
    result = run_experiments(project, [ident], observers=[ProvenanceObserver(project)])
    assert result.ok, result
    return [info.run_id for info in result.runs]


@dataclass
class Clones:
    """Two clones of one project: ``a`` (the origin) and ``b`` (cloned from it)."""

    a: Project
    b: Project


def make_clones(tmp_path: Path, big: int = 10) -> Clones:
    """Project A with experiment E001 committed, and B cloned from it (no runs yet)."""
    a = init_project(tmp_path / "a").project
    add_experiment(a, "E001", "first", big=big)
    git(tmp_path, "clone", "-q", str(a.root), str(tmp_path / "b"))
    return Clones(a, Project.open(tmp_path / "b"))


def snapshot_of(
    project: Project,
) -> dict[str, tuple[str, str, str, dict[str, list[tuple[int, float]]]]]:
    """Every run of the project with its status, experiment, version and series (no times)."""
    found = {}
    for record in runs(project):
        series = {
            key: [(p.step, p.value) for p in points]
            for key, points in metric_series(project, record).items()
        }
        found[record.id] = (record.status, record.experiment, record.version, series)
    return found


def state_of(project: Project) -> tuple[object, ...]:
    """What an unpack may write: runs, refs, output files, the journal (to check nothing was)."""
    refs = git(project.root, "for-each-ref", "refs/mlbook")
    outputs = sorted(p.relative_to(project.root).as_posix() for p in project.outputs_dir.rglob("*"))
    journal = project.journal_path.read_text()
    return sorted(r.id for r in runs(project)), refs, outputs, journal
