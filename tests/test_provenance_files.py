"""Files a run used, package versions, dataset versions and stale-weights detection."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlbook.errors import DatasetError
from mlbook.provenance.data import dataset_version
from mlbook.provenance.files import (
    ImportStatement,
    UsedFile,
    file_imports,
    import_statements,
    package_versions,
    used_files,
)
from mlbook.provenance.stale import stale_files, stale_summary


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    m = root / "Models"
    write(m / "common" / "__init__.py", "")
    write(m / "common" / "training.py", "from .metrics import accuracy\n")
    write(m / "common" / "metrics.py", "def accuracy(): return 1\n")
    write(m / "common" / "lazy.py", "X = 1\n")
    write(m / "common" / "unused.py", "Y = 1\n")
    write(m / "nets" / "__init__.py", "")
    write(m / "nets" / "cnn.py", "import os\n")
    write(
        m / "E012_cnn.py",
        "import json\nimport mlbook\nfrom common.training import fit\nfrom nets import cnn\n"
        "def build():\n    from common import lazy\n    return lazy.X\n",
    )
    write(root / ".venv" / "lib" / "site-packages" / "dep.py", "")
    return root


def test_static_walk_finds_shared_code_relative_and_lazy_imports(models: Path) -> None:
    files = used_files(
        models, script=models / "Models" / "E012_cnn.py", search_path=[models / "Models"]
    )
    assert [f.path for f in files] == [
        "Models/E012_cnn.py",
        "Models/common/__init__.py",
        "Models/common/lazy.py",
        "Models/common/metrics.py",
        "Models/common/training.py",
        "Models/nets/__init__.py",
        "Models/nets/cnn.py",
    ]
    script = files[0]
    data = (models / "Models" / "E012_cnn.py").read_bytes()
    assert (script.size, script.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_loaded_modules_are_merged_and_outside_files_dropped(models: Path) -> None:
    loaded = [
        str(models / "Models" / "common" / "unused.py"),
        str(models / ".venv" / "lib" / "site-packages" / "dep.py"),
        json.__file__,
        "",
    ]
    files = used_files(models, loaded)
    assert [f.path for f in files] == ["Models/common/unused.py"]


def test_sys_modules_of_a_real_child(models: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, 'Models'); import common.training\n"
        "print('\\n'.join(getattr(m, '__file__', None) or '' for m in list(sys.modules.values())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=models, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    paths = [f.path for f in used_files(models, out)]
    assert paths == [
        "Models/common/__init__.py",
        "Models/common/metrics.py",
        "Models/common/training.py",
    ]


def test_package_versions_skip_stdlib_and_unknown() -> None:
    import msgspec

    versions = package_versions(["msgspec", "json", "os.path", "no_such_module", "msgspec.json"])
    assert versions == {"msgspec": msgspec.__version__}


def test_dataset_metadata_hash_ignores_images_unless_asked(tmp_path: Path) -> None:
    ds = tmp_path / "digits"
    write(ds / "dataset.json", '{"name": "digits"}')
    write(ds / "records.jsonl", '{"id": "1"}\n')
    write(ds / "images" / "1.png", "pixels")
    first = dataset_version(ds)
    assert (first.kind, first.files) == ("metadata", 2)
    assert first.hash.startswith("sha256:")
    write(ds / "images" / "1.png", "other pixels")
    assert dataset_version(ds) == first
    full = dataset_version(ds, hash_images=True)
    assert (full.kind, full.files) == ("files", 3)
    write(ds / "records.jsonl", '{"id": "2"}\n')
    assert dataset_version(ds).hash != first.hash
    assert str(first).startswith("metadata:")


def test_dataset_errors_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such dataset directory"):
        dataset_version(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no dataset.json or records file to hash"):
        dataset_version(tmp_path / "empty")


def test_stale_files_reports_modified_and_deleted(models: Path) -> None:
    recorded = used_files(
        models, script=models / "Models" / "E012_cnn.py", search_path=[models / "Models"]
    )
    assert stale_files(recorded, models) == []
    assert stale_summary([], "r1") is None
    write(models / "Models" / "common" / "metrics.py", "def accuracy(): return 2\n")
    (models / "Models" / "nets" / "cnn.py").unlink()
    changes = stale_files(recorded, models)
    assert [(c.path, c.kind) for c in changes] == [
        ("Models/common/metrics.py", "modified"),
        ("Models/nets/cnn.py", "deleted"),
    ]
    assert changes[1].current_sha256 is None
    assert stale_summary(changes, "r1") == (
        "the code changed since run r1 wrote these weights: Models/common/metrics.py (modified), "
        "Models/nets/cnn.py (deleted); see `mlbook diff r1`"
    )
    assert stale_files([UsedFile("gone.py", 1, "0" * 64)], models)[0].kind == "deleted"


def test_imports_nested_in_classes_try_with_and_if_are_found(models: Path) -> None:
    script = write(
        models / "Models" / "E013_nested.py",
        "class A:\n    def m(self):\n        try:\n            pass\n"
        "        except ImportError:\n            import common.unused\n"
        "        with open('x') as f:\n            if f:\n                from nets import cnn\n",
    )
    paths = [f.path for f in used_files(models, script=script, search_path=[models / "Models"])]
    assert paths == [
        "Models/E013_nested.py",
        "Models/common/__init__.py",
        "Models/common/unused.py",
        "Models/nets/__init__.py",
        "Models/nets/cnn.py",
    ]


def test_package_versions_maps_import_names_to_distributions() -> None:
    from importlib import metadata

    import PIL

    assert PIL.__file__
    versions = package_versions(["PIL.Image", "common", "E001_demo"])
    assert {k.lower(): v for k, v in versions.items()} == {"pillow": metadata.version("Pillow")}


def test_import_statements_give_line_module_names_level_and_calls(tmp_path: Path) -> None:
    source = write(
        tmp_path / "m.py",
        "import os, a.b\n"
        "from ..pkg import x, y\n"
        "from . import z\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('Deployment.server')\n"
        "    __import__(name)\n"
        "match 1:\n"
        "    case 1:\n"
        "        from c import *\n",
    )
    found = file_imports(source, calls=True)
    assert found == [
        ImportStatement(1, "os"),
        ImportStatement(1, "a.b"),
        ImportStatement(2, "pkg", ("x", "y"), 2),
        ImportStatement(3, "", ("z",), 1),
        ImportStatement(5, "importlib"),
        ImportStatement(6, "Deployment.server", call="import_module"),
        ImportStatement(10, "c", ("*",)),
    ]
    assert [s.text for s in found] == [
        "import os",
        "import a.b",
        "from ..pkg import x, y",
        "from . import z",
        "import importlib",
        "import_module('Deployment.server')",
        "from c import *",
    ]
    assert [s.top for s in found] == ["os", "a", "", "", "importlib", "Deployment", "c"]
    assert len(file_imports(source)) == 6  # without calls
    assert file_imports(write(tmp_path / "bad.py", "def (:\n")) == []
    assert file_imports(tmp_path / "missing.py") == []
    deep = ast.parse(
        "if x:\n"
        + "".join("    " * i + "if x:\n" for i in range(1, 60))
        + "    " * 60
        + "import deep\n"
    )
    assert import_statements(deep) == [ImportStatement(61, "deep")]


def test_package_versions_find_modules_this_process_never_imported() -> None:
    code = (
        "import sys\n"
        "from mlbook.provenance.files import package_versions\n"
        "print(package_versions(['PIL.Image', 'sklearn.linear_model', 'typing_extensions',"
        " 'common', 'os']))\n"
        "print('PIL' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    versions_line, loaded = done.stdout.splitlines()
    from importlib import metadata

    versions = ast.literal_eval(versions_line)  # the dict the child printed
    assert {k.lower(): v for k, v in versions.items()} == {
        "pillow": metadata.version("Pillow"),
        "scikit-learn": metadata.version("scikit-learn"),
        "typing_extensions": metadata.version("typing_extensions"),
    }
    assert loaded == "False False"
