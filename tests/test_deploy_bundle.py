"""Export bundles end to end: real runs, a real clean child process, real files.

One project with a trained tiny CNN is exported once per module; tests copy the
bundle and break the copy in the ways a deployment can meet.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

import mlbook  # noqa: E402
from mlbook.cli import cli  # noqa: E402
from mlbook.deploy import export_run, list_exports  # noqa: E402
from mlbook.deploy.manifest import read_manifest  # noqa: E402
from mlbook.errors import ExperimentError, ExportError  # noqa: E402
from mlbook.experiments.runner import run_experiments  # noqa: E402
from mlbook.project import Project  # noqa: E402
from mlbook.scaffold import init_project  # noqa: E402

pytestmark = pytest.mark.slow  # trains models or exports bundles: the full run has them

TRAINING = """
    import torch

    SCALE = {scale}

    def data(n=64):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(n, 1, 8, 8, generator=gen)
        return x, (x.mean((1, 2, 3)) * 10).long().clamp(0, 9)

    def fit(model, steps, lr):
        x, y = data()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return float(loss)
"""

SCRIPT = """
    import json
    from pathlib import Path

    import torch
    import mlbook
    from common.training import SCALE, fit

    exp = mlbook.Experiment(
        base={{"lr": 0.1, "steps": 3}},
        versions={{"small": {{"width": 4}}}},
        files=["config.json"],
        title="tiny cnn",
    )

    class Net(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, width, 3, padding=1)
            self.head = torch.nn.Linear(width * 64, 10)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x * SCALE)).flatten(1))

    @exp.model
    def build(p):
        config = json.loads((Path(__file__).parent / "config.json").read_text())
        assert config["ok"]
        torch.manual_seed(0)  # the same weights every time: tests that probe them are stable
        return Net(p.width)

    @exp.train
    def train(run, model):
        loss = fit(model, run.params.steps, run.params.lr)
        run.save_weights(model)
        mlbook.ClassEncoding.contiguous([f"d{{i}}" for i in range(10)]).save(
            run.path("labels.json")
        )
        return {{"loss": loss}}

    @exp.sample
    def sample(p):
        return torch.ones(2, 1, 8, 8)

    @exp.predict
    def predict(model, inputs):
        if isinstance(inputs, list):  # PIL images from the server
            import numpy as np
            gray = [im.convert("L").resize((8, 8)) for im in inputs]
            arr = np.stack([np.asarray(im, "float32") / 255 for im in gray])
            inputs = torch.from_numpy(arr).unsqueeze(1)
        return model(inputs).softmax(-1)
"""


def make_project(
    root: Path, scale: float = 1.0, extra: str = "", snapshots: bool = False
) -> Project:
    """A project with E001 (a tiny CNN using Models/common/training.py), run once."""
    project = init_project(root).project
    models = project.models_dir
    (models / "common").mkdir(exist_ok=True)
    (models / "common" / "__init__.py").write_text("")
    (models / "common" / "training.py").write_text(textwrap.dedent(TRAINING.format(scale=scale)))
    (models / "config.json").write_text('{"ok": true}')
    (models / "E001_tiny_cnn.py").write_text(
        textwrap.dedent(SCRIPT.format()) + textwrap.dedent(extra)
    )
    observers = []
    if snapshots:
        from mlbook.provenance.observer import ProvenanceObserver

        observers.append(ProvenanceObserver(project))
    result = run_experiments(project, ["E001"], observers=observers)
    assert result.ok, result.runs[0].error
    return project


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(tmp_path_factory.mktemp("deploy") / "proj")
    return export_run(project, "E001", "small").path


@pytest.fixture
def bundle(exported: Path, tmp_path: Path) -> Path:
    """A copy of the export inside the same project (so the project's key is trusted)."""
    copy = exported.parents[1] / "copies" / tmp_path.name / "E001-small"
    shutil.copytree(exported, copy)
    return copy


def resign(bundle: Path) -> None:
    """Re-seal the manifest of an edited bundle and sign it with its project's key."""
    from mlbook.deploy.manifest import write_manifest
    from mlbook.deploy.signing import project_key, sign_bundle

    write_manifest(bundle, read_manifest(bundle))
    sign_bundle(bundle, project_key(mlbook.find_root(bundle)))


def test_bundle_layout_and_manifest(exported: Path) -> None:
    names = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert names == [
        "code/E001_tiny_cnn.py",
        "code/common/__init__.py",
        "code/common/training.py",
        "code/config.json",
        "labels.json",
        "manifest.json",
        "params.json",
        "sample.pt",
        "signature.json",
        "weights/model.safetensors",
    ]
    manifest = read_manifest(exported)
    assert (manifest.experiment, manifest.version, manifest.title) == ("E001", "small", "tiny cnn")
    assert manifest.entry_point == "code/E001_tiny_cnn.py"
    assert manifest.weights_format == "safetensors"
    assert manifest.packages["torch"].startswith("2.")
    assert manifest.verification is not None and manifest.verification.ok
    assert manifest.verification.output == "tensor(2, 10) float32"
    assert {f.path for f in manifest.files} == set(names) - {"manifest.json", "signature.json"}
    assert all(len(f.sha256) == 64 and f.size >= 0 for f in manifest.files)
    assert not list(exported.parent.glob(".*tmp*"))


def test_copied_bundle_loads_and_predicts_without_models(exported: Path, tmp_path: Path) -> None:
    import os

    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(exported, copy)
    project_root = exported.parents[2]
    public = tmp_path / "project.pub"
    result = CliRunner().invoke(cli, ["-C", str(project_root), "key", "--export", str(public)])
    assert result.exit_code == 0, result.output
    models = project_root / "Models"
    models.rename(project_root / "Models_away")
    try:
        code = (
            "import mlbook, sys\n"
            f"m = mlbook.load({str(copy)!r})\n"
            "out = m.predict(m.sample())\n"
            "assert not any('Models' in p for p in sys.path)\n"
            "print(out.shape[0], m.labels.decode(int(out[0].argmax())), m.params.width)\n"
        )
        env = {**os.environ, "MLBOOK_TRUSTED_KEYS": str(public)}
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
    finally:
        (project_root / "Models_away").rename(models)
    assert done.returncode == 0, done.stderr
    shape, label, width = done.stdout.split()
    assert shape == "2" and label.startswith("d") and width == "4"


def test_load_in_process(bundle: Path) -> None:
    loaded = mlbook.load(bundle)
    assert loaded.labels is not None and loaded.labels.names[0] == "d0"
    assert loaded.params.width == 4
    assert loaded.manifest.run_id
    out = loaded.predict(torch.ones(3, 1, 8, 8))
    assert out.shape == (3, 10) and torch.allclose(out.sum(-1), torch.ones(3))
    assert not loaded.model.training
    assert not list(bundle.rglob("__pycache__"))


def test_tampered_code_is_refused(bundle: Path) -> None:
    target = bundle / "code" / "common" / "training.py"
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(
        ExportError, match=r"file code/common/training\.py was changed after export"
    ):
        mlbook.load(bundle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: (b / "weights" / "model.safetensors").unlink(),
            "file weights/model.safetensors is missing",
        ),
        (lambda b: (b / "code" / "extra.py").write_text("x = 1\n"), "extra file code/extra.py"),
        (
            lambda b: (
                (b / "code" / "__pycache__").mkdir()
                or (b / "code" / "__pycache__" / "a.pyc").write_bytes(b"")
            ),
            "extra file code/__pycache__/a.pyc",
        ),
        (lambda b: (b / "link.py").symlink_to(b / "params.json"), "link.py is a symbolic link"),
        (lambda b: (b / "manifest.json").write_text("{"), "manifest.json: not valid JSON"),
        (lambda b: (b / "manifest.json").unlink(), "manifest.json: missing"),
    ],
)
def test_incomplete_or_altered_bundles_are_refused(bundle: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    change(bundle)
    with pytest.raises(ExportError, match=message.replace(".", r"\.")):
        mlbook.load(bundle)


@pytest.mark.parametrize(
    "bad", ["../outside.py", "/etc/passwd", "code/../../x.py", "code\\x.py", ""]
)
def test_manifest_paths_escaping_the_bundle_are_refused(bundle: Path, bad: str) -> None:
    import orjson

    raw = orjson.loads((bundle / "manifest.json").read_bytes())
    raw["files"][0]["path"] = bad
    (bundle / "manifest.json").write_bytes(orjson.dumps(raw))
    with pytest.raises(ExportError, match="escapes the bundle"):
        mlbook.load(bundle)


def test_two_bundles_with_the_same_module_names_load_side_by_side(
    exported: Path, tmp_path: Path
) -> None:
    other = export_run(make_project(tmp_path / "other", scale=0.0), "E001", "small").path
    first, second = mlbook.load(exported), mlbook.load(other)
    assert first.module.__name__ != second.module.__name__
    x = torch.ones(1, 1, 8, 8)
    # SCALE=0 in the second bundle's common/training.py: its conv sees zeros
    assert sys.modules[second.module.__name__.rsplit(".", 1)[0] + ".common.training"].SCALE == 0.0
    assert sys.modules[first.module.__name__.rsplit(".", 1)[0] + ".common.training"].SCALE == 1.0
    expected_second = second.model.head(torch.relu(second.model.conv(x * 0.0)).flatten(1))
    assert torch.allclose(second.model(x), expected_second)
    assert not torch.allclose(first.predict(x), second.predict(x))


def test_failed_verification_leaves_nothing(tmp_path: Path) -> None:
    extra = """
    @exp.sample
    def sample(p):
        raise RuntimeError("no sample here")
    """
    project = make_project(tmp_path / "broken", extra=extra)
    with pytest.raises(
        ExportError, match=r"verification in a clean process failed: .*no sample here"
    ):
        export_run(project, "E001", "small")
    assert not project.exports_dir.exists()  # the export made it, and removed it again


def test_export_refuses_changed_code_unless_forced(exported: Path, tmp_path: Path) -> None:
    project = Project.open(exported.parents[2])
    training = project.models_dir / "common" / "training.py"
    original = training.read_text()
    training.write_text(original + "\n# edited\n")
    try:
        with pytest.raises(ExportError, match=r"Models/common/training\.py changed since the run"):
            export_run(project, "E001", "small", dest=tmp_path / "changed")
        assert not (tmp_path / "changed").exists()
    finally:
        training.write_text(original)


def test_export_errors(project: Project) -> None:
    with pytest.raises(ExportError, match="unknown experiment E404"):
        export_run(project, "E404")
    (project.models_dir / "E001_x.py").write_text(
        "import mlbook\nexp = mlbook.Experiment()\n@exp.train\ndef train(run):\n    return None\n"
    )
    with pytest.raises(
        ExportError, match=r"no completed run of E001; run it first with `mlbook run E001`"
    ):
        export_run(project, "E001")
    with pytest.raises(ExperimentError, match=r"unknown version 'huge'; versions: default"):
        export_run(project, "E001", "huge")
    with pytest.raises(ExportError, match=r"no completed run of E001 --version default;"):
        export_run(project, "E001", "default")


def test_cli_exports_lists_status(exported: Path, bundle: Path) -> None:
    project_root = exported.parents[2]
    result = CliRunner().invoke(cli, ["-C", str(project_root), "exports", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"status": "signed"' in result.output
    (bundle / "params.json").write_text("{}")
    infos = list_exports(directory=bundle.parent)
    assert [(i.name, i.status) for i in infos] == [("E001-small", "tampered")]
    assert "params.json was changed" in infos[0].problem


def test_cli_export_subprocess_with_onnx(exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    project_root = exported.parents[2]
    dest = tmp_path / "with-onnx"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlbook",
            "export",
            "E001",
            "-v",
            "small",
            "--onnx",
            "--dest",
            str(dest),
        ],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "verified  in a clean process: predicted tensor(2, 10) float32" in done.stdout
    manifest = read_manifest(dest)
    assert manifest.onnx is not None and manifest.onnx.max_abs_diff is not None
    assert manifest.onnx.max_abs_diff < 1e-4
    assert (dest / "model.onnx").is_file()
    assert "signed    with this project's key SHA256:" in done.stdout
    public = project_root / ".mlbook" / "keys" / "signing.pub"
    mlbook.load(dest, trusted_keys=[public])  # the ONNX file is listed in the manifest


def test_cli_export_error_is_one_line(project: Project) -> None:
    result = CliRunner().invoke(cli, ["-C", str(project.root), "export", "E404"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown experiment E404")
    assert len(result.output.strip().splitlines()) == 1


SKLEARN_SCRIPT = """
import mlbook

exp = mlbook.Experiment(versions={"c1": {"C": 1.0}}, dataset="toy")


@exp.model
def build(p):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p.C)


@exp.train
def train(run, model):
    import numpy as np

    x, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1])
    model.fit(x, y)
    run.save_weights(model)
    return {"acc": float(model.score(x, y))}


@exp.sample
def sample(p):
    return [[0.0], [3.0]]
"""


def test_scikit_learn_model_with_dataset_labels(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from mlbook.datasets.metadata import ClassInfo, DatasetInfo, Record, save_dataset

    project = init_project(tmp_path / "sk").project
    classes = [ClassInfo(id=0, name="cat"), ClassInfo(id=1, name="dog")]
    records = [
        Record(id="1", file="a.png", labels=["cat"]),
        Record(id="2", file="b.png", labels=["dog"]),
    ]
    save_dataset(project.datasets_dir / "toy", DatasetInfo(name="toy", classes=classes), records)
    (project.models_dir / "E002_logreg.py").write_text(SKLEARN_SCRIPT)
    assert run_experiments(project, ["E002"], observers=[]).ok
    result = export_run(project, "E002")
    manifest = result.manifest
    assert (manifest.version, manifest.weights_format, manifest.sample_file) == (
        "c1",
        "pickle",
        "sample.json",
    )
    assert manifest.dataset == "toy"
    assert "scikit-learn" in manifest.packages
    assert manifest.verification is not None and manifest.verification.output == "ndarray(2,) int64"
    loaded = mlbook.load(result.path)
    assert loaded.labels is not None and loaded.labels.names == ["cat", "dog"]
    predicted = loaded.predict(loaded.sample())
    assert [loaded.labels.decode(int(i)) for i in predicted] == ["cat", "dog"]


def test_exports_verify_reloads_in_a_clean_process(exported: Path, bundle: Path) -> None:
    result = CliRunner().invoke(
        cli, ["exports", "--dir", str(exported.parent), "--verify", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert '"status": "signed"' in result.output
    # signed, consistent hashes, but code that cannot run without Models/: caught by the child
    script = bundle / "code" / "E001_tiny_cnn.py"
    script.write_text("import E999_not_exported\n" + script.read_text())
    resign(bundle)
    (info,) = list_exports(directory=bundle.parent, verify=True)
    assert info.status == "invalid"
    assert "verification in a clean process failed" in info.problem
    assert "E999_not_exported" in info.problem


def test_verifier_refuses_to_run_with_the_project_importable(bundle: Path, tmp_path: Path) -> None:
    import orjson

    from mlbook.deploy import verify

    report = tmp_path / "report.json"
    code = verify.main([str(bundle), "--report", str(report), "--forbid", str(Path.cwd())])
    assert code == 1
    error = orjson.loads(report.read_bytes())["error"]
    assert error.startswith(f"the verifying process can import from {Path.cwd().resolve()}")


def test_cli_exports_text(exported: Path, project: Project) -> None:
    manifest = read_manifest(exported)
    result = CliRunner().invoke(cli, ["exports", "--dir", str(exported.parent)])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["export", "run", "metrics", "created", "onnx", "status"]
    loss = manifest.metrics["loss"]
    assert row.split() == [
        "E001-small",
        manifest.run_id,
        f"loss={loss:.4g}",
        manifest.created,
        "signed",
    ]
    empty = CliRunner().invoke(cli, ["-C", str(project.root), "exports"])
    assert empty.output == "no exports yet; create one with `mlbook export ID --version NAME`\n"


def test_changed_code_is_taken_from_the_runs_snapshot(tmp_path: Path) -> None:
    project = make_project(tmp_path / "snap", snapshots=True)
    (run,) = mlbook.runs(project)
    assert run.commit_before is not None
    training = project.models_dir / "common" / "training.py"
    original = training.read_text()
    training.write_text(original.replace("SCALE = 1.0", "SCALE = 2.0"))
    result = export_run(project, "E001", "small")
    assert result.manifest.code_commit == run.commit_before
    assert (result.path / "code" / "common" / "training.py").read_text() == original
    forced = export_run(project, "E001", "small", dest=tmp_path / "forced", current_code=True)
    assert forced.manifest.code_commit is None
    assert "SCALE = 2.0" in (forced.path / "code" / "common" / "training.py").read_text()
    shown = CliRunner().invoke(
        cli, ["-C", str(project.root), "export", "E001", "-v", "small", "--dest", "../cli"]
    )
    assert shown.exit_code == 0, shown.output
    assert f"code      from the run's snapshot {run.commit_before[:7]}: " in shown.output


def test_failed_load_leaves_no_modules_behind(bundle: Path) -> None:
    script = bundle / "code" / "E001_tiny_cnn.py"
    script.write_text(
        script.read_text().replace("import json\n", "import json\nimport E999_gone\n")
    )
    resign(bundle)
    before_path, before_modules = list(sys.meta_path), set(sys.modules)
    with pytest.raises(
        ExportError,
        match=r"importing code/E001_tiny_cnn\.py failed: ModuleNotFoundError: .*E999_gone",
    ):
        mlbook.load(bundle)
    assert sys.meta_path == before_path
    assert not [m for m in set(sys.modules) - before_modules if m.startswith("_mlbook_bundle")]


def test_deleted_code_is_taken_from_the_snapshot_or_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path / "gone", snapshots=True)
    (project.models_dir / "config.json").unlink()  # declared with files=[...]
    with pytest.raises(
        ExportError, match=r"Models/config\.json: listed in Experiment\(files=\.\.\.\)"
    ):
        export_run(project, "E001", "small", current_code=True)
    training = project.models_dir / "common" / "training.py"
    saved = training.read_text()
    training.unlink()
    result = export_run(project, "E001", "small")
    assert result.manifest.code_commit is not None
    assert (result.path / "code" / "common" / "training.py").read_text() == saved
    assert (result.path / "code" / "config.json").is_file()


def test_full_disk_during_export_is_one_line_and_leaves_nothing(
    exported: Path, tmp_path: Path
) -> None:
    import errno
    import os

    from mlbook.deploy.bundle import write_file

    project = Project.open(exported.parents[2])

    def full_disk(target: Path, source: bytes | Path) -> None:
        if target.parent.name == "weights":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        write_file(target, source)

    dest = tmp_path / "new" / "deeper" / "E001-small"
    with pytest.raises(ExportError) as failed:
        export_run(project, "E001", "small", dest=dest, writer=full_disk)
    message = str(failed.value)
    assert message.startswith(
        f"{dest}: cannot write the export (No space left on device, errno 28)"
    )
    assert "nothing was written" in message and "\n" not in message
    assert not (tmp_path / "new").exists()  # no staging directory, no empty parents
    before = sorted(p.name for p in exported.parent.iterdir())
    with pytest.raises(ExportError, match="No space left on device"):
        export_run(project, "E001", "small", force=True, writer=full_disk)  # over the old one
    assert sorted(p.name for p in exported.parent.iterdir()) == before
    mlbook.load(exported)  # the older bundle is untouched


def test_export_onto_a_full_tmpfs_is_one_line(exported: Path, tmp_path: Path) -> None:
    """A real ENOSPC: a 16 KiB tmpfs mounted in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {mount} || exit 99\n"
        f"{sys.executable} -m mlbook export E001 -v small --dest {mount}/E001-small\n"
        "code=$?\n"
        f'echo "left:$(ls -A {mount})"\n'
        "exit $code\n"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        cwd=exported.parents[2],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode == 99 or done.stderr.startswith("unshare:"):
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "No space left on device" in lines[0]
    assert done.stdout.strip().splitlines()[-1] == "left:"
