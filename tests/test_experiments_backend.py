"""The local backend's spare child: started before the runner plans (or, by `mlbook run`,
before the CLI loads), it takes the first job."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from support import gone, mlbook_cli, script

from mlbook.errors import ExperimentError
from mlbook.experiments import _spare
from mlbook.experiments.backends import LocalBackend
from mlbook.experiments.query import get_run, runs
from mlbook.experiments.runner import RunInfo, run_experiments
from mlbook.experiments.store import Store
from mlbook.project import Project

PRINTS = """
    import mlbook

    exp = mlbook.Experiment(versions={"only": {}}, SEED)

    @exp.train
    def train(run):
        print("hello from the child")
        run.log(step=1, loss=0.5)
        return {"acc": 1.0}
"""


def _write(project: Project, seed: int | None = None) -> None:
    text = PRINTS.replace("SEED", f"seed={seed}" if seed is not None else "")
    script(project, "E001_prints.py", text.replace(", )", ")"))


def _spare_children() -> list[int]:
    """This process's children that are spare children still waiting for a job."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(") ", 1)[1].split()[1])
        if ppid == os.getpid() and b"--wait" in cmdline and not gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def _run_with_spare(project: Project, *, kill_it: bool = False) -> tuple[RunInfo, int]:
    """Run E001 on a backend with a spare child (hash seed: none); the run and the
    spare's pid."""
    backend = LocalBackend()
    backend.start_spare(None)
    assert backend.spare is not None
    spare = backend.spare.process
    if kill_it:
        spare.send_signal(signal.SIGKILL)
        spare.wait()
    try:
        result = run_experiments(project, ["E001"], backend=backend)
    finally:
        backend.close()
    [info] = result.runs
    assert info.status == "completed", info.error
    return info, spare.pid


def test_the_first_run_takes_the_spare_child(project: Project) -> None:
    _write(project)
    info, spare = _run_with_spare(project)
    assert info.pid == spare
    # the spare made the run's log its stdout once it knew the run
    assert "hello from the child" in (info.dir / "output.log").read_text()
    with Store.for_project(project) as store:
        assert get_run(store, info.run_id).metrics == {"acc": 1.0}


def test_a_run_of_another_seed_starts_its_own_child(project: Project) -> None:
    _write(project, seed=7)
    info, spare = _run_with_spare(project)  # no hash seed: the run needs PYTHONHASHSEED=7
    assert info.pid != spare
    assert gone(spare)
    assert json.loads((info.dir / "seed.json").read_text())["python_hash_seed"] == "7"


def test_a_dead_spare_is_replaced(project: Project) -> None:
    _write(project)
    info, spare = _run_with_spare(project, kill_it=True)
    assert info.pid != spare
    assert "hello from the child" in (info.dir / "output.log").read_text()


def test_a_spare_no_run_took_is_stopped(project: Project) -> None:
    _write(project)
    with pytest.raises(ExperimentError, match="E404"):
        run_experiments(project, ["E404"])  # the runner made a backend and a spare
    assert _spare_children() == []
    backend = LocalBackend()
    backend.start_spare(None)
    assert backend.spare is not None
    pid = backend.spare.process.pid
    backend.close()
    assert gone(pid) and backend.spare is None


def _hash_seed(info: RunInfo) -> str | None:
    return json.loads((info.dir / "seed.json").read_text())["python_hash_seed"]


def test_a_prestarted_spare_of_the_remembered_seed_takes_the_run(project: Project) -> None:
    _write(project, seed=7)
    _spare.remember(project.root, ["E001"], 7)
    _spare.prestart(["E001"], project.root)
    backend = LocalBackend()
    try:
        backend.start_spare(7)
        assert backend.spare is not None
        early = backend.spare.process.pid  # the prestarted one: taken, not replaced
        assert _spare.take() is None
        result = run_experiments(project, ["E001"], backend=backend)
    finally:
        backend.close()
    [info] = result.runs
    assert info.status == "completed", info.error
    assert info.pid == early and _hash_seed(info) == "7"


def test_a_prestarted_spare_of_another_seed_is_replaced(project: Project) -> None:
    _write(project, seed=7)
    _spare.remember(project.root, ["E001"], None)  # the last run was not seeded
    _spare.prestart(["E001"], project.root)
    early = _spare._prestarted[0].process.pid
    backend = LocalBackend()
    try:
        backend.start_spare(7)
        assert backend.spare is not None and backend.spare.process.pid != early
        assert gone(early)
        result = run_experiments(project, ["E001"], backend=backend)
    finally:
        backend.close()
    assert _hash_seed(result.runs[0]) == "7"
    assert _spare._remembered(project.root) == {"E001": 7}  # the runner remembers the plan


def test_a_prestarted_spare_no_backend_took_is_stopped(project: Project) -> None:
    _write(project)
    _spare.prestart(["E001"], project.root)
    early = _spare._prestarted[0].process.pid
    backend = LocalBackend()  # the caller's backend: the runner starts no spare of its own
    try:
        run_experiments(project, ["E001"], backend=backend)
    finally:
        backend.close()
    assert gone(early) and _spare.take() is None


def test_mlbook_run_remembers_the_seed_and_each_run_gets_its_hash_seed(project: Project) -> None:
    """`mlbook run` prestarts a child with the last run's seed; a new seed replaces it."""
    _write(project, seed=7)
    for seed in (7, 7, 8, None):
        if seed != 7:
            _write(project, seed=seed)
        cli = mlbook_cli(project, "run", "E001", "-q")
        _, err = cli.communicate(timeout=120)
        assert cli.returncode == 0, err.decode()
        assert _spare._remembered(project.root) == {"E001": seed}
    seeds = []
    for record in reversed(list(runs(project))):  # oldest first
        seed_file = project.root / record.outputs / "seed.json"
        seeds.append(
            json.loads(seed_file.read_text())["python_hash_seed"] if seed_file.exists() else None
        )
    assert seeds == ["7", "7", "8", None]


def test_a_remembered_seed_out_of_range_is_not_used(project: Project) -> None:
    (project.root / _spare.SEED_FILE).parent.mkdir(exist_ok=True)
    (project.root / _spare.SEED_FILE).write_text("E001 -5\nE002 99999999999\nE003 x\nE004 3\n")
    assert _spare._remembered(project.root) == {"E004": 3}


@pytest.mark.parametrize(
    ("argv", "prestarted"),
    [
        (["run", "E001", "-q"], (["E001", "-q"], None)),
        (["-C", "proj", "run", "E002"], (["E002"], Path("proj"))),
        (["run", "--help"], None),
        (["ls"], None),
        (["-C", "proj", "ls"], None),
    ],
)
def test_the_mlbook_command_prestarts_only_for_run(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    prestarted: tuple[list[str], Path | None] | None,
) -> None:
    """`mlbook [-C DIR] run ...` starts the child before the CLI; no other command does."""
    import mlbook.__main__
    import mlbook.cli

    calls: list[tuple[list[str], Path | None]] = []
    monkeypatch.setattr(_spare, "prestart", lambda args, start=None: calls.append((args, start)))
    monkeypatch.setattr(mlbook.cli, "main", lambda: None)  # the dispatch only, not the CLI
    monkeypatch.setattr("sys.argv", ["mlbook", *argv])
    mlbook.__main__.main()
    assert calls == ([prestarted] if prestarted else [])
