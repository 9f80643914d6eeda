"""mlbook.log and friends from anywhere; test mode cuts nested loops."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlbook
from mlbook.errors import MlbookWarning
from mlbook.experiments.query import get_run, metric_series, run_artifacts
from mlbook.experiments.run import Run
from mlbook.experiments.runner import run_experiments
from mlbook.project import Project

HEAVY = ["torch", "numpy", "pandas", "rich", "click", "msgspec", "orjson"]


def write(project: Project, name: str, body: str) -> Path:
    path = project.models_dir / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_outside_a_run_they_do_nothing_and_import_nothing() -> None:
    probe = textwrap.dedent(
        """
        import json, sys
        import mlbook
        items = [1, 2, 3]
        assert mlbook.iterate(items) is items
        assert mlbook.log(loss=1.0, acc="not a number") is None
        assert mlbook.log_params(lr=0.1) is None
        assert str(mlbook.artifact("model.pt")) == "model.pt"
        assert mlbook.current_run() is None
        print(json.dumps(sorted(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert not {m for m in loaded if m.startswith("mlbook.experiments")}
    assert done.stderr == ""


LOGGING = """
    import mlbook
    from common.loop import fit

    exp = mlbook.Experiment(versions={"a": {"epochs": 50, "batches": 40}})

    @exp.train
    def train(run):
        assert mlbook.current_run() is run
        mlbook.log_params(optimizer="adam", layers=[1, 2], odd=object, lr=0.5)
        counts = []
        for epoch in run.iterate(range(run.params.epochs)):
            counts.append(fit(run.params.batches))
            mlbook.log(step=epoch, loss=1.0 / (epoch + 1), bad="x")
        path = run.path("notes.txt")
        path.write_text("hello")
        mlbook.artifact("notes.txt")
        return {"epochs": len(counts), "batches": sum(counts), "lr": run.params.lr}
"""

LOOP = """
    import mlbook

    def fit(batches):
        done = 0
        for batch in mlbook.iterate(range(batches)):   # shared code: cut in test mode too
            for part in mlbook.iterate(range(10)):
                done += 1
        return done
"""


@pytest.fixture
def logging_project(project: Project) -> Project:
    write(project, "common/loop.py", LOOP)
    write(project, "E1_log.py", LOGGING)
    return project


def test_module_level_functions_inside_a_run(logging_project: Project) -> None:
    project = logging_project
    with pytest.warns(MlbookWarning, match=r"E1/a: run.log: bad='x' is not a number; ignored"):
        result = run_experiments(project, ["E1"], observers=[])
    (info,) = result.runs
    assert info.status == "completed", info.error
    assert info.metrics == {"epochs": 50.0, "batches": 50 * 40 * 10, "lr": 0.5}
    record = get_run(project, info.run_id)
    assert record.params == {
        "epochs": 50,
        "batches": 40,
        "optimizer": "adam",
        "layers": [1, 2],
        "odd": "<class 'object'>",
        "lr": 0.5,
    }
    assert info.params == record.params
    series = metric_series(project, record)
    assert list(series) == ["loss"] and len(series["loss"]) == 50
    artifacts = run_artifacts(project, info.run_id)
    assert [(Path(a.path).name, a.kind) for a in artifacts] == [("notes.txt", "file")]


@pytest.mark.filterwarnings("ignore::mlbook.errors.MlbookWarning")  # bad='x': tested above
def test_test_mode_cuts_every_loop(logging_project: Project) -> None:
    result = run_experiments(logging_project, ["E1"], mode="test", observers=[])
    assert result.runs[0].metrics == {"epochs": 2.0, "batches": 2 * 2 * 2, "lr": 0.5}
    result = run_experiments(
        logging_project, ["E1"], mode="test", test_steps=(3, 1, 4), observers=[]
    )
    assert result.runs[0].metrics == {"epochs": 3.0, "batches": 3 * 1 * 4, "lr": 0.5}
    result = run_experiments(logging_project, ["E1"], mode="test", test_steps=5, observers=[])
    assert result.runs[0].metrics["batches"] == 5 * 5 * 5


def test_nested_iterate_levels_and_progress(tmp_path: Path) -> None:
    run = Run(
        id="t",
        experiment="E1",
        version="a",
        mode="test",
        params=mlbook.experiments.Params({}),
        dir=tmp_path,
        project_root=tmp_path,
        models_dir=tmp_path,
        test_steps=3,
        inner_steps=(2,),
    )
    seen = [(i, list(run.iterate(range(10)))) for i in run.iterate(range(10))]
    assert seen == [(0, [0, 1]), (1, [0, 1]), (2, [0, 1])]
    for _ in run.iterate(range(10)):  # a loop left by break ends its level
        for _ in run.iterate(range(10)):
            break
        break
    assert [len(list(run.iterate(range(10)))) for _ in range(2)] == [3, 3]
    real = Run(
        id="r",
        experiment="E1",
        version="a",
        mode="run",
        params=mlbook.experiments.Params({}),
        dir=tmp_path,
        project_root=tmp_path,
        models_dir=tmp_path,
    )
    assert sum(1 for _ in real.iterate(range(4)) for _ in real.iterate(range(5))) == 20


def test_a_plain_script_logs_with_mlbook_log(project: Project) -> None:
    write(
        project,
        "E2_plain.py",
        """
        import argparse
        import mlbook

        parser = argparse.ArgumentParser()
        parser.add_argument("--steps", type=int, default=5)
        args = parser.parse_args()
        run = mlbook.current_run()
        assert run.params.steps == args.steps and run.experiment == "E2"
        for step in mlbook.iterate(range(args.steps)):
            mlbook.log(acc=step / 10)
        mlbook.log_params(seen=args.steps)
        """,
    )
    (info,) = run_experiments(project, ["E2"], sets={"steps": "4"}, observers=[]).runs
    assert info.status == "completed", info.error
    record = get_run(project, info.run_id)
    assert record.params == {"steps": 4, "seen": 4}
    assert [(p.step, p.value) for p in metric_series(project, record)["acc"]] == [
        (0, 0.0),
        (1, 0.1),
        (2, 0.2),
        (3, 0.3),
    ]
    assert record.metrics == {"acc": 0.3}
    (info,) = run_experiments(project, ["E2"], mode="test", observers=[]).runs
    assert info.status == "completed" and info.metrics == {"acc": 0.1}
