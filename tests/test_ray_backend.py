"""The ray backend on a real Ray head (one per session, loopback, 2 CPUs): the same rows as
the local backend, a lost worker retried as a second attempt without duplicate rows, edits
after submission not run, cancel recorded and not retried, limits refused in one line, and a
driver killed with kill -9 leaving the store consistent."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from support import gone, mlbook_cli, script, wait_for

from mlbook.cli import cli
from mlbook.config import parse_config
from mlbook.errors import ConfigError
from mlbook.experiments.query import get_run, metric_series, run_attempts
from mlbook.experiments.ray_worker import pack_dir, unpack_zip
from mlbook.experiments.runner import RunInfo, run_experiments
from mlbook.project import Project

# Ray reads these when it is imported: the head and every driver of this session bind
# loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's switch for that) and use one token
_RAY_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}
os.environ.update(_RAY_ENV)
ray = pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    """``ray start --head --num-cpus=2`` on loopback with its own temp dir, ports and token."""
    base = Path(tempfile.mkdtemp(prefix="mlbray-"))
    port = _free_port()
    os.environ.update(_RAY_ENV)  # the drivers (this process and its children) use the token
    log = open(base / "head.log", "wb")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--temp-dir={base}",
            "--include-dashboard=false",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        process_group=0,
    )
    try:
        wait_for(lambda: b"Ray runtime started" in (base / "head.log").read_bytes(), 120)
        yield f"127.0.0.1:{port}"
    finally:
        for signum, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(head.pid, signum)
            except ProcessLookupError:
                break
            try:
                head.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever the head left in its group
        log.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)


STEADY = """
    import mlbook

    exp = mlbook.Experiment(dataset="tiny", versions={"a": {"n": 40}, "b": {"n": 25}})

    @exp.train
    def train(run):
        train = run.data("train")
        for step in range(run.params.n):
            run.log(step=step, loss=1.0 / (step + 1), seen=float(len(train)))
        (run.dir / "notes.txt").write_text(f"{run.params.n} steps\\n")
        print("trained", run.params.n)
        return {"acc": run.params.n / 100}
"""


def _dataset(project: Project) -> None:
    data = project.datasets_dir / "tiny"
    data.mkdir()
    lines = [
        {"id": "1", "file": "1.jpg", "labels": ["cat"], "split": "train"},
        {"id": "2", "file": "2.jpg", "labels": ["dog"], "split": "train"},
        {"id": "3", "file": "3.jpg", "labels": ["dog"], "split": "test"},
    ]
    (data / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _attempts(project: Project, run_id: str) -> list[tuple[int, str, int | None]]:
    return [(a.attempt, a.host, a.pid) for a in run_attempts(project, run_id)]


def _rows(project: Project, run_id: str) -> dict[str, list[tuple[int, float]]]:
    series = metric_series(project, run_id)
    return {key: [(p.step, p.value) for p in points] for key, points in series.items()}


@pytest.mark.slow
def test_both_backends_write_the_same_rows(project: Project, ray_head: str) -> None:
    _dataset(project)
    script(project, "E001_steady.py", STEADY)
    local = run_experiments(project, ["E001"], backend="local")
    remote = run_experiments(project, ["E001"], backend="ray", address=ray_head)
    assert [r.status for r in local.runs] == ["completed", "completed"], local.runs[0].error
    assert [r.status for r in remote.runs] == ["completed", "completed"], remote.runs[0].error

    def by_version(runs: list[RunInfo]) -> list[RunInfo]:  # Ray runs both at once
        return sorted(runs, key=lambda info: info.version)

    for here, there in zip(by_version(local.runs), by_version(remote.runs), strict=True):
        assert (here.version, here.metrics) == (there.version, there.metrics)
        assert _rows(project, here.run_id) == _rows(project, there.run_id)
        record = get_run(project, there.run_id)
        assert record.commit_before and record.commit_after
        # the outputs came back into Models/outputs/<ID>/<version>/<run-id>/
        assert (there.dir / "notes.txt").read_text() == f"{there.params['n']} steps\n"
        assert "trained" in (there.dir / "output.log").read_text()
        assert [(a, h) for a, h, _ in _attempts(project, there.run_id)] == [
            (1, socket.gethostname())
        ]
        assert there.files == here.files == ["Models/E001_steady.py"]


LOST = """
    import os, signal, time
    import mlbook

    exp = mlbook.Experiment(versions={"a": {"marker": ""}})

    @exp.train
    def train(run):
        for step in range(30):
            run.log(step=step, loss=float(step))
        run.flush()  # committed on the driver before the worker dies
        if not os.path.exists(run.params.marker):
            open(run.params.marker, "w").close()
            os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker dies mid-run
            time.sleep(60)
        for step in range(30, 50):
            run.log(step=step, loss=float(step))
        return {"steps": 50}
"""


@pytest.mark.slow
def test_a_lost_worker_is_retried_as_a_second_attempt_without_duplicates(
    project: Project, ray_head: str, tmp_path: Path
) -> None:
    script(project, "E002_lost.py", LOST)
    marker = tmp_path / "died-once"
    with pytest.warns(Warning, match="Ray worker of attempt 1 was lost"):
        result = run_experiments(
            project, ["E002"], backend="ray", address=ray_head, sets={"marker": str(marker)}
        )
    info = result.runs[0]
    assert info.status == "completed", info.error
    assert marker.exists()
    attempts = _attempts(project, info.run_id)
    assert [a for a, _, _ in attempts] == [1, 2]
    assert all(host == socket.gethostname() for _, host, _ in attempts)
    assert attempts[0][2] != attempts[1][2]  # two worker processes
    steps = [step for step, _ in _rows(project, info.run_id)["loss"]]
    assert steps == list(range(50))  # the second attempt's points, once each
    shown = CliRunner().invoke(cli, ["-C", str(project.root), "show", info.run_id])
    assert shown.exit_code == 0, shown.output
    host = socket.gethostname()
    expected = f"attempts: 1 on {host} (pid {attempts[0][2]}), 2 on {host} (pid {attempts[1][2]})"
    assert expected in shown.output


@pytest.mark.slow
def test_no_retries_left_fails_the_run_in_one_line(
    project: Project, ray_head: str, tmp_path: Path
) -> None:
    script(project, "E002_lost.py", LOST)
    (project.root / "mlbook.toml").write_text(
        (project.root / "mlbook.toml").read_text() + "\n[ray]\nretries = 0\n"
    )
    project = Project.open(project.root)
    marker = tmp_path / "died-once"
    result = run_experiments(
        project, ["E002"], backend="ray", address=ray_head, sets={"marker": str(marker)}
    )
    info = result.runs[0]
    assert info.status == "failed"
    assert info.error is not None
    assert info.error.startswith("the Ray worker was lost after 1 attempt(s): ")
    assert "\n" not in info.error
    assert [a for a, _, _ in _attempts(project, info.run_id)] == [1]


GATED = """
    import os, time
    import mlbook

    VALUE = 1

    exp = mlbook.Experiment(versions={"a": {"gate": ""}, "b": {"gate": ""}})

    @exp.train
    def train(run):
        while not os.path.exists(run.params.gate):
            time.sleep(0.05)
        run.log(step=0, value=VALUE)
        return {"value": VALUE}
"""


@pytest.mark.slow
def test_an_edit_after_submission_does_not_change_what_runs(
    project: Project, ray_head: str, tmp_path: Path
) -> None:
    path = script(project, "E003_gated.py", GATED)
    gate = tmp_path / "gate"
    proc = mlbook_cli(
        project, "run", "E003", "--address", ray_head, "-j", "2", "--set", f"gate={gate}"
    )
    try:
        wait_for(lambda: _running(project) == 2, 60)
        path.write_text(path.read_text().replace("VALUE = 1", "VALUE = 2"))
        gate.touch()
        _, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == 0, err.decode()
    for run_id in _run_ids(project):
        assert get_run(project, run_id).metrics == {"value": 1.0}
        assert _rows(project, run_id) == {"value": [(0, 1.0)]}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _run_ids(project: Project) -> list[str]:
    path = project.state_dir / "runs.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        return [row[0] for row in db.execute("SELECT id FROM runs ORDER BY pk")]


def _running(project: Project) -> int:
    """Runs whose attempt reached a worker (the Ray backend records the worker's pid)."""
    path = project.state_dir / "runs.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            row = db.execute("SELECT count(*) FROM attempts WHERE pid IS NOT NULL").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0])


SLOW = """
    import time
    import mlbook

    exp = mlbook.Experiment(versions={"a": {}})

    @exp.train
    def train(run):
        for step in range(100000):
            run.log(step=step, loss=float(step))
            if step % 10 == 0:
                run.flush()
            time.sleep(0.02)
"""


@pytest.mark.slow
def test_ctrl_c_cancels_the_task_records_interrupted_and_does_not_retry(
    project: Project, ray_head: str
) -> None:
    script(project, "E004_slow.py", SLOW)
    proc = mlbook_cli(project, "run", "E004", "--backend", "ray", "--address", ray_head)
    try:
        wait_for(lambda: _points(project) > 20, 60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 130, err.decode()
    (run_id,) = _run_ids(project)
    record = get_run(project, run_id)
    assert record.status == "interrupted"
    assert [a for a, _, _ in _attempts(project, run_id)] == [1]
    worker = _attempts(project, run_id)[0][2]
    wait_for(lambda: gone(worker) or _not_running(worker), 30)


def _not_running(pid: int) -> bool:
    """The worker process may be reused by Ray: then it no longer runs the task's child."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return children.read_text().strip() == ""
    except OSError:
        return True


def _points(project: Project) -> int:
    path = project.state_dir / "runs.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            row = db.execute("SELECT sum(count) FROM metric_summary").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0] or 0)


@pytest.mark.slow
def test_the_driver_killed_leaves_the_store_consistent_and_the_run_crashed(
    project: Project, ray_head: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(project, "E004_slow.py", SLOW)
    proc = mlbook_cli(project, "run", "E004", "--address", ray_head)
    try:
        wait_for(lambda: _points(project) > 20, 60)
        proc.kill()  # kill -9: no handler runs
        proc.wait(10)
    finally:
        _stop(proc)
    (run_id,) = _run_ids(project)
    worker = _attempts(project, run_id)[0][2]
    path = project.state_dir / "runs.sqlite"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert get_run(project, run_id).status == "crashed"
    monkeypatch.chdir(project.root)
    listed = CliRunner().invoke(cli, ["runs", "--format", "json"], catch_exceptions=False)
    assert json.loads(listed.output)[0]["status"] == "crashed"
    # Ray ends the job's tasks when its driver is gone; the child dies with its worker
    wait_for(lambda: gone(worker) or _not_running(worker), 60)


FLUSHED = """
    import os
    import mlbook

    exp = mlbook.Experiment(versions={"a": {"marker": ""}})

    @exp.train
    def train(run):
        for step in range(10_000_000):
            run.log(step=step, loss=float(step))
            if step % 500 == 499:
                run.flush()  # returns once the driver has committed the points
                with open(run.params.marker + ".tmp", "w") as f:
                    f.write(str(step + 1))
                os.replace(run.params.marker + ".tmp", run.params.marker)
"""


@pytest.mark.slow
def test_a_flush_on_ray_is_committed_when_it_returns(
    project: Project, ray_head: str, tmp_path: Path
) -> None:
    script(project, "E005_flushed.py", FLUSHED)
    marker = tmp_path / "flushed"

    def flushed() -> int:
        try:
            return int(marker.read_text())
        except (OSError, ValueError):
            return 0

    proc = mlbook_cli(project, "run", "E005", "--address", ray_head, "--set", f"marker={marker}")
    try:
        wait_for(lambda: flushed() >= 3000, 90)
        proc.kill()  # kill -9 of the driver right after a flush returned
        proc.wait(10)
    finally:
        _stop(proc)
    time.sleep(1)  # a flush the driver acknowledged just before dying may still be told
    assert _points(project) >= flushed() >= 3000


@pytest.mark.slow
def test_a_snapshot_over_the_limit_is_refused_in_one_line(
    project: Project, ray_head: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(project, "E001_steady.py", STEADY.replace('dataset="tiny", ', ""))
    config = project.root / "mlbook.toml"
    config.write_text(config.read_text() + "\n[ray]\nmax_snapshot_size = 100\n")
    monkeypatch.chdir(project.root)
    result = subprocess.run(
        [sys.executable, "-m", "mlbook", "run", "E001", "-v", "a", "--address", ray_head],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "max_snapshot_size" in line]
    assert len(lines) == 1, result.stderr
    assert " is " in lines[0] and "over [ray] max_snapshot_size (100 bytes)" in lines[0]
    assert "raise max_snapshot_size in mlbook.toml" in lines[0]
    (run_id,) = _run_ids(project)
    record = get_run(project, run_id)
    assert record.status == "failed"
    assert record.error is not None and "\n" not in record.error


@pytest.mark.slow
def test_a_dataset_over_the_limit_is_refused_naming_the_option(
    project: Project, ray_head: str
) -> None:
    _dataset(project)
    script(project, "E001_steady.py", STEADY)
    config = project.root / "mlbook.toml"
    config.write_text(config.read_text() + "\n[ray]\nmax_data_size = 10\n")
    project = Project.open(project.root)
    result = run_experiments(project, ["E001"], versions=["a"], backend="ray", address=ray_head)
    error = result.runs[0].error
    size = (project.datasets_dir / "tiny" / "records.jsonl").stat().st_size
    assert error == (
        f"E001/a: dataset Datasets/tiny is {size} bytes, over [ray] max_data_size (10 bytes); "
        'raise max_data_size, or set [ray] data = "shared" when every node sees this path'
    )


@pytest.mark.slow
def test_test_mode_is_refused_with_what_to_do(project: Project, ray_head: str) -> None:
    script(project, "E001_steady.py", STEADY.replace('dataset="tiny", ', ""))
    result = run_experiments(
        project, ["E001"], versions=["a"], mode="test", backend="ray", address=ray_head
    )
    assert result.runs[0].status == "failed"
    assert result.runs[0].error == (
        "E001/a: --backend ray runs the files of each run's before commit, and test mode "
        "records none; test with the local backend (mlbook run --mode test)"
    )


@pytest.mark.slow
def test_outputs_over_the_limit_stay_on_the_worker_with_one_warning(
    project: Project, ray_head: str
) -> None:
    _dataset(project)
    script(project, "E001_steady.py", STEADY)
    config = project.root / "mlbook.toml"
    config.write_text(config.read_text() + "\n[ray]\nmax_output_size = 10\n")
    project = Project.open(project.root)
    with pytest.warns(Warning, match=r"E001/a: the run's outputs \(\d+ bytes\) exceed \[ray\]"):
        result = run_experiments(project, ["E001"], versions=["a"], backend="ray", address=ray_head)
    info = result.runs[0]
    assert info.status == "completed", info.error
    assert not (info.dir / "notes.txt").exists()
    assert _rows(project, info.run_id)["loss"][-1] == (39, 1 / 40)


@pytest.mark.slow
def test_without_an_address_a_local_head_is_started_and_stopped(
    project: Project, tmp_path: Path
) -> None:
    _dataset(project)
    script(project, "E001_steady.py", STEADY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    before = _ray_daemons()
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "run", "E001", "--backend", "ray", "-v", "a"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 run(s): 1 completed" in done.stdout
    (run_id,) = _run_ids(project)
    assert _rows(project, run_id)["loss"][0] == (0, 1.0)
    # the command stopped the head it started: no Ray daemon of it is left
    wait_for(lambda: _ray_daemons() <= before, 30)


def _ray_daemons() -> set[int]:
    """Process IDs of the Ray daemons (GCS server, raylet) on this machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if command.endswith((b"/gcs_server", b"/raylet")):
            found.add(int(entry.name))
    return found


# -- no cluster needed ----------------------------------------------------------------------


def test_ray_settings_are_checked_when_read() -> None:
    config = parse_config('[ray]\naddress = "10.0.0.5:6379"\nnum_gpus = 1\ndata = "shared"\n')
    assert (config.ray.address, config.ray.num_gpus, config.ray.data) == (
        "10.0.0.5:6379",
        1,
        "shared",
    )
    assert config.ray.size("max_snapshot_size") == 100_000_000
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: ray.max_output_size: expected a size"):
        parse_config('[ray]\nmax_output_size = "lots"\n')
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: ray.retries: expected a whole number"):
        parse_config("[ray]\nretries = -1\n")
    with pytest.raises(ConfigError, match="data"):
        parse_config('[ray]\ndata = "copy"\n')


def test_pack_and_unpack_round_trip_and_refuse_escapes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub dir").mkdir(parents=True)
    (source / "sub dir" / "é.txt").write_text("x")
    (source / "a.bin").write_bytes(b"\0" * 10)
    packed, total = pack_dir(source, 100)
    assert packed is not None and total == 11
    unpack_zip(packed, tmp_path / "out")
    assert (tmp_path / "out" / "sub dir" / "é.txt").read_text() == "x"
    assert pack_dir(source, 10) == (None, 11)
    evil = BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../escape.txt", "no")
    with pytest.raises(ValueError, match="leaves the target directory"):
        unpack_zip(evil.getvalue(), tmp_path / "target")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "target").exists()  # nothing half-written


@given(st.lists(st.text("ab./\\:", min_size=1, max_size=12), min_size=1, max_size=4, unique=True))
def test_unpack_never_writes_outside_its_target(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as base:
        root = Path(base)
        target = root / "a" / "target"
        buffer = BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in names:
                archive.writestr(name, "x")
        with contextlib.suppress(ValueError, OSError):
            unpack_zip(buffer.getvalue(), target)
        outside = [p for p in root.rglob("*") if p.is_file() and target not in p.parents]
        assert outside == []


def test_unknown_backend_is_one_line(project: Project) -> None:
    from mlbook.errors import ExperimentError

    with pytest.raises(
        ExperimentError, match=r'unknown runner backend .slurm.; use "local" or "ray"'
    ):
        run_experiments(project, backend="slurm")


def test_time_is_not_spent_importing_ray_for_local_runs() -> None:
    code = "import mlbook.experiments.runner, sys; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
