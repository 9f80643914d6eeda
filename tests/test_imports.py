"""Start-up stays cheap: importing mlbook or running --help loads no heavy module."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "numpy",
    "pandas",
    "rich",
    "PIL",
    "onnx",
    "ray",
    "fastapi",
    "matplotlib",
    "git",
    "mlflow",
    "sqlalchemy",
    "dvc",
    "dvc_data",
    "yaml",
]


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_mlbook_is_light() -> None:
    loaded = _modules_after("import mlbook")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert "click" not in loaded


def test_help_is_light() -> None:
    code = (
        "import sys\nfrom mlbook.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='mlbook')\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(code)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    assert not {m for m in loaded if m.startswith("mlbook.") and m.count(".") > 1}
