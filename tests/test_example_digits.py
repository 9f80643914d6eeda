"""`mlbook init NAME --example digits`, end to end: data, test mode, real training, resume.

One project is prepared for the module (its data takes ~3 s, the trainings a few
seconds each); the tests read what the real runner recorded in the real store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("sklearn")

import mlbook
from mlbook.boundaries import check_project
from mlbook.cli import cli
from mlbook.errors import ProjectError
from mlbook.experiments.query import RunRecord, get_run, metric_series, run_artifacts
from mlbook.experiments.runner import run_experiments
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.journal import read_journal
from mlbook.scaffold import init_project

pytestmark = pytest.mark.slow  # trains models or exports bundles: the full run has them

EXAMPLE_FILES = [
    "Data_processing/prepare_digits.py",
    "Deployment/predict_digits.py",
    "Deployment/test_digits_export.py",
    "Models/E001_digits_cnn.py",
    "Models/E002_digits_mlp.py",
    "Models/common/data.py",
    "Models/common/training.py",
]
Trained = dict[str, list[RunRecord]]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "mlbook tests",
    "GIT_AUTHOR_EMAIL": "tests@mlbook.invalid",
    "GIT_COMMITTER_NAME": "mlbook tests",
    "GIT_COMMITTER_EMAIL": "tests@mlbook.invalid",
}


def prepare(root: Path) -> str:
    done = subprocess.run(
        [sys.executable, "Data_processing/prepare_digits.py"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """An example project with its data prepared."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in GIT_ENV.items():
            patch.setenv(key, value)
        project = init_project(tmp_path_factory.mktemp("digits") / "demo", example="digits").project
        prepare(project.root)
        yield project


@pytest.fixture(scope="module")
def trained(digits: Project) -> Iterator[Trained]:
    """Real run-mode trainings: E001 narrow once, E002 h64 twice (same seed)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in GIT_ENV.items():
            patch.setenv(key, value)
        first = run_experiments(digits, ["E001"], versions=["narrow"], mode="run")
        second = run_experiments(digits, ["E002"], versions=["h64"], mode="run")
        third = run_experiments(digits, ["E002"], versions=["h64"], mode="run")
    for result in (first, second, third):
        assert result.ok, [r.error for r in result.runs]
    yield {
        "cnn": [get_run(digits, first.runs[0].run_id)],
        "mlp": [get_run(digits, r.runs[0].run_id) for r in (second, third)],
    }


def test_init_example_writes_the_project_and_journal(tmp_path: Path) -> None:
    result = init_project(tmp_path / "demo", example="digits")
    root = result.project.root
    created = {p.relative_to(root).as_posix() for p in result.created}
    assert set(EXAMPLE_FILES) <= created
    assert "mlbook.toml" in created and "Models/common/__init__.py" in created
    entries = {e.id: e for e in read_journal(result.project.journal_path)}
    assert entries["E001"].title == "Small CNN on digits"
    assert entries["E002"].title == "MLP on digits"
    assert entries["E001"].status == "TODO"
    assert check_project(result.project).ok
    again = init_project(root, example="digits")  # adopting again keeps everything
    assert not again.created and len(read_journal(result.project.journal_path)) == len(entries)
    with pytest.raises(ProjectError, match="unknown example 'cats'; examples: digits"):
        init_project(tmp_path / "other", example="cats")
    assert not (tmp_path / "other").exists()


def test_cli_init_example() -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["init", "demo", "--example", "digits"])
    assert done.exit_code == 0, done.output
    assert "created  Models/E001_digits_cnn.py" in done.output
    assert (
        "Next: cd demo && python Data_processing/prepare_digits.py && mlbook check "
        "&& mlbook run --mode test && mlbook run" in done.output
    )
    bad = runner.invoke(cli, ["init", "x", "--example", "cats"])
    assert bad.exit_code == 2
    assert "Invalid value for '--example': 'cats' is not 'digits'" in bad.output


def test_prepared_dataset_is_real_and_checked(digits: Project) -> None:
    dataset = mlbook.open_dataset(digits.datasets_dir / "digits")
    assert len(dataset) == 1797
    assert dataset.classes == [str(d) for d in range(10)]
    sizes = {split: len(dataset.records(split)) for split in dataset.splits}
    assert sizes == {"test": 268, "train": 1259, "val": 270}
    first = dataset.records()[0]
    assert (first.file, first.width, first.height, first.labels) == (
        "images/00000.png",
        8,
        8,
        ["0"],
    )
    from PIL import Image

    with Image.open(dataset.path_of(first.file)) as image:
        assert image.size == (8, 8) and image.mode == "L"
    assert not list(digits.datasets_dir.glob(".digits-*"))  # no half-built copy left
    report = check_project(digits)
    assert report.ok, [str(v) for v in report.violations]


def test_test_mode_runs_every_version_and_records_nothing(digits: Project) -> None:
    result = run_experiments(digits, ["E001", "E002"], mode="test")
    assert [(r.experiment, r.version, r.status) for r in result.runs] == [
        ("E001", "narrow", "completed"),
        ("E001", "wide", "completed"),
        ("E002", "h64", "completed"),
        ("E002", "h256x2", "completed"),
    ], [r.error for r in result.runs]
    assert all(0.0 <= r.metrics["acc"] <= 1.0 for r in result.runs)
    assert mlbook.runs(digits) == []


def test_run_mode_training_reaches_accuracy(digits: Project, trained: Trained) -> None:
    cnn = trained["cnn"][0]
    assert cnn.status == "completed" and cnn.metrics["acc"] > 0.9
    assert all(run.metrics["acc"] > 0.9 for run in trained["mlp"])
    stored = {r.id: r for r in mlbook.runs(digits, status="completed")}
    assert stored[cnn.id].metrics["acc"] == cnn.metrics["acc"]
    out = digits.root / cnn.outputs
    on_disk = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert 2 <= len(on_disk) <= 3  # the last two and the best
    assert f"step-{int(cnn.metrics['best_epoch']):08d}.pt" in on_disk
    setup = json.loads((out / "setup.json").read_text())
    assert setup["parameters"] > 1000 and setup["device"] == "cpu" and setup["seed"] == 0
    assert setup["params"]["width"] == 8
    with Store.for_project(digits) as store:
        kinds: dict[str, set[str]] = {}
        for path, _size, _sha, kind in run_artifacts(store, cnn.id):
            kinds.setdefault(kind, set()).add(Path(path).name)
        series = metric_series(store, cnn)
    assert kinds["weights"] == {"model.pt"} and kinds["setup"] == {"setup.json"}
    assert kinds["checkpoint"] == set(on_disk)
    assert len(kinds["checkpoint-deleted"]) == 15 - len(on_disk)
    assert [point.step for point in series["loss"]] == list(range(15))
    assert series["loss"][-1].value < series["loss"][0].value
    log = (out / "output.log").read_text()
    assert "[mlbook] E001/narrow:" in log and "device cpu, seed 0" in log
    # the runs filled the journal entries that `init --example` wrote
    entries = {e.id: e for e in read_journal(digits.journal_path)}
    assert entries["E001"].title == "Small CNN on digits"
    assert entries["E001"].status == "IN PROGRESS"
    (step,) = [s for s in entries["E001"].steps if s.run_id == cnn.id]
    assert step.version == "narrow" and step.done
    assert step.metrics["acc"] == pytest.approx(cnn.metrics["acc"], abs=1e-3)
    assert {s.run_id for s in entries["E002"].steps} >= {r.id for r in trained["mlp"]}


def test_same_seed_gives_the_same_losses(digits: Project, trained: Trained) -> None:
    first, second = trained["mlp"]
    with Store.for_project(digits) as store:
        a, b = metric_series(store, first), metric_series(store, second)
    assert len(a["loss"]) == 20
    for key in ("loss", "val_acc"):
        assert [p[:2] for p in a[key]] == [p[:2] for p in b[key]]
    assert first.metrics == second.metrics
    # the runner seeded them (Experiment(seed=0)) before the model hook built the weights
    seeded = json.loads((digits.root / first.outputs / "seed.json").read_text())
    assert seeded["seed"] == 0 and "torch" in seeded["seeded"]
    assert first.params["seed"] == 0


def test_resume_continues_from_the_old_checkpoints(digits: Project, trained: Trained) -> None:
    old = trained["cnn"][0]
    result = run_experiments(digits, resume=old.id)
    assert result.ok, [r.error for r in result.runs]
    new = get_run(digits, result.runs[0].run_id)
    assert new.resumed_from == old.id
    assert new.metrics["acc"] == old.metrics["acc"]  # all epochs were done: the same best model
    log = (digits.root / new.outputs / "output.log").read_text()
    assert "resumed from step-00000014.pt (step 14)" in log


FINETUNE = '''"""E003: the narrow CNN of E001, started from its weights in Datasets/weights/."""

import mlbook
from mlbook import pytorch as mt
from E001_digits_cnn import DigitsCNN

exp = mlbook.Experiment(base={"seed": 0}, dataset="digits")


@exp.train
def train(run):
    loaded = mt.load_pretrained(run, DigitsCNN(width=8, dropout=0.1), "cnn")
    return {"stale": loaded.stale is not None, "source": loaded.source_run}
'''


def test_pretrained_weights_are_inputs_and_stale_code_warns(
    digits: Project,
    trained: Trained,
) -> None:
    cnn = trained["cnn"][0]
    assert cnn.weights is not None
    shutil.copy(digits.root / cnn.weights, digits.datasets_dir / "weights" / "cnn.pt")
    (digits.models_dir / "E003_finetune.py").write_text(FINETUNE)
    fresh = run_experiments(digits, ["E003"], mode="run")
    assert fresh.ok, [r.error for r in fresh.runs]
    # the newest run that wrote these bytes: E001 narrow, or its resumed run (same best weights)
    source = fresh.runs[0].metrics["source"]
    assert fresh.runs[0].metrics["stale"] is False
    assert get_run(digits, source).experiment == "E001"
    with Store.for_project(digits) as store:
        inputs = [a for a in run_artifacts(store, fresh.runs[0].run_id) if a[3] == "input"]
    assert [a[0] for a in inputs] == ["Datasets/weights/cnn.pt"]
    training = digits.models_dir / "common" / "training.py"
    original = training.read_text()
    training.write_text(original + "\n# changed after E001 ran\n")
    try:
        stale = run_experiments(digits, ["E003"], mode="run")
    finally:
        training.write_text(original)
    assert stale.runs[0].metrics == {"stale": True, "source": source}
    log = (digits.root / get_run(digits, stale.runs[0].run_id).outputs / "output.log").read_text()
    assert (
        f"warning: stale weights cnn.pt: the code changed since run {source} wrote these "
        "weights: Models/common/training.py (modified)"
    ) in log


@pytest.mark.skipif(
    os.environ.get("MLBOOK_SKIP_EXPORT") == "1", reason="export checks switched off"
)
def test_deployment_loads_the_export(digits: Project, trained: Trained) -> None:
    if not hasattr(mlbook, "load"):
        pytest.skip("mlbook.load (the export engineer's work) is not there yet")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlbook"), "export", "E001", "--version", "narrow"],
        cwd=digits.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    script = subprocess.run(
        [sys.executable, "Deployment/predict_digits.py"],
        cwd=digits.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert script.returncode == 0, script.stderr
    assert "test accuracy 0.9" in script.stdout or "test accuracy 1.0" in script.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "Deployment"],
        cwd=digits.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
    # the predict hook takes what a client has: PNG bytes, base64 text, PIL images, arrays
    import base64

    from PIL import Image

    loaded = mlbook.load(digits.exports_dir / "E001-narrow")
    dataset = mlbook.open_dataset(digits.datasets_dir / "digits")
    record = dataset.records("test")[0]
    png = dataset.path_of(record.file).read_bytes()
    with Image.open(dataset.path_of(record.file)) as image:
        pixels = np.asarray(image).tolist()
        as_image = loaded.predict([image.copy()])
    answers = [
        loaded.predict([png]),
        loaded.predict({"images": [base64.b64encode(png).decode()]}),
        as_image,
        loaded.predict(pixels),
    ]
    assert all(len(a) == 1 and a[0]["label"] == answers[0][0]["label"] for a in answers)
    with pytest.raises(ValueError, match="expected 8x8 images, got an array of shape"):
        loaded.predict([[1.0, 2.0, 3.0]])


# last: its resumed run becomes the newest writer of E001's weights, with changed code
def test_resume_after_a_code_change_warns_of_stale_weights(
    digits: Project, trained: Trained
) -> None:
    old = trained["cnn"][0]
    training = digits.models_dir / "common" / "training.py"
    original = training.read_text()
    training.write_text(original + "\n# changed after the run wrote its checkpoints\n")
    try:
        result = run_experiments(digits, resume=old.id)
    finally:
        training.write_text(original)
    assert result.ok, [r.error for r in result.runs]
    log = (digits.root / get_run(digits, result.runs[0].run_id).outputs / "output.log").read_text()
    assert "warning: stale weights step-00000014.pt: the code changed since run " in log
    assert "Models/common/training.py (modified)" in log
