"""What the runner promises under faults: flush means committed, NaN is a value, bad values
warn, quiet loops still flush, SIGTERM interrupts, leftover processes are stopped, repeated
events are dropped, broken children and full disks are one clear line."""

from __future__ import annotations

import array
import math
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from support import gone, mlbook_cli, script, wait_for

import mlbook
from mlbook.cli import cli
from mlbook.errors import MlbookWarning, StoreError
from mlbook.experiments.backends import Job
from mlbook.experiments.contract import (
    End,
    Event,
    Exit,
    Files,
    Flush,
    FrameReader,
    Metrics,
    Series,
    encode_event,
)
from mlbook.experiments.query import get_run, metric_series, metric_summaries, runs
from mlbook.experiments.runner import RunInfo, RunObserver, run_experiments
from mlbook.experiments.series import chunk_of, decode_points, pack_series
from mlbook.experiments.store import Store
from mlbook.project import Project


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the test's script writes (its path in $MARKER) to say how far it got."""
    path = tmp_path / "marker"
    monkeypatch.setenv("MARKER", str(path))
    return path


def stored_points(project: Project, key: str = "loss") -> int:
    path = project.state_dir / "runs.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            row = db.execute("SELECT sum(count) FROM metric_summary WHERE key = ?", (key,))
            return int(row.fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0


FLUSHED = """
    import os, sys, time
    import mlbook

    exp = mlbook.Experiment(versions={"a": {}})

    @exp.train
    def train(run):
        marker = os.environ["MARKER"]
        step = 0
        while True:
            for _ in range(5000):
                run.log(step=step, loss=step * 0.5)
                step += 1
            run.flush()
            with open(marker, "a") as out:   # what the loop knows is durable
                out.write(f"{step}\\n")
"""


def test_a_kill_of_the_runner_loses_no_flushed_point(project: Project, marker: Path) -> None:
    script(project, "E001_flushed.py", FLUSHED)
    runner = mlbook_cli(project, "run", "E001", "-q")
    try:
        wait_for(lambda: marker.exists() and len(marker.read_text().split()) >= 3)
        # flush returned, so the points are already in SQLite while the run goes on
        acknowledged = int(marker.read_text().split()[-1])
        assert stored_points(project) >= acknowledged
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.communicate(timeout=10)
    acknowledged = int(marker.read_text().split()[-1])
    with sqlite3.connect(project.state_dir / "runs.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (record,) = runs(project)
    series = metric_series(project, record)["loss"]
    assert len(series) >= acknowledged
    assert [p.step for p in series[:acknowledged]] == list(range(acknowledged))
    assert record.status == "crashed"


NAN = """
    import mlbook

    exp = mlbook.Experiment(versions={"nan": {}, "after": {}})

    @exp.train
    def train(run):
        if run.version == "nan":
            run.log(step=0, loss=float("nan"), acc=0.5)
            run.log(step=1, loss=float("inf"), acc=0.7)
            run.log(step=2, loss=float("-inf"), acc=float("nan"))
            run.log(step=3, loss=1.5)
            return {"loss": float("nan"), "acc": 0.7, "gain": float("inf")}
        run.log(step=0, loss=0.1)
        return {"loss": 0.1}
"""


def test_nan_and_infinity_are_stored_as_values(project: Project) -> None:
    script(project, "E002_nan.py", NAN)
    result = run_experiments(project, ["E002"], observers=[])
    assert [r.status for r in result.runs] == ["completed", "completed"]
    record = next(r for r in runs(project) if r.version == "nan")
    loss = [p.value for p in metric_series(project, record)["loss"]]
    assert math.isnan(loss[0]) and loss[1:] == [math.inf, -math.inf, 1.5]
    summary = metric_summaries(project, record)
    assert (summary["loss"].min, summary["loss"].max, summary["loss"].last) == (
        -math.inf,
        math.inf,
        1.5,
    )
    assert summary["acc"].count == 3 and math.isnan(summary["acc"].last)
    assert (summary["acc"].min, summary["acc"].max) == (0.5, 0.7)
    assert math.isnan(record.metrics["loss"]) and record.metrics["gain"] == math.inf
    # a NaN final metric matches no numeric filter
    assert [r.version for r in runs(project, filters=["loss>0"])] == ["after"]
    assert [r.version for r in runs(project, filters=["loss<1"])] == ["after"]
    shown = CliRunner().invoke(cli, ["-C", str(project.root), "show", record.id])
    assert shown.exit_code == 0, shown.output
    assert "loss    nan" in shown.output and "gain    inf" in shown.output


BAD_VALUES = """
    import mlbook

    exp = mlbook.Experiment(versions={"a": {}})

    @exp.train
    def train(run):
        run.log(step="ten", loss=1.0)
        run.log(step=0, loss="0.5", acc=0.9)
        run.log(step=1, loss=None, acc=0.8)
        run.log(step=2, loss=[1, 2], acc=0.7)
        run.log(step=3, **{"x" * 10_000_000: 1.0, "acc": 0.6})
        run.log(step=4, loss=0.25)
        return {"acc": 0.6}
"""


def test_values_that_are_not_numbers_warn_once_per_key(project: Project) -> None:
    script(project, "E003_bad.py", BAD_VALUES)
    with pytest.warns(MlbookWarning) as caught:
        result = run_experiments(project, ["E003"], observers=[])
    assert result.runs[0].status == "completed", result.runs[0].error
    messages = [str(w.message) for w in caught]
    assert any("step='ten'" in m and "must be an integer" in m for m in messages)
    assert sum("run.log: loss" in m for m in messages) == 1  # once per key
    assert any("10000000 characters" in m for m in messages)
    assert all(len(m) < 400 for m in messages)
    series = metric_series(project, runs(project)[0])
    assert [p[:2] for p in series["acc"]] == [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6)]
    assert [p[:2] for p in series["loss"]] == [(4, 0.25)]


QUIET = """
    import os, time
    import mlbook

    exp = mlbook.Experiment(versions={"a": {}})

    @exp.train
    def train(run):
        run.log(step=0, val_acc=0.93)
        open(os.environ["MARKER"], "w").close()
        time.sleep(60)
"""


def test_a_quiet_loop_is_flushed_within_a_fraction_of_a_second(
    project: Project, marker: Path
) -> None:
    script(project, "E004_quiet.py", QUIET)
    runner = mlbook_cli(project, "run", "E004", "-q")
    try:
        wait_for(marker.exists)
        wait_for(lambda: stored_points(project, "val_acc") == 1, timeout=5)
    finally:
        runner.kill()
        runner.communicate(timeout=10)


SLOW = """
    import os, time
    import mlbook

    exp = mlbook.Experiment(versions={"first": {}, "second": {}})

    @exp.train
    def train(run):
        for step in run.iterate(range(100000)):
            run.log(step=step, loss=1.0)
            if step == 2:
                open(os.environ["MARKER"], "w").close()
            time.sleep(0.02)
"""


def test_sigterm_ends_runs_interrupted_like_ctrl_c(project: Project, marker: Path) -> None:
    script(project, "E005_slow.py", SLOW)
    runner = mlbook_cli(project, "run", "E005")
    wait_for(marker.exists)
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 143, err
    (record,) = runs(project)  # "second" never started
    assert record.version == "first" and record.status == "interrupted"
    assert "KeyboardInterrupt" in (record.error or "")


LEFTOVER = """
    import subprocess, sys
    import mlbook

    exp = mlbook.Experiment(versions={"a": {}})

    @exp.train
    def train(run):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (run.dir / "orphan.pid").write_text(str(child.pid))
        return {"acc": 1.0}
"""


def test_processes_a_run_leaves_behind_are_stopped_with_a_warning(project: Project) -> None:
    script(project, "E006_leftover.py", LEFTOVER)
    with pytest.warns(MlbookWarning, match=r"E006/a: the run left 1 process\(es\) running"):
        result = run_experiments(project, ["E006"], observers=[])
    info = result.runs[0]
    assert info.status == "completed"
    pid = int((info.dir / "orphan.pid").read_text())
    wait_for(lambda: gone(pid), timeout=10)


class ScriptedBackend:
    """A backend that replays events: the seam the runner's event handling is tested through."""

    code_from_snapshot = True
    schedules = False

    def __init__(self, events: list[Event], *later: list[Event]) -> None:
        self.batches = [events, *later]  # one per call of events()
        self.acks: list[int] = []
        self.key = -1

    def submit(self, job: Job) -> int:
        self.key = job.key
        return 0

    def events(self, timeout: float) -> list[tuple[int, list[Event]]]:
        batch = self.batches.pop(0) if self.batches else []
        return [(self.key, batch)] if batch else []

    def acknowledge(self, key: int, seq: int) -> None:
        self.acks.append(seq)

    def interrupt(self, key: int) -> None:
        pass

    def kill(self, key: int) -> None:
        pass

    def close(self) -> None:
        pass


def _series(key: str, steps: list[int]) -> Series:
    return Series(
        key,
        array.array("q", steps).tobytes(),
        array.array("d", [float(s) for s in steps]).tobytes(),
        array.array("d", [1.0] * len(steps)).tobytes(),
    )


def test_a_repeated_event_is_written_once_and_flushes_are_acknowledged(project: Project) -> None:
    script(
        project,
        "E007_scripted.py",
        """
        import mlbook
        exp = mlbook.Experiment(versions={"a": {}})

        @exp.train
        def train(run):
            pass
        """,
    )
    first = Metrics(1, [_series("loss", [0, 1, 2])])
    backend = ScriptedBackend(
        [
            first,
            first,  # resent: dropped
            Flush(2),
            Metrics(3, [_series("loss", [3, 4])]),
            Metrics(2, [_series("loss", [99])]),  # older than the last applied: dropped
            Files(4, [], []),
            End(5, "completed", {"acc": 1.0}, None),
            Exit(0),
        ]
    )
    result = run_experiments(project, ["E007"], observers=[], backend=backend)
    assert result.runs[0].status == "completed"
    assert backend.acks == [2]
    (record,) = runs(project)
    assert [p.step for p in metric_series(project, record)["loss"]] == [0, 1, 2, 3, 4]
    with Store.for_project(project) as store:
        (last_seq,) = store.db.execute("SELECT last_seq FROM attempts").fetchone()
    assert last_seq == 5  # the whole batch was applied in one transaction


class EndsSeen(RunObserver):
    """Records the end each ``after_run`` saw."""

    def __init__(self) -> None:
        self.ends: list[str] = []

    def after_run(self, info: RunInfo, store: Store | None) -> None:
        self.ends.append(info.status)


def test_a_run_is_finished_at_its_end_report_and_again_when_its_exit_changes_it(
    project: Project,
) -> None:
    script(
        project,
        "E009_scripted.py",
        """
        import mlbook
        exp = mlbook.Experiment(versions={"a": {}})

        @exp.train
        def train(run):
            pass
        """,
    )
    seen = EndsSeen()
    end = End(1, "completed", {"acc": 1.0}, None)
    result = run_experiments(
        project, ["E009"], observers=[seen], backend=ScriptedBackend([end], [Exit(0)])
    )
    assert result.runs[0].status == "completed"
    assert seen.ends == ["completed"]  # finished at the end report, once
    broken = Exit(0, None, "the child sent a malformed event (junk); it was stopped")
    result = run_experiments(
        project, ["E009"], observers=[seen], backend=ScriptedBackend([end], [broken])
    )
    assert seen.ends == ["completed", "completed", "failed"]
    (info,) = result.runs
    assert info.status == "failed" and info.error is not None and "malformed" in info.error
    with Store.for_project(project) as store:
        assert get_run(store, info.run_id).status == "failed"


def test_a_child_that_sends_garbage_is_stopped_and_failed(project: Project) -> None:
    script(
        project,
        "E008_garbage.py",
        """
        import os, time
        import mlbook
        exp = mlbook.Experiment(versions={"a": {}})

        @exp.train
        def train(run):
            fd = run._outbox._channel.events_fd
            os.write(fd, (5).to_bytes(4, "little") + b"\\xc1junk")
            time.sleep(60)
        """,
    )
    result = run_experiments(project, ["E008"], observers=[])
    info = result.runs[0]
    assert info.status == "failed"
    assert info.error is not None and "malformed event" in info.error


def test_frames_split_anywhere_decode_the_same() -> None:
    events: list[Event] = [
        Metrics(1, [_series("loss", [0, 1])]),
        Flush(2),
        End(3, "completed", {"acc": 0.5}, None),
    ]
    data = b"".join(encode_event(e) for e in events)
    for cut in range(1, len(data)):
        reader = FrameReader()
        got = [*reader.feed(data[:cut]), *reader.feed(data[cut:])]
        assert got == events
        assert reader.pending == 0


finite = st.floats(allow_nan=True, allow_infinity=True)


@settings(deadline=None, max_examples=200)
@given(
    steps=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=50)
    | st.builds(
        lambda a, s, n: [a + s * i for i in range(n)],
        st.integers(-1000, 1000),
        st.integers(-5, 5),
        st.integers(1, 50),
    ),
    data=st.data(),
)
def test_chunks_round_trip(steps: list[int], data: st.DataObject) -> None:
    values = data.draw(st.lists(finite, min_size=len(steps), max_size=len(steps)))
    times = [1.8e9 + i * 0.01 for i in range(len(steps))]
    chunk = chunk_of("k", steps, values, times)
    assert chunk is not None
    got_steps, got_values, got_times = decode_points(
        chunk.count,
        chunk.first_step,
        chunk.stride,
        chunk.steps,
        chunk.values,
        chunk.first_time,
        chunk.times,
    )
    assert got_steps == steps
    assert [v if v == v else "nan" for v in got_values] == [v if v == v else "nan" for v in values]
    assert all(abs(a - b) < 1e-3 for a, b in zip(got_times, times, strict=True))
    real = [v for v in values if not math.isnan(v)]
    assert chunk.min == (min(real) if real else None)
    assert chunk.max == (max(real) if real else None)


def test_regular_steps_cost_twelve_bytes_a_point() -> None:
    count = 10_000
    chunk = chunk_of("k", list(range(count)), [0.5] * count, [1.8e9] * count)
    assert chunk is not None and chunk.steps is None and chunk.stride == 1
    assert len(chunk.values) + len(chunk.times) == 12 * count
    assert pack_series("k", b"", b"", b"") is None


def test_an_old_store_is_migrated_with_its_metrics(tmp_path: Path) -> None:
    from mlbook.experiments.schema import MIGRATIONS

    path = tmp_path / "runs.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        assert isinstance(migration, str)
        db.executescript(migration)
    db.execute("PRAGMA user_version = 2")
    db.execute(
        "INSERT INTO runs (pk, id, experiment, version, mode, status, created)"
        " VALUES (1, 'r1', 'E1', 'a', 'run', 'completed', 0)"
    )
    rows = [(1, "loss", step, 1.0 / (step + 1), 100.0 + step) for step in range(5000)]
    rows += [(1, "acc", step, 0.5, 100.0) for step in (0, 10, 20)]
    db.execute("BEGIN")
    db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    db.close()
    with Store.open(path) as store:
        series = metric_series(store, "r1")
        summary = metric_summaries(store, "r1")
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
    assert "metrics" not in tables
    assert [p[:2] for p in series["loss"]] == [(s, 1.0 / (s + 1)) for s in range(5000)]
    assert [p.time for p in series["loss"][:3]] == [100.0, 101.0, 102.0]
    assert [p.step for p in series["acc"]] == [0, 10, 20]
    assert summary["loss"].count == 5000 and summary["loss"].max == 1.0
    assert metric_series(path, "r1", ["loss"], start=10, end=12)["loss"][0].step == 10


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs (needs root, as CI has); skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


FILLS_DISK = """
    import os
    import mlbook

    exp = mlbook.Experiment(versions={"a": {}})

    @exp.train
    def train(run):
        run.log(step=0, loss=1.0)
        run.flush()
        with open(run.dir / "filler.bin", "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
"""


def test_a_full_disk_is_recorded_and_read_only_commands_still_work(full_disk: Path) -> None:
    from mlbook.scaffold import init_project

    project = init_project(full_disk / "proj").project
    script(project, "E009_full.py", FILLS_DISK)
    runner = mlbook_cli(project, "run", "E009")
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 1, err
    (record,) = runs(project)
    assert record.status == "failed"
    assert "No space left on device" in (record.error or ""), record.error
    assert "Traceback" not in err.decode()
    # the disk is still full: reading commands open the store read-only
    for args in (["runs"], ["show", record.id], ["runs", "--format", "json"]):
        done = subprocess.run(
            [sys.executable, "-m", "mlbook", *args], cwd=project.root, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()
        assert record.id in done.stdout.decode()


def test_a_read_only_store_refuses_writes_in_one_line(project: Project) -> None:
    with Store.for_project(project) as store:
        store.ensure_experiment("E1")
    with (
        Store.for_project(project, readonly=True) as store,
        pytest.raises(StoreError, match="opened read-only: recording experiment E1 is not allowed"),
    ):
        store.ensure_experiment("E1")


def test_mlbook_runs_on_a_project_without_runs_creates_nothing(project: Project) -> None:
    assert mlbook.runs(project) == []
    assert not (project.state_dir / "runs.sqlite").exists()
