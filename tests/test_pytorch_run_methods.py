"""The issue's spelling: run.save_checkpoint(model, optimizer, ...), run.resume_from(...)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from mlbook import pytorch as mt  # noqa: E402
from mlbook.errors import ExperimentError  # noqa: E402
from mlbook.experiments.api import Params  # noqa: E402
from mlbook.experiments.run import Run  # noqa: E402
from mlbook.project import Project  # noqa: E402


def make_run(project: Project, name: str, resume_dir: Path | None = None) -> Run:
    return Run(
        id=name,
        experiment="E001",
        version="v",
        mode="run",
        params=Params({"seed": 0}),
        dir=project.outputs_dir / "E001" / "v" / name,
        project_root=project.root,
        models_dir=project.models_dir,
        resume_dir=resume_dir,
    )


def test_run_methods_delegate_to_mlbook_pytorch(project: Project) -> None:
    run = make_run(project, "first")
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step, acc in enumerate([0.2, 0.9, 0.4, 0.3]):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        path = run.save_checkpoint(
            model, optimizer, step=step, metrics={"acc": acc}, keep_last=2, keep_best="acc"
        )
        assert path == run.dir / "checkpoints" / f"step-{step:08d}.pt"
    assert [c.step for c in mt.list_checkpoints(run.dir)] == [1, 2, 3]
    fresh = nn.Linear(3, 2)
    best = run.load_checkpoint(fresh, which="best", key="acc")
    assert best is not None and best.step == 1 and best.metrics == {"acc": 0.9}
    resumed = make_run(project, "second", resume_dir=run.dir)
    again = nn.Linear(3, 2)
    assert resumed.resume_from(again, torch.optim.SGD(again.parameters(), lr=0.1)) == 4
    assert torch.equal(again.weight, model.weight)
    assert make_run(project, "third").resume_from(nn.Linear(3, 2)) == 0


def test_plain_state_keeps_the_first_form(project: Project) -> None:
    run = make_run(project, "plain")
    for step in range(4):
        run.save_checkpoint({"epoch": step}, step=step, keep=2)
    run.save_checkpoint({"epoch": 9}, 9, keep=2)  # positional step, as before
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == [
        "step-00000003.ckpt",
        "step-00000009.ckpt",
    ]
    assert run.load_checkpoint() == ({"epoch": 9}, 9)
    with pytest.raises(
        ExperimentError, match="optimizer=, metrics= and keep_best= go with a PyTorch"
    ):
        run.save_checkpoint({"epoch": 1}, step=1, metrics={"acc": 1.0})
    with pytest.raises(ExperimentError, match=r"needs step=<the step or epoch>"):
        run.save_checkpoint(nn.Linear(3, 2))
