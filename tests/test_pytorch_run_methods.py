"""One checkpoint API: the Run methods and mlbook.pytorch, for models and other objects."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from mlbook import pytorch as mt  # noqa: E402
from mlbook.errors import ExperimentError  # noqa: E402
from mlbook.experiments import checkpoints  # noqa: E402
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


class _MakeDir:
    """A pickle that creates a directory when loaded: what a tampered file could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


@pytest.mark.parametrize("name", ["save_checkpoint", "load_checkpoint", "resume_from"])
def test_run_methods_and_mlbook_pytorch_share_one_signature(name: str) -> None:
    method = inspect.signature(getattr(Run, name))
    function = inspect.signature(getattr(mt, name))
    assert getattr(mt, name) is getattr(checkpoints, name)
    assert list(method.parameters)[1:] == list(function.parameters)[1:]
    for param in list(method.parameters.values())[1:]:
        other = function.parameters[param.name]
        assert (param.kind, param.default) == (other.kind, other.default), param.name
    assert method.return_annotation == function.return_annotation


def test_removed_spellings_are_gone(project: Project) -> None:
    run = make_run(project, "old")
    with pytest.raises(TypeError, match="unexpected keyword argument 'keep'"):
        run.save_checkpoint({"epoch": 1}, step=1, keep=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'step'"):
        run.save_checkpoint({"epoch": 9}, 9)  # type: ignore[call-arg]
    assert not (run.dir / "checkpoints").exists()


def test_run_methods_with_a_model(project: Project) -> None:
    run = make_run(project, "first")
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step, acc in enumerate([0.2, 0.9, 0.4, 0.3]):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        saved = run.save_checkpoint(
            model,
            optimizer,
            step=step,
            metrics={"acc": acc},
            keep_last=2,
            keep_best="acc",
            extra={"note": f"epoch {step}"},
        )
        assert saved == mt.Checkpoint(
            path=run.dir / "checkpoints" / f"step-{step:08d}.pt",
            step=step,
            metrics={"acc": acc},
            extra={"note": f"epoch {step}"},
        )
    assert [c.step for c in mt.list_checkpoints(run.dir)] == [1, 2, 3]
    fresh = nn.Linear(3, 2)
    best = run.load_checkpoint(fresh, which="best", key="acc")
    assert best is not None and best.step == 1 and best.metrics == {"acc": 0.9}
    assert best.extra == {"note": "epoch 1"} and best.state is None
    unloaded = run.load_checkpoint()  # no model: the model's state_dict comes back
    assert unloaded is not None and unloaded.step == 3
    assert torch.equal(unloaded.state["weight"], model.weight)
    resumed = make_run(project, "second", resume_dir=run.dir)
    again = nn.Linear(3, 2)
    assert resumed.resume_from(again, torch.optim.SGD(again.parameters(), lr=0.1)) == 4
    assert torch.equal(again.weight, model.weight)
    assert make_run(project, "third").resume_from(nn.Linear(3, 2)) == 0


def test_torch_checkpoints_load_with_weights_only(project: Project) -> None:
    """Optimizer state, metrics and RNG states (NumPy's too) need no unpickling of objects."""
    import numpy  # noqa: F401  # its RNG state is saved when NumPy is loaded

    run = make_run(project, "safe")
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    saved = run.save_checkpoint(model, optimizer, step=0, metrics={"loss": 0.5})
    state = torch.load(saved.path, weights_only=True)
    assert set(state["rng"]) == {"python", "torch", "numpy"} and state["optimizer"]["state"]
    copy = project.root / "elsewhere.pt"  # not indexed anywhere: weights_only still reads it
    copy.write_bytes(saved.path.read_bytes())
    loaded = run.load_checkpoint(nn.Linear(3, 2), which=copy)
    assert loaded is not None and loaded.step == 0 and loaded.metrics == {"loss": 0.5}


def test_objects_in_extra_load_only_when_the_sha256_matches(project: Project) -> None:
    run = make_run(project, "extra")
    model = nn.Linear(3, 2)
    saved = run.save_checkpoint(model, step=0, extra={"ratio": Fraction(1, 3)})
    loaded = run.load_checkpoint(nn.Linear(3, 2))
    assert loaded is not None and loaded.extra == {"ratio": Fraction(1, 3)}
    marker = project.root / "pwned"
    torch.save({"format": "mlbook.pytorch/1", "extra": _MakeDir(marker)}, saved.path)
    with pytest.raises(ExperimentError, match=r"step-00000000\.pt: its sha256 differs from"):
        run.load_checkpoint(nn.Linear(3, 2))
    assert not marker.exists()


def test_other_objects_checkpoint_with_the_same_api(project: Project) -> None:
    run = make_run(project, "plain")
    for step, score in enumerate([0.5, 0.9, 0.1, 0.2]):
        saved = run.save_checkpoint(
            {"epoch": step},
            step=step,
            metrics={"score": score},
            keep_last=2,
            keep_best="score",
            extra={"seen": step * 10},
        )
        assert saved.path.name == f"step-{step:08d}.ckpt" and saved.state == {"epoch": step}
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == [
        "index.json",
        "step-00000001.ckpt",
        "step-00000002.ckpt",
        "step-00000003.ckpt",
    ]
    latest = run.load_checkpoint()
    assert latest == checkpoints.Checkpoint(
        path=run.dir / "checkpoints" / "step-00000003.ckpt",
        step=3,
        metrics={"score": 0.2},
        extra={"seen": 30},
        state={"epoch": 3},
    )
    best = run.load_checkpoint(which="best", key="score")
    assert best is not None and best.state == {"epoch": 1}
    resumed = make_run(project, "resumed", resume_dir=run.dir)
    found = resumed.load_checkpoint()  # checked against the resumed run's index
    assert found is not None and found.state == {"epoch": 3}
    with pytest.raises(ExperimentError, match=r"optimizer= goes with a PyTorch model .* got dict"):
        run.save_checkpoint({"epoch": 1}, torch.optim.SGD(nn.Linear(1, 1).parameters()), step=1)
    with pytest.raises(ExperimentError, match=r"a checkpoint of a non-PyTorch object; load it"):
        run.load_checkpoint(nn.Linear(3, 2))
    with pytest.raises(ExperimentError, match=r"resume_from: model must be a PyTorch model"):
        run.resume_from({"epoch": 0})


def test_a_pickle_is_loaded_only_when_mlbook_wrote_and_recorded_it(project: Project) -> None:
    run = make_run(project, "guarded")
    saved = run.save_checkpoint({"epoch": 0}, step=0)
    marker = project.root / "pwned"
    evil = pickle.dumps({"format": "mlbook.checkpoint/1", "state": _MakeDir(marker)})
    saved.path.write_bytes(evil)  # tampered after it was saved
    with pytest.raises(
        ExperimentError,
        match=r"step-00000000\.ckpt: its sha256 differs from the one recorded in .*index\.json "
        "when it was saved; the file changed since, so it is not unpickled",
    ):
        run.load_checkpoint()
    unlisted = run.dir / "checkpoints" / "step-00000005.ckpt"  # dropped in, never indexed
    unlisted.write_bytes(evil)
    with pytest.raises(ExperimentError, match=r"step-00000005\.ckpt: not recorded in .*index"):
        run.load_checkpoint()
    outside = project.root / "step-00000001.ckpt"
    outside.write_bytes(evil)
    with pytest.raises(ExperimentError, match=r"not in the checkpoints of this run or of the run"):
        run.load_checkpoint(which=outside)
    index = run.dir / "checkpoints" / "index.json"
    assert json.loads(index.read_text())["step-00000000.ckpt"]["size"] > 0
    assert not marker.exists()


def test_other_objects_checkpoint_without_torch(project: Project, tmp_path: Path) -> None:
    """A run that never imports torch checkpoints a dict; torch stays unimported."""
    code = f"""
import sys
sys.modules["torch"] = None  # importing torch now fails
from pathlib import Path
from mlbook.experiments.api import Params
from mlbook.experiments.run import Run
root = Path({str(project.root)!r})
run = Run(id="r", experiment="E001", version="v", mode="run", params=Params({{}}),
          dir=Path({str(tmp_path / "out")!r}), project_root=root, models_dir=root)
run.save_checkpoint({{"w": [1, 2]}}, step=3, metrics={{"acc": 0.5}}, keep_last=1)
found = run.load_checkpoint()
assert found is not None and found.state == {{"w": [1, 2]}} and found.step == 3, found
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
