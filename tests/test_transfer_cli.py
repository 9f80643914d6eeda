"""The transfer commands: exact output lines, one-line errors, a pipe between two processes,
and an unpack while `mlbook run` writes to the same store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from transfer_helpers import Clones, add_experiment, git, make_clones, run, snapshot_of

from mlbook.cli import cli
from mlbook.experiments.query import metric_series, runs
from mlbook.project import Project


@pytest.fixture
def clones(tmp_path: Path) -> Clones:
    return make_clones(tmp_path)


def mlbook(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-C", str(project.root), *args])
    return result.exit_code, result.stdout, result.stderr


def test_pack_then_unpack_twice(clones: Clones, tmp_path: Path) -> None:
    small, big = run(clones.a, "E001")
    pack = tmp_path / "runs.mlbook"
    code, out, err = mlbook(clones.a, "pack", "-o", str(pack), "--outputs", "none")
    assert (code, err) == (0, "")
    size = pack.stat().st_size
    shown = f"{size / 1000:.1f} KB"
    assert out == f"packed 2 run(s), 0 output file(s), 4 commit ref(s) into {pack} ({shown})\n"
    key = tmp_path / "a.pub"
    assert mlbook(clones.a, "key", "--export", str(key))[0] == 0

    code, out, err = mlbook(clones.b, "unpack", str(pack), "--trust-key", str(key))
    assert (code, err) == (0, "")
    assert out.startswith(f"added 2 run(s) from {pack} (project a, signed by SHA256:")
    assert out.endswith("): 0 output file(s), 4 commit ref(s)\n")
    code, out, _ = mlbook(clones.b, "unpack", str(pack), "--trust-key", str(key))
    assert (code, out) == (0, f"nothing to add: the 2 run(s) of {pack} are here already\n")

    code, out, _ = mlbook(clones.b, "runs", "--format", "csv")
    assert small in out and big in out


def test_errors_are_one_line(clones: Clones, tmp_path: Path) -> None:
    run(clones.a, "E001")
    pack = tmp_path / "runs.mlbook"
    assert mlbook(clones.a, "pack", "-o", str(pack))[0] == 0
    code, out, err = mlbook(clones.b, "unpack", str(pack))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {pack}: signed by key SHA256:")
    assert err.count("\n") == 1
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    code, _, err = mlbook(clones.b, "unpack", str(pack), "--trust")
    assert code == 1 and err.count("\n") == 1
    assert "refused, nothing was written" in err or "truncated or damaged" in err
    code, _, err = mlbook(clones.b, "unpack", str(tmp_path / "missing.mlbook"))
    assert (code, err) == (
        1,
        f"error: {tmp_path / 'missing.mlbook'}: cannot open the pack (No such file or directory)\n",
    )
    code, _, err = mlbook(clones.b, "pack", "-o", str(tmp_path / "x.mlbook"))
    assert (code, err) == (1, "error: no finished runs to pack; list runs with `mlbook runs`\n")


def test_a_pipe_between_two_processes(clones: Clones) -> None:
    ran = run(clones.a, "E001")
    python = sys.executable
    done = subprocess.run(
        f"{python} -m mlbook -C {clones.a.root} pack -q -o - "
        f"| {python} -m mlbook -C {clones.b.root} unpack --trust --format json -",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert sorted(json.loads(done.stdout)["added"]) == sorted(ran)
    assert snapshot_of(clones.a) == snapshot_of(clones.b)


LONG = """import time
import mlbook

exp = mlbook.Experiment(title="long", versions={"only": {}})


@exp.train
def train(run, model):
    for step in range(300):
        run.log(step=step, loss=1.0 / (step + 1))
        if step % 20 == 0:
            run.flush()
        time.sleep(0.01)
    return {"loss": 0.0}
"""


@pytest.mark.slow
def test_unpack_while_a_run_writes_to_the_store(clones: Clones, tmp_path: Path) -> None:
    a, b = clones.a, clones.b
    ran_a = run(a, "E001")
    pack = tmp_path / "a.mlbook"
    assert mlbook(a, "pack", "-o", str(pack))[0] == 0
    add_experiment(b, "E002", "long")
    (b.models_dir / "E002_long.py").write_text(LONG)
    git(b.root, "commit", "-qam", "long")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    writer = subprocess.Popen(
        [sys.executable, "-m", "mlbook", "run", "E002", "-q"],
        cwd=b.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not [r for r in runs(b) if r.status == "running"]:
            assert time.monotonic() < deadline, "the run never started"
            assert writer.poll() is None
            time.sleep(0.05)
        code, out, err = mlbook(b, "unpack", str(pack), "--trust")
        assert (code, err) == (0, ""), err
        assert out.startswith("added 2 run(s)")
        running = [r for r in runs(b) if r.experiment == "E002"]
        assert running and running[0].status == "running"  # it really was writing meanwhile
    finally:
        _, err_text = writer.communicate(timeout=120)
    assert writer.returncode == 0, err_text
    [long_run] = [r for r in runs(b) if r.experiment == "E002"]
    assert long_run.status == "completed"
    assert len(metric_series(b, long_run)["loss"]) == 300
    assert {r.id for r in runs(b)} >= set(ran_a)


def test_done_when_two_clones_list_the_same_runs(clones: Clones, tmp_path: Path) -> None:
    """The issue's "done when", through the commands: runs in both clones, packs both
    ways, the same runs with equal series, a second unpack adds nothing, a tampered
    pack is refused."""
    a, b = clones.a, clones.b
    run(a, "E001")
    add_experiment(b, "E002", "second")
    run(b, "E002")
    to_b, to_a = tmp_path / "a.mlbook", tmp_path / "b.mlbook"
    assert mlbook(a, "pack", "-o", str(to_b))[0] == 0
    assert mlbook(b, "unpack", "--trust", str(to_b))[0] == 0
    assert mlbook(b, "pack", "-o", str(to_a))[0] == 0
    assert mlbook(a, "unpack", "--trust", str(to_a))[0] == 0

    def listing(project: Project) -> dict[str, object]:
        code, out, _ = mlbook(project, "runs", "--format", "json")
        assert code == 0
        shown = {}
        for record in json.loads(out):
            code, detail, _ = mlbook(project, "show", record["id"], "--format", "json")
            assert code == 0
            data = json.loads(detail)
            shown[record["id"]] = (data["status"], data["metrics"], data["series"])
        return shown

    assert listing(a) == listing(b) and len(listing(a)) == 4
    code, out, _ = mlbook(b, "unpack", "--trust", str(to_b))
    assert (code, out) == (0, f"nothing to add: the 2 run(s) of {to_b} are here already\n")
    with tarfile.open(to_b) as tar:
        at = tar.getmember("manifest.json").offset_data + 40
    data = bytearray(to_b.read_bytes())
    data[at] ^= 0x01
    to_b.write_bytes(bytes(data))
    code, _, err = mlbook(b, "unpack", "--trust", str(to_b))
    assert code == 1 and "refused, nothing was written" in err
