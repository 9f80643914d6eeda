"""`mlbook import mlflow` against stores that MLflow itself writes (sqlite and file stores)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.errors import TransferError
from mlbook.experiments.query import metric_series, run_artifacts, runs
from mlbook.project import Project
from mlbook.provenance.journal import read_journal
from mlbook.transfer.mlflow_import import import_mlflow, resolve_tracking_uri

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("mlflow") is None, reason="needs mlflow (extra mlflow)"
    ),
]

WRITER = """
import json, logging, sys
logging.disable(logging.WARNING)
import mlflow
from mlflow import MlflowClient

uri, out = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("digits cnn")
with mlflow.start_run(run_name="wide lr=0.01") as run:
    mlflow.log_params({"lr": "0.01", "width": 64, "optimizer": "adam", "seed": "007"})
    for step in range(25):
        mlflow.log_metrics({"loss": 1 / (step + 1), "acc": step / 25}, step=step * 10)
    mlflow.set_tag("team", "vision")
    mlflow.set_tag("mlflow.source.git.commit", "0123456789abcdef0123456789abcdef01234567")
    mlflow.log_text("hello", "notes/readme.txt")
    mlflow.log_dict({"a": 1}, "config.json")
with mlflow.start_run(run_name="broken"):
    mlflow.log_metric("loss", float("nan"), step=0)
    mlflow.log_metric("loss", 2.5, step=1)
    mlflow.end_run(status="FAILED")
mlflow.set_experiment("other")
with mlflow.start_run(run_name="killed"):
    mlflow.log_metric("x", 1.0)
    mlflow.end_run(status="KILLED")
client = MlflowClient(uri)
exp = client.get_experiment_by_name("digits cnn")
client.create_run(exp.experiment_id, run_name="still going")
found = {}
for experiment in client.search_experiments():
    for r in client.search_runs([experiment.experiment_id]):
        found[r.info.run_id] = {
            "experiment": experiment.name,
            "name": r.info.run_name,
            "status": r.info.status,
            "params": r.data.params,
            "tags": r.data.tags,
            "series": {
                key: [
                    [m.step, m.value, m.timestamp]
                    for m in client.get_metric_history(r.info.run_id, key)
                ]
                for key in r.data.metrics
            },
        }
with open(out, "w") as handle:
    json.dump(found, handle)
"""


def _write_store(directory: Path, uri: str) -> dict[str, Any]:
    directory.mkdir(parents=True)
    expected = directory / "expected.json"
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    done = subprocess.run(
        [sys.executable, "-c", WRITER, uri, str(expected)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(expected.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, Any]]]:
    """Two MLflow stores made by MLflow: uri -> what MLflow reads back from it."""
    base = tmp_path_factory.mktemp("mlflow")
    sqlite = f"sqlite:///{base / 'sq' / 'mlflow.db'}"
    files = (base / "fs" / "mlruns").as_uri()
    return {
        "sqlite": (sqlite, _write_store(base / "sq", sqlite)),
        "file": (files, _write_store(base / "fs", files)),
    }


def _finished(expected: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in expected.items() if v["status"] != "RUNNING"}


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_import_keeps_series_params_status_tags_artifacts(
    project: Project, stores: dict[str, tuple[str, dict[str, Any]]], kind: str
) -> None:
    uri, expected = stores[kind]
    result = import_mlflow(project, uri)
    finished = _finished(expected)
    assert len(result.added) == len(finished) == 3
    assert result.experiments == {"digits cnn": "E001", "other": "E002"}
    [running] = [k for k, v in expected.items() if v["status"] == "RUNNING"]
    assert [(u.run, u.what) for u in result.unmapped] == [(running, "run")]
    assert "status RUNNING" in result.unmapped[0].why
    assert result.artifacts == 2

    by_mlflow = {r.id.rsplit("-", 1)[1]: r for r in runs(project)}
    assert set(by_mlflow) == set(finished)
    statuses = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted"}
    for mlflow_id, want in finished.items():
        record = by_mlflow[mlflow_id]
        assert record.status == statuses[want["status"]]
        series = metric_series(project, record)
        assert set(series) == set(want["series"])
        for key, points in want["series"].items():
            got = [(p.step, p.value, round(p.time * 1000)) for p in series[key]]
            assert len(got) == len(points)
            for (step, value, stamp), (w_step, w_value, w_stamp) in zip(got, points, strict=True):
                assert step == w_step and stamp == w_stamp
                assert value == w_value or (math.isnan(value) and math.isnan(w_value))
        info = json.loads((project.root / record.outputs / "mlflow.json").read_text())
        assert info["mlflow_run_id"] == mlflow_id and info["tracking_uri"] == uri
        assert info["tags"] == dict(sorted(want["tags"].items()))

    wide = next(r for r in by_mlflow.values() if r.version == "wide-lr=0.01")
    assert wide.params == {"lr": 0.01, "width": 64, "optimizer": "adam", "seed": "007"}
    assert wide.metrics == {"loss": 1 / 25, "acc": 24 / 25}
    assert wide.commit_before == "0123456789abcdef0123456789abcdef01234567"
    readme = project.root / wide.outputs / "artifacts" / "notes" / "readme.txt"
    assert readme.read_text() == "hello"
    paths = {a.path.rsplit("/artifacts/", 1)[-1] for a in run_artifacts(project, wide.id)}
    assert {"notes/readme.txt", "config.json"} <= paths
    broken = next(r for r in by_mlflow.values() if r.version == "broken")
    assert math.isnan(metric_series(project, broken)["loss"][0].value)

    entries = {e.id: e for e in read_journal(project.journal_path)}
    assert entries["E001"].title == "digits cnn"
    assert {s.run_id for s in entries["E001"].steps} == {
        r.id for r in by_mlflow.values() if r.experiment == "E001"
    }

    again = import_mlflow(project, uri)
    assert again.added == [] and sorted(again.present) == sorted(result.added)
    assert again.experiments == result.experiments


def test_as_an_experiment_id_and_the_command_line(
    project: Project, stores: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    uri, _ = stores["sqlite"]
    with pytest.raises(TransferError, match=r"--as E020: 2 MLflow experiments have runs"):
        import_mlflow(project, uri, as_id="E020")
    with pytest.raises(TransferError, match="does not match"):
        import_mlflow(project, uri, as_id="nope!")
    with pytest.raises(TransferError, match="no MLflow experiment 'missing' \\(there are: "):
        import_mlflow(project, uri, experiments=["missing"])
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["-C", str(project.root), "import", "mlflow", uri, "-e", "digits cnn", "--as", "E020"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"imported 2 run(s) from {uri} ('digits cnn' -> E020), 2 artifact file(s)\n"
    )
    assert "status RUNNING: import it again when it has ended" in result.stdout
    listed = runner.invoke(cli, ["-C", str(project.root), "runs"])
    assert listed.exit_code == 0
    assert "E020" in listed.stdout and "acc=0.96" in listed.stdout


def test_stores_that_cannot_be_opened_are_one_line(project: Project, tmp_path: Path) -> None:
    with pytest.raises(TransferError) as caught:
        import_mlflow(project, str(tmp_path / "nothing"))
    assert str(caught.value) == (
        f"{tmp_path / 'nothing'}: no MLflow tracking store there; "
        "give its directory (mlruns) or database file"
    )
    not_mlflow = tmp_path / "runs.sqlite"
    not_mlflow.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TransferError) as caught:
        import_mlflow(project, f"sqlite:///{not_mlflow}")
    message = str(caught.value)
    assert message.startswith(f"sqlite:///{not_mlflow}: cannot open the MLflow tracking store (")
    assert "\n" not in message
    with pytest.raises(TransferError, match="no MLflow database there"):
        resolve_tracking_uri(f"sqlite:///{tmp_path / 'missing.db'}")
    result = CliRunner().invoke(
        cli, ["-C", str(project.root), "import", "mlflow", str(tmp_path / "nothing")]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {tmp_path / 'nothing'}: no MLflow tracking store there; "
        "give its directory (mlruns) or database file\n"
    )
