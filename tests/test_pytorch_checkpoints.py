"""mlbook.pytorch: checkpoints with keep_last/keep_best cleanup, resume, seeds, setup, weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from mlbook import pytorch as mt  # noqa: E402
from mlbook.errors import ExperimentError  # noqa: E402
from mlbook.experiments.api import Params  # noqa: E402
from mlbook.experiments.run import Run  # noqa: E402
from mlbook.project import Project  # noqa: E402


def make_run(
    project: Project, name: str = "r1", resume_dir: Path | None = None, **params: object
) -> Run:
    return Run(
        id=name,
        experiment="E001",
        version="v",
        mode="run",
        params=Params({"lr": 0.1, "seed": 0, **params}),
        dir=project.outputs_dir / "E001" / "v" / name,
        project_root=project.root,
        models_dir=project.models_dir,
        resume_dir=resume_dir,
    )


def steps_on_disk(run: Run) -> list[int]:
    return [c.step for c in mt.list_checkpoints(run.dir)]


def save_series(run: Run, values: list[float], **keep: object) -> nn.Module:
    model = nn.Linear(3, 2)
    for step, value in enumerate(values):
        mt.save_checkpoint(run, model, step=step, metrics={"acc": value}, **keep)  # type: ignore[arg-type]
    return model


def test_keep_last_keeps_the_newest_files(project: Project) -> None:
    run = make_run(project)
    save_series(run, [0.1, 0.2, 0.3, 0.4, 0.5], keep_last=2)
    assert steps_on_disk(run) == [3, 4]
    names = sorted(p.name for p in (run.dir / "checkpoints").iterdir())
    assert names == ["index.json", "step-00000003.pt", "step-00000004.pt"]
    index = json.loads((run.dir / "checkpoints" / "index.json").read_text())
    assert {name: entry["metrics"] for name, entry in index.items()} == {
        "step-00000003.pt": {"acc": 0.4},
        "step-00000004.pt": {"acc": 0.5},
    }
    from mlbook._fs import sha256_file

    for name, entry in index.items():  # hashed while written, no second read
        path = run.dir / "checkpoints" / name
        assert entry["sha256"] == sha256_file(path) and entry["size"] == path.stat().st_size


def test_without_keep_nothing_is_deleted(project: Project) -> None:
    run = make_run(project)
    save_series(run, [0.1, 0.2, 0.3])
    assert steps_on_disk(run) == [0, 1, 2]


def test_keep_best_survives_keep_last(project: Project) -> None:
    run = make_run(project)
    save_series(run, [0.5, 0.9, 0.7, 0.6, 0.8, 0.75], keep_last=2, keep_best="acc")
    assert steps_on_disk(run) == [1, 4, 5]


def test_keep_best_alone_keeps_the_best_and_the_newest(project: Project) -> None:
    run = make_run(project)
    save_series(run, [0.5, 0.9, 0.7, 0.6], keep_best="acc")
    assert steps_on_disk(run) == [1, 3]


def test_keep_best_min_mode_and_missing_or_nan_metrics(project: Project) -> None:
    run = make_run(project)
    model = nn.Linear(3, 2)
    losses = [0.9, 0.2, float("nan"), 0.5]
    for step, loss in enumerate(losses):
        mt.save_checkpoint(
            run, model, step=step, metrics={"loss": loss}, keep_last=1, keep_best="loss", mode="min"
        )
    assert steps_on_disk(run) == [1, 3]
    mt.save_checkpoint(run, model, step=4, metrics={}, keep_last=1, keep_best="loss", mode="min")
    assert steps_on_disk(run) == [1, 4]


def test_the_checkpoint_being_written_is_never_deleted(project: Project) -> None:
    run = make_run(project)
    model = nn.Linear(3, 2)
    # a later step number written first: the current one is kept although it is not the newest
    mt.save_checkpoint(run, model, step=10, metrics={"acc": 0.9}, keep_last=1, keep_best="acc")
    mt.save_checkpoint(run, model, step=3, metrics={"acc": 0.1}, keep_last=1, keep_best="acc")
    assert steps_on_disk(run) == [3, 10]


def test_a_checkpoint_missing_from_the_index_still_counts(project: Project) -> None:
    run = make_run(project)
    save_series(run, [0.9, 0.1])
    (run.dir / "checkpoints" / "index.json").unlink()  # as after a crash between the two writes
    listed = mt.list_checkpoints(run.dir)
    assert [(c.step, c.metrics) for c in listed] == [(0, {"acc": 0.9}), (1, {"acc": 0.1})]
    model = nn.Linear(3, 2)
    for step, acc in [(2, 0.2), (3, 0.3), (4, 0.4)]:
        mt.save_checkpoint(
            run, model, step=step, metrics={"acc": acc}, keep_last=1, keep_best="acc"
        )
    assert steps_on_disk(run) == [0, 4]


def test_bad_arguments_are_one_line_errors(project: Project) -> None:
    run = make_run(project)
    model = nn.Linear(3, 2)
    with pytest.raises(ExperimentError, match="keep_last must be at least 1, got 0"):
        mt.save_checkpoint(run, model, step=0, keep_last=0)
    with pytest.raises(ExperimentError, match="mode must be 'max' or 'min', got 'up'"):
        mt.save_checkpoint(run, model, step=0, mode="up")  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match="metric 'acc' = 'high' is not a number"):
        mt.save_checkpoint(run, model, step=0, metrics={"acc": "high"})
    with pytest.raises(ExperimentError, match="step must be a whole number, 0 or more, got -1"):
        mt.save_checkpoint(run, model, step=-1)
    with pytest.raises(ExperimentError, match=r"step must be a whole number, 0 or more, got 1\.5"):
        mt.save_checkpoint(run, model, step=1.5)  # type: ignore[arg-type]
    mt.save_checkpoint(run, model, step=0, metrics={"acc": 0.5})
    with pytest.raises(ExperimentError, match=r"which='best'\) needs key='acc'"):
        mt.load_checkpoint(run, model, which="best")
    with pytest.raises(ExperimentError, match="has metric 'f1'; pass metrics="):
        mt.load_checkpoint(run, model, which="best", key="f1")
    other = run.dir / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(ExperimentError, match=r"not a checkpoint written by mlbook's save_check"):
        mt.load_checkpoint(run, model, which="other.pt")
    with pytest.raises(ExperimentError, match=r"no checkpoint file .*missing\.pt"):
        mt.load_checkpoint(run, model, which="missing.pt")


def test_load_best_and_latest_restore_model_and_optimizer(project: Project) -> None:
    run = make_run(project)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saved = {}
    for step, acc in enumerate([0.3, 0.8, 0.5]):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
        mt.save_checkpoint(run, model, optimizer, step=step, metrics={"acc": acc})
    fresh = nn.Linear(3, 2)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    best = mt.load_checkpoint(run, fresh, fresh_opt, which="best", key="acc")
    assert best is not None and best.step == 1 and best.metrics == {"acc": 0.8}
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved[1].items())
    assert fresh_opt.state_dict()["state"]  # momentum buffers came back
    latest = mt.load_checkpoint(run, fresh)
    assert latest is not None and latest.step == 2
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved[2].items())
    assert mt.load_checkpoint(make_run(project, "empty"), fresh) is None


def _train(run: Run, epochs: int, stop: int | None = None) -> torch.Tensor:
    """Dropout + shuffling from the global RNG, so only an RNG-exact resume matches."""
    mt.seed_everything(7)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    data = torch.linspace(-1, 1, 64).reshape(16, 4)
    target = data.sum(dim=1, keepdim=True)
    start = mt.resume_from(run, model, optimizer)
    for epoch in range(start, stop if stop is not None else epochs):
        for index in torch.randperm(16).split(4):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(data[index]), target[index]).backward()
            optimizer.step()
        mt.save_checkpoint(run, model, optimizer, step=epoch, keep_last=1)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_continues_exactly_where_the_run_stopped(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = _train(make_run(project, "straight"), epochs=6)
    first = make_run(project, "first")
    _train(first, epochs=6, stop=3)  # interrupted after epoch 2
    resumed = make_run(project, "resumed", resume_dir=first.dir)
    after = _train(resumed, epochs=6)
    assert "resumed from step-00000002.pt (step 2)" in capsys.readouterr().out
    assert torch.equal(straight, after)
    assert steps_on_disk(resumed) == [5] and steps_on_disk(first) == [2]
    assert mt.resume_from(make_run(project, "new"), nn.Linear(4, 8)) == 0


def test_seed_everything_makes_runs_repeat() -> None:
    import random

    import numpy as np

    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    mt.seed_everything(3)
    first = draw()
    mt.seed_everything(3)
    assert draw() == first
    mt.seed_everything(4)
    assert draw() != first


def test_setup_records_once(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(project, seed=5, width=16)
    model = nn.Linear(10, 3)  # 33 parameters
    device = mt.setup(run, model, threads=1)
    assert device == torch.device("cpu") or device.type == "cuda"
    info = json.loads((run.dir / "setup.json").read_text())
    assert info["seed"] == 5 and info["parameters"] == 33 and info["threads"] == 1
    assert info["params"] == {"lr": 0.1, "seed": 5, "width": 16}
    assert info["model"] == "Linear" and info["torch"] == torch.__version__
    out = capsys.readouterr().out
    assert "[mlbook] E001/v: 33 parameters, device cpu, seed 5, 1 threads" in out
    (run.dir / "setup.json").unlink()
    mt.setup(run, model, seed=6, device="cpu")
    assert not (run.dir / "setup.json").exists()
    assert capsys.readouterr().out == ""
    assert mt.count_parameters(model) == 33
    model.bias.requires_grad_(False)
    assert mt.count_parameters(model, trainable_only=True) == 30


def test_load_pretrained_by_name_from_datasets_weights(project: Project) -> None:
    weights = project.datasets_dir / "weights"
    source = nn.Linear(3, 2)
    torch.save(source.state_dict(), weights / "tiny.pt")
    run = make_run(project)
    model = nn.Linear(3, 2)
    loaded = mt.load_pretrained(run, model, "tiny")
    assert loaded.path == weights / "tiny.pt" and loaded.source_run is None and loaded.stale is None
    from mlbook._fs import sha256_file

    assert loaded.sha256 == sha256_file(weights / "tiny.pt")
    assert torch.equal(model.weight, source.weight)
    # an mlbook checkpoint works as weights too (its model part)
    mt.save_checkpoint(run, source, step=0)
    relative = project.relative(run.dir / "checkpoints" / "step-00000000.pt")
    assert mt.load_pretrained(run, nn.Linear(3, 2), relative).path.name == "step-00000000.pt"
    with pytest.raises(ExperimentError, match=r"no weights 'nope' in .*weights \(have: tiny.pt\)"):
        mt.load_pretrained(run, model, "nope")
    with pytest.raises(ExperimentError, match=r"tiny.pt: the weights do not fit Linear"):
        mt.load_pretrained(run, nn.Linear(4, 2), "tiny")
    (weights / "broken.pt").write_bytes(b"not a torch file")
    with pytest.raises(ExperimentError, match=r"broken\.pt: cannot read the weights"):
        mt.load_pretrained(run, model, "broken.pt")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["step-00000000.pt", "step-00000001.pt", "x"]), json_values, max_size=3
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_a_broken_index_never_breaks_cleanup(project: Project, garbage: bytes) -> None:
    run = make_run(project, "fuzz")
    shutil.rmtree(run.dir, ignore_errors=True)
    save_series(run, [0.9, 0.1])
    (run.dir / "checkpoints" / "index.json").write_bytes(garbage)
    assert [(c.step, c.metrics) for c in mt.list_checkpoints(run.dir)] == [
        (0, {"acc": 0.9}),
        (1, {"acc": 0.1}),
    ]
    model = nn.Linear(3, 2)
    mt.save_checkpoint(run, model, step=2, metrics={"acc": 0.5}, keep_last=1, keep_best="acc")
    assert steps_on_disk(run) == [0, 2]
    index = json.loads((run.dir / "checkpoints" / "index.json").read_text())
    assert sorted(index) == ["step-00000000.pt", "step-00000002.pt"] or sorted(index) == [
        "step-00000002.pt"
    ]
