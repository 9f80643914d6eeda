"""`mlbook data process | lineage | restore`: steps, dvc.yaml stages, restoring a run's data.

Real processes, git and DVC (skipped without the `dvc` extra); the docs walkthrough
(docs/data-versions.md) runs end to end as the issue's "done when".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_helpers import DVC, SCRIPT, mlbook, sh

from mlbook.errors import DatasetError
from mlbook.experiments.query import data_steps, run_datasets, runs
from mlbook.project import Project
from mlbook.provenance.lineage import lineage, pipeline_warnings, process_data
from mlbook.provenance.restore import restore_data

CLEAN = """\
import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--in", dest="inputs", action="append", default=[])
parser.add_argument("--out")
parser.add_argument("--limit", type=int, default=100)
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()
out = pathlib.Path(args.out)
files = sorted(pathlib.Path(args.inputs[0]).iterdir())[: args.limit]
for index, path in enumerate(files):
    if args.fail and index == 1:
        raise ValueError("bad row in " + path.name)
    (out / path.name).write_text(path.read_text().upper())
print("cleaned", len(files))
"""


@pytest.fixture
def steps_project(project: Project) -> Project:
    """A project with Datasets/raw (3 files), Data_processing/clean.py and E001 on cars."""
    raw = project.datasets_dir / "raw"
    raw.mkdir(parents=True)
    for index in range(3):
        (raw / f"r{index}.txt").write_text(f"row {index}\n")
    (project.data_processing_dir / "clean.py").write_text(CLEAN)
    (project.root / "Models" / "E001_x.py").write_text(SCRIPT)
    with open(project.root / "mlbook.toml", "a") as handle:
        handle.write('\n[experiments.E001]\ndataset = "cars"\n')
    sh(project.root, "git", "add", "-A")
    sh(project.root, "git", "commit", "-qm", "start")
    return Project.open(project.root)


def test_process_records_a_step_and_lineage_links_it_to_runs(steps_project: Project) -> None:
    root = steps_project.root
    lines: list[str] = []
    result = process_data(
        steps_project,
        "Data_processing/clean.py",
        ["Datasets/raw"],
        "Datasets/cars",
        echo=lines.append,
    )
    assert result.ok and lines == ["cleaned 3"]
    assert sorted(p.name for p in (root / "Datasets" / "cars").iterdir()) == [
        "r0.txt",
        "r1.txt",
        "r2.txt",
    ]
    assert not [p for p in (root / "Datasets").iterdir() if p.name.startswith(".cars")]
    (step,) = data_steps(steps_project)
    assert (step.script, step.target, step.status, step.returncode) == (
        "Data_processing/clean.py",
        "Datasets/cars",
        "completed",
        0,
    )
    assert step.commit_before and len(step.script_sha256) == 64
    assert [d.path for d in step.inputs] == ["Datasets/raw"]  # no metadata: DVC's md5 alone
    assert {d.scheme for d in step.outputs} == {"md5"}
    mlbook(root, "run", "E001")
    (run,) = runs(steps_project)
    (record,) = run_datasets(steps_project, run.id)
    found = lineage(steps_project, "Datasets/cars")
    (version,) = found.versions
    assert version.current and [r.run_id for r in version.runs] == [run.id]
    assert version.steps[0].id == step.id and record.hash == version.hash
    shown = mlbook(root, "show", run.id).stdout
    assert f"made by Data_processing/clean.py@{step.commit_before[:7]} (step {step.id}" in shown
    text = mlbook(root, "data", "lineage", "Datasets/cars").stdout
    assert text.splitlines()[0] == "Datasets/cars"
    assert f"used by {run.id}" in text


def test_a_failing_script_is_a_failed_step_and_keeps_the_old_output(
    steps_project: Project,
) -> None:
    root = steps_project.root
    assert process_data(
        steps_project, "Data_processing/clean.py", ["Datasets/raw"], "Datasets/cars"
    ).ok
    before = sorted(p.name for p in (root / "Datasets" / "cars").iterdir())
    done = mlbook(
        root,
        "data",
        "process",
        "Data_processing/clean.py",
        "--in",
        "Datasets/raw",
        "--out",
        "Datasets/cars",
        "--",
        "--fail",
        code=1,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Data_processing/clean.py failed (ValueError: bad row in r1.txt)")
    assert "Datasets/cars is as it was" in last
    assert sorted(p.name for p in (root / "Datasets" / "cars").iterdir()) == before
    failed = data_steps(steps_project)[-1]
    assert (failed.status, failed.returncode, failed.params) == ("failed", 1, ["--fail"])
    assert "Traceback" in failed.output and failed.outputs == []
    assert [s.id for s in lineage(steps_project, "Datasets/cars").failed] == [failed.id]


def test_the_boundary_rule_holds_statically_and_at_run_time(steps_project: Project) -> None:
    area = steps_project.data_processing_dir
    (area / "leak.py").write_text("from Models import E001_x\n")
    with pytest.raises(DatasetError, match=r"leak.py:1: import-boundary: .*see `mlbook check`"):
        process_data(steps_project, "Data_processing/leak.py", [], "Datasets/out")
    (area / "sneak.py").write_text("import os\nname = 'Mod' + 'els'\nprint(os.listdir(name))\n")
    result = process_data(steps_project, "Data_processing/sneak.py", [], "Datasets/out")
    assert result.status == "failed"
    assert "PermissionError: mlbook data process: Models is outside Datasets/" in result.log
    assert not (steps_project.datasets_dir / "out").exists()
    for bad, message in [
        (("Models/E001_x.py", [], "Datasets/o"), "must lie inside Data_processing/"),
        (("Data_processing/clean.py", ["Models"], "Datasets/o"), "--in Models: must lie inside"),
        (("Data_processing/clean.py", ["Datasets/raw"], "Datasets/raw/x"), "overlaps --in"),
        (("Data_processing/clean.py", [], "Datasets"), "--out Datasets: must lie inside"),
    ]:
        with pytest.raises(DatasetError, match=message):
            process_data(steps_project, *bad)  # type: ignore[arg-type]


def test_restore_without_dvc_brings_back_what_git_holds(steps_project: Project) -> None:
    root = steps_project.root
    digits = steps_project.datasets_dir / "digits"
    digits.mkdir()
    (digits / "dataset.json").write_text('{"name": "digits"}')
    (digits / "records.jsonl").write_text('{"id": "1"}\n{"id": "2"}\n')
    with open(root / "mlbook.toml", "a") as handle:
        handle.write('\n[experiments.E002]\ndataset = "digits"\n')
    (root / "Models" / "E002_y.py").write_text(SCRIPT)
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "digits")
    mlbook(root, "run", "E002")
    (first,) = runs(steps_project)
    (digits / "records.jsonl").write_text('{"id": "1"}\n')
    with pytest.raises(DatasetError, match=r"Datasets/digits has changes git does not hold"):
        restore_data(steps_project, first.id)
    sh(root, "git", "commit", "-qam", "one record")
    (restored,) = restore_data(steps_project, first.id)
    assert (restored.how, restored.note) == ("git", "")
    assert (digits / "records.jsonl").read_text().count("\n") == 2
    with pytest.raises(DatasetError, match="recorded no dataset Datasets/cars; it used"):
        restore_data(steps_project, first.id, "Datasets/cars")


def _dvc_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not DVC.exists():
        pytest.skip("dvc not installed (extra mlbook[dvc])")
    monkeypatch.setenv("PATH", f"{DVC.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


@pytest.mark.slow
def test_restoring_an_old_run_brings_back_its_file_count(
    steps_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _dvc_env(monkeypatch, tmp_path)
    root = steps_project.root
    cars = root / "Datasets" / "cars"
    sh(root, "dvc", "init", "-q")
    assert process_data(
        steps_project, "Data_processing/clean.py", ["Datasets/raw"], "Datasets/cars"
    ).ok
    sh(root, "dvc", "add", "-q", "Datasets/cars")
    mlbook(root, "run", "E001")
    assert process_data(
        steps_project,
        "Data_processing/clean.py",
        ["Datasets/raw"],
        "Datasets/cars",
        ["--limit", "2"],
    ).ok
    sh(root, "dvc", "add", "-q", "Datasets/cars")  # the .dvc change is never committed to git
    mlbook(root, "run", "E001")
    second, first = runs(steps_project)
    assert len(list(cars.iterdir())) == 2
    out = mlbook(root, "data", "restore", first.id).stdout
    assert out.startswith("Datasets/cars md5:") and out.rstrip().endswith(
        "(3 files) with dvc checkout"
    )
    assert len(list(cars.iterdir())) == 3
    diff = mlbook(root, "diff", first.id, second.id, "--no-color").stdout
    assert "data Datasets/cars: md5:" in diff
    assert f"warning: Datasets/cars changed since run {second.id}" in diff
    (cars / "r0.txt").write_text("edited\n")
    refused = mlbook(root, "data", "restore", second.id, code=1)
    assert "Datasets/cars has changes DVC has not recorded" in refused.stderr
    sh(root, "dvc", "checkout", "-q", "--force", "Datasets/cars.dvc")
    (restored,) = restore_data(steps_project, second.id)  # from its before snapshot
    assert (restored.how, restored.nfiles) == ("dvc", 2)
    shutil_rmtree(root / ".dvc" / "cache")
    failed = mlbook(root, "data", "restore", first.id, code=1)
    assert "the DVC cache lacks the data of Datasets/cars" in failed.stderr
    assert "`dvc fetch` (or `dvc pull`) first" in failed.stderr
    assert len(list(cars.iterdir())) == 2  # nothing changed, the .dvc file put back


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


@pytest.mark.slow
def test_lineage_reads_a_dvc_yaml_stage_and_warns_about_missing_deps(
    steps_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _dvc_env(monkeypatch, tmp_path)
    root = steps_project.root
    sh(root, "dvc", "init", "-q")
    sh(
        root,
        "dvc",
        "stage",
        "add",
        "-q",
        "-n",
        "clean",
        "-d",
        "Datasets/raw",
        "-d",
        "Data_processing/clean.py",
        "-o",
        "Datasets/cars",
        "mkdir -p Datasets/cars && "
        "python Data_processing/clean.py --in Datasets/raw --out Datasets/cars",
    )
    sh(root, "dvc", "repro", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "pipeline")
    mlbook(root, "run", "E001")
    (run,) = runs(steps_project)
    (record,) = run_datasets(steps_project, run.id)
    assert (record.state, record.source, record.stage) == ("clean", "dvc.lock", "clean")
    (version,) = lineage(steps_project, "Datasets/cars").versions
    (step,) = version.steps
    assert (step.kind, step.script, step.id) == (
        "dvc",
        "Data_processing/clean.py",
        "dvc.lock:clean",
    )
    assert step.script_hash.startswith("md5:") and step.commit
    assert [r.run_id for r in version.runs] == [run.id]
    assert "dvc.lock stage clean:" in mlbook(root, "show", run.id).stdout
    assert pipeline_warnings(steps_project) == []
    text = (root / "dvc.yaml").read_text().replace("    - Data_processing/clean.py\n", "")
    (root / "dvc.yaml").write_text(text)
    (warning,) = pipeline_warnings(steps_project)
    assert warning.startswith("dvc.yaml: stage clean runs Data_processing/clean.py, which is not")
    shown = mlbook(root, "data", "lineage", "Datasets/cars")
    assert "warning: dvc.yaml: stage clean runs Data_processing/clean.py" in shown.stderr


@pytest.mark.slow
def test_docs_walkthrough_two_data_versions_and_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    _dvc_env(monkeypatch, tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    doc = (Path(__file__).parents[1] / "docs" / "data-versions.md").read_text()
    block = doc.split("<!-- walkthrough -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    script = block + 'echo "FIRST=$FIRST SECOND=$SECOND"\nls Datasets/digits/images | wc -l\n'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    shows = [
        line for line in out.splitlines() if line.startswith(("data: Datasets/digits", "  made by"))
    ]
    assert shows[0].startswith("data: Datasets/digits md5:") and "(1,799 files)" in shows[0]
    assert shows[1].startswith("  made by Data_processing/prepare_digits.py@")
    assert "(1,002 files)" in shows[2] and shows[3].startswith(
        "  made by Data_processing/prepare_digits.py@"
    )
    assert shows[0].split()[2] != shows[2].split()[2]  # two data versions
    assert "(1,799 files) with dvc checkout" in out
    assert out.strip().splitlines()[-1].strip() == "1797"
