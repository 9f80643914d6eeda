"""`mlbook check`: planted violations are found with file and line; clean projects pass."""

from __future__ import annotations

from pathlib import Path

from mlbook.boundaries import Violation, check_project
from mlbook.project import Project


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _clean_project(project: Project) -> None:
    _write(project.models_dir / "common" / "training.py", "import json\n\ndef fit():\n    pass\n")
    _write(
        project.models_dir / "E001_digits.py",
        '"""Docstring that mentions Deployment/ is fine."""\n'
        "import os\nimport numpy\nfrom common.training import fit\nfrom common import training\n"
        "from . import helpers\n"
        'DATA = "../Datasets/digits/records.jsonl"\nOUT = "outputs/E001"\n'
        'x = os.path.join("..", "Datasets", "weights")\n',
    )
    _write(project.models_dir / "helpers.py", "VALUE = 1\n")
    _write(
        project.deployment_dir / "serve.py",
        "import mlbook\nfrom utils import load\n"
        'model = mlbook.load("exports/E001-small")\nlabels = "../Datasets/digits/dataset.json"\n',
    )
    _write(project.deployment_dir / "utils.py", "def load():\n    pass\n")
    _write(
        project.data_processing_dir / "prepare.py",
        'from pathlib import Path\nout = Path("../Datasets/digits")\n',
    )
    # exported bundles and run outputs hold other areas' code by design
    _write(project.exports_dir / "E001-small" / "code" / "E001_digits.py", "import common\n")
    _write(project.outputs_dir / "E001" / "v" / "r" / "x.py", "import Deployment\n")


def test_clean_project_passes(project: Project) -> None:
    _clean_project(project)
    report = check_project(project)
    assert report.violations == []
    assert report.ok
    assert report.files == 7  # common/__init__, training, E001, helpers, serve, utils, prepare


def test_planted_violations_are_all_found(project: Project) -> None:
    _clean_project(project)
    _write(
        project.models_dir / "E002_bad.py",
        "from Deployment import server\n"
        "import utils\n"
        'open("../Deployment/config.json")\n'
        'p = f"../Data_processing/{1}"\n'
        "import importlib\n"
        'importlib.import_module("Deployment.server")\n',
    )
    _write(
        project.deployment_dir / "app.py",
        "import common.training\n"
        "from pathlib import Path\n"
        'w = Path("Models")\n'
        'o = "/absolute/elsewhere/ok.txt"\n'
        f'bad = "{project.models_dir / "outputs" / "w.pt"}"\n'
        "from ..Models import E001_digits\n",
    )
    _write(project.data_processing_dir / "clean.py", 'import E001_digits\nq = "Models/x.csv"\n')
    report = check_project(project)
    found = [(v.path, v.line, v.rule) for v in report.violations]
    assert found == [
        ("Data_processing/clean.py", 1, "import-boundary"),
        ("Data_processing/clean.py", 2, "path-boundary"),
        ("Deployment/app.py", 1, "import-boundary"),
        ("Deployment/app.py", 3, "path-boundary"),
        ("Deployment/app.py", 5, "path-boundary"),
        ("Deployment/app.py", 6, "import-boundary"),
        ("Models/E002_bad.py", 1, "import-boundary"),
        ("Models/E002_bad.py", 2, "import-boundary"),
        ("Models/E002_bad.py", 3, "path-boundary"),
        ("Models/E002_bad.py", 4, "path-boundary"),
        ("Models/E002_bad.py", 6, "import-boundary"),
    ]
    first = report.violations[6]
    assert str(first) == (
        "Models/E002_bad.py:1: import-boundary: 'from Deployment import server' reaches into "
        "Deployment/ (training code may use only Datasets/ and Models/)"
    )


def test_syntax_error_and_unreadable_file_are_reported(project: Project) -> None:
    _write(project.models_dir / "E003_broken.py", "def oops(:\n    pass\n")
    (project.models_dir / "E004_binary.py").write_bytes(b"\xff\xfe\x00\x00")
    (project.models_dir / "E005_dangling.py").symlink_to(project.root / "missing.py")
    report = check_project(project)
    assert [(v.path, v.rule) for v in report.violations] == [
        ("Models/E003_broken.py", "syntax-error"),
        ("Models/E004_binary.py", "syntax-error"),
        ("Models/E005_dangling.py", "unreadable"),
    ]
    assert report.violations[0].line == 1
    assert report.violations[0].detail.startswith("cannot parse:")


def test_violation_format() -> None:
    v = Violation("Models/a.py", 3, "import-boundary", "detail")
    assert str(v) == "Models/a.py:3: import-boundary: detail"


def test_record_paths_that_leave_the_datasets_area_are_flagged(project: Project) -> None:
    _clean_project(project)
    records = project.datasets_dir / "cars" / "records.jsonl"
    _write(
        records,
        '{"id": "1", "file": "images/a.jpg"}\n'
        '{"id": "2", "file": "../../Data_processing/raw/b.jpg"}\n'
        "not json\n"
        '{"id": "4", "file": "a.jpg", "mask": "/data/masks/4.png"}\n'
        '{"id": "5", "features": {"table": "../other/emb.npy", "row": 0}}\n',
    )
    found = [str(v) for v in check_project(project).violations]
    fix = "bring the files into the dataset with `mlbook data convert SRC DST --images copy`"
    assert found == [
        "Datasets/cars/records.jsonl:2: record-path: file '../../Data_processing/raw/b.jpg' "
        f"points outside Datasets/ (data reaches training only through Datasets/); {fix}",
        "Datasets/cars/records.jsonl:4: record-path: mask '/data/masks/4.png' points outside "
        f"Datasets/ (data reaches training only through Datasets/); {fix}",
        "Datasets/cars/records.jsonl:5: record-path: features.table: path leaves the dataset "
        "directory ('../other/emb.npy'); give a path relative to the dataset directory, inside it",
    ]
