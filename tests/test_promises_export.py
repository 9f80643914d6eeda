"""Export on purpose: the best run by the selection metric, replacing only with --force,
ONNX from the model's own input, and bundles that survive a commit and a clone.

The selection is tested on a real store with runs written through its API (fast);
the exports are real (a clean child process verifies each one), so they are slow.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.deploy.selection import select_run
from mlbook.errors import ExportError
from mlbook.experiments.runner import run_experiments
from mlbook.experiments.store import Store
from mlbook.project import Project

PLAIN = (
    'import mlbook\nexp = mlbook.Experiment(versions={"a": {}, "b": {}})\n'
    "@exp.train\ndef train(run):\n    return None\n"
)


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-C", str(project.root), *args], prog_name="mlbook")
    return result.exit_code, result.stdout, result.stderr


def add_run(
    project: Project, version: str, metrics: dict[str, float], status: str = "completed"
) -> str:
    with Store.for_project(project) as store:
        store.ensure_experiment("E001", "Models/E001_x.py", "x")
        _pk, run_id = store.create_run(experiment="E001", version=version, mode="run", params={})
        store.finish_run(run_id, status, metrics)
    return run_id


@pytest.fixture
def scored(project: Project) -> tuple[Project, dict[str, str]]:
    (project.models_dir / "E001_x.py").write_text(PLAIN)
    ids = {
        "low": add_run(project, "a", {"acc": 0.9627, "loss": 0.3}),
        "high": add_run(project, "a", {"acc": 0.9739, "loss": 0.5}),
        "nan": add_run(project, "b", {"acc": math.nan, "loss": 0.1}),
        "failed": add_run(project, "b", {"acc": 0.999}, status="failed"),
        "latest": add_run(project, "b", {"loss": 0.2}),
    }
    return project, ids


def test_the_best_completed_run_by_the_metric_and_why(
    scored: tuple[Project, dict[str, str]],
) -> None:
    project, ids = scored
    best = select_run(project, "E001", metric="acc", goal="max", source="Experiment(metric=...)")
    assert best.run.id == ids["high"] and best.value == 0.9739
    assert best.reason == (
        "the best of 2 completed run(s) of E001: highest acc (0.9739, from Experiment(metric=...))"
    )
    lowest = select_run(project, "E001", metric="loss", goal="min")
    assert lowest.run.id == ids["nan"]  # NaN acc does not matter for loss
    assert select_run(project, "E001", "a", metric="loss", goal="min").run.id == ids["low"]
    latest = select_run(project, "E001")
    assert latest.run.id == ids["latest"] and latest.metric is None
    assert latest.reason.startswith("the latest completed run of E001 (no selection metric: ")
    chosen = select_run(project, "E001", run_id=ids["low"][:-1], metric="acc")  # a prefix
    assert chosen.run.id == ids["low"] and chosen.reason.endswith("as asked (--run)")


def test_a_tie_goes_to_the_newest_run(project: Project) -> None:
    (project.models_dir / "E001_x.py").write_text(PLAIN)
    add_run(project, "a", {"acc": 0.5})
    newest = add_run(project, "a", {"acc": 0.5})
    assert select_run(project, "E001", metric="acc").run.id == newest


def test_selection_errors_are_one_line(scored: tuple[Project, dict[str, str]]) -> None:
    project, ids = scored
    cases = [
        (
            {"metric": "f1"},
            "no completed run of E001 has the selection metric 'f1'; their metrics: acc, loss; "
            "name one of them, or pick a run with --run",
        ),
        ({"run_id": ids["failed"]}, f"run {ids['failed']} is failed; export a completed run"),
        ({"run_id": "nope"}, "no run 'nope'; list runs with `mlbook runs`"),
        (
            {"run_id": ids["high"], "version": "b"},
            f"run {ids['high']} is E001 --version a, not E001 --version b",
        ),
    ]
    for arguments, message in cases:
        with pytest.raises(ExportError) as info:
            select_run(project, "E001", **arguments)  # type: ignore[arg-type]
        assert str(info.value) == message
    code, out, err = invoke(project, "export", "E001", "--metric", "f1")
    assert (code, out) == (1, "")
    assert err == "error: " + cases[0][1].replace("'f1';", "'f1' (--metric);") + "\n"
    code, _, err = invoke(project, "export", "E001", "--run", "nope")
    assert (code, err) == (1, "error: no run 'nope'; list runs with `mlbook runs`\n")


def test_an_experiment_without_runs_has_nothing_to_export(project: Project) -> None:
    (project.models_dir / "E001_x.py").write_text(PLAIN)
    code, out, err = invoke(project, "export", "E001")
    assert (code, out) == (1, "")
    assert err == "error: no completed run of E001; run it first with `mlbook run E001`\n"


# -- real exports ----------------------------------------------------------------------------

SCORED = """
import torch

import mlbook

exp = mlbook.Experiment(
    seed=0,
    metric="acc",
    goal="max",
    versions={"a": {"acc": 0.9627}, "b": {"acc": 0.9739}},
)


@exp.model
def build(p):
    return torch.nn.Linear(4, 2)


@exp.train
def train(run, model):
    run.save_weights(model)
    return {"acc": run.params.acc}


@exp.sample
def sample(p):
    return torch.ones(1, 4)
"""

PREPROCESSING = """
import torch

import mlbook

exp = mlbook.Experiment(seed=0)


@exp.model
def build(p):
    return torch.nn.Linear(4, 2)


@exp.train
def train(run, model):
    run.save_weights(model)
    return {"acc": 1.0}


@exp.predict
def predict(model, inputs):
    return model(torch.tensor(inputs, dtype=torch.float32).reshape(-1, 4) / 255)


@exp.sample
def sample(p):
    return [[0, 64, 128, 255]]  # what a client sends: predict turns it into a tensor
"""

WITH_ONNX_INPUT = (
    PREPROCESSING
    + """

@exp.onnx_input
def onnx_input(p):
    return torch.rand(1, 4)
"""
)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.slow
def test_export_picks_the_best_run_and_replaces_only_with_force(project: Project) -> None:
    pytest.importorskip("torch")
    script = project.models_dir / "E001_scored.py"
    script.write_text(SCORED)
    first = run_experiments(project, ["E001"])
    assert first.ok, [r.error for r in first.runs]
    best = next(r.run_id for r in first.runs if r.version == "b")
    code, out, err = invoke(project, "export", "E001")
    assert code == 0, err
    assert out.splitlines()[0] == (
        f"run       {best}: the best of 2 completed run(s) of E001: highest acc "
        "(0.9739, from Experiment(metric=...))"
    )
    assert "exported  Deployment/exports/E001-b  (E001/b run" in out
    script.write_text(SCORED.replace('"b": {"acc": 0.9739}', '"b": {"acc": 0.9627}'))
    second = run_experiments(project, ["E001"], versions=["b"])
    worse = second.runs[0].run_id
    code, out, err = invoke(project, "export", "E001")  # still the best: already there
    assert (code, out) == (1, "")
    assert err == (
        f"error: Deployment/exports/E001-b already holds run {best} (acc 0.9739): "
        "pass --force to export it again, or --dest to export elsewhere\n"
    )
    code, out, err = invoke(project, "export", "E001", "--run", worse[:-1])
    assert (code, out) == (1, "")
    assert err == (
        f"error: Deployment/exports/E001-b holds run {best} (acc 0.9739); this export is run "
        f"{worse} (acc 0.9627): pass --force to replace it, or --dest to export elsewhere\n"
    )
    code, out, err = invoke(project, "export", "E001", "--run", worse, "--force")
    assert code == 0, err
    assert f"replaced  run {best} (acc 0.9739) → run {worse} (acc 0.9627)" in out


@pytest.mark.slow
def test_onnx_names_the_hook_to_add_and_uses_it(project: Project) -> None:
    pytest.importorskip("onnxruntime")
    (project.models_dir / "E001_pre.py").write_text(PREPROCESSING)
    (project.models_dir / "E002_pre.py").write_text(WITH_ONNX_INPUT)
    done = run_experiments(project, ["E001", "E002"])
    assert done.ok, [r.error for r in done.runs]
    code, out, err = invoke(project, "export", "E001", "--onnx")
    assert (code, out) == (1, "")
    assert err.startswith(
        "error: Deployment/exports/E001-default: verification in a clean process failed: "
    )
    assert len(err.splitlines()) == 1
    assert (
        "--onnx: the @exp.sample input is a list, not a tensor; add an @exp.onnx_input hook "
        "that returns the model's own input tensor"
    ) in err
    assert not (project.exports_dir / "E001-default").exists()
    code, out, err = invoke(project, "export", "E002", "--onnx")
    assert code == 0, err
    assert "onnx      model.onnx: max abs diff vs PyTorch" in out


@pytest.mark.slow
def test_an_export_committed_and_cloned_is_valid(project: Project, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    (project.models_dir / "E001_scored.py").write_text(SCORED)
    assert run_experiments(project, ["E001"]).ok
    code, _, err = invoke(project, "export", "E001", "--onnx")
    assert code == 0, err
    code, _, err = invoke(project, "key", "--export", str(tmp_path / "project.pub"))
    assert code == 0, err
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "the export")
    assert git(project.root, "status", "--porcelain", "--ignored", "Deployment") == ""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project.root), str(clone))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLBOOK_")}
    listed = subprocess.run(
        [sys.executable, "-m", "mlbook", "exports", "--format", "json"],
        cwd=clone,
        capture_output=True,
        text=True,
        env={**env, "MLBOOK_TRUSTED_KEYS": str(tmp_path / "project.pub")},
    )
    assert listed.returncode == 0, listed.stderr
    import json

    (info,) = json.loads(listed.stdout)
    assert (info["name"], info["status"], info["problem"], info["onnx"]) == (
        "E001-b",
        "trusted",
        "",
        True,
    )
