"""The CLI through click's runner and through real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook import __version__
from mlbook.cli import COMMANDS, cli
from mlbook.project import Project


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="mlbook")
    return result.exit_code, result.stdout, result.stderr


def test_version_and_help() -> None:
    code, out, _ = invoke("--version")
    assert (code, out) == (0, f"mlbook, version {__version__}\n")
    code, out, _ = invoke("--help")
    assert code == 0
    assert "Project:" in out
    for name in COMMANDS:
        assert f"  {name} " in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_example(name: str) -> None:
    code, out, _ = invoke(name, "--help")
    assert code == 0, out
    assert "Example" in out or "Commands:" in out


def test_init_then_check_clean(tmp_path: Path) -> None:
    code, out, _ = invoke("init", str(tmp_path / "demo"))
    assert code == 0
    assert f"Created project demo at {tmp_path / 'demo'}" in out
    assert "  created  mlbook.toml" in out
    assert "git: initialised" in out
    code, out, _ = invoke("-C", str(tmp_path / "demo"), "check")
    assert (code, out) == (0, "clean: 1 Python files checked, no boundary crossed\n")


def test_init_dot_reports_kept_files(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "NOTES.md").write_text("keep me\n")
    os.chdir(tmp_path / "mine")
    code, out, _ = invoke("init", ".")
    assert code == 0
    assert "Adopted project mine" in out
    assert "  kept     NOTES.md (already there)" in out
    assert (tmp_path / "mine" / "NOTES.md").read_text() == "keep me\n"


def test_check_reports_planted_violation(project: Project) -> None:
    (project.models_dir / "E001_x.py").write_text("import os\nfrom Deployment import server\n")
    os.chdir(project.root)
    code, out, _ = invoke("check")
    assert code == 1
    assert out.splitlines() == [
        "Models/E001_x.py:2: import-boundary: 'from Deployment import server' reaches into "
        "Deployment/ (training code may use only Datasets/ and Models/)",
        "1 violation(s) in 1 file(s) (2 Python files checked)",
    ]
    code, out, _ = invoke("check", "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    assert data["violations"][0]["path"] == "Models/E001_x.py"
    assert data["violations"][0]["line"] == 2


def test_not_a_project_is_one_line() -> None:
    code, out, err = invoke("check")
    assert code == 1
    assert out == ""
    assert err.startswith("error: not an mlbook project: no mlbook.toml in ")
    assert err.count("\n") == 1


def test_bad_toml_is_one_line(project: Project) -> None:
    (project.root / "mlbook.toml").write_text("[git]\ncommits = 'yes'\n")
    code, _, err = invoke("-C", str(project.root), "check")
    assert code == 1
    assert err == (
        f"error: {project.root / 'mlbook.toml'}:2: git.commits: invalid enum value 'yes'\n"
    )


def test_debug_shows_traceback() -> None:
    result = CliRunner().invoke(cli, ["--debug", "check"])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ProjectError"


def test_usage_error_exits_2() -> None:
    code, _, err = invoke("frobnicate")
    assert code == 2
    assert "No such command 'frobnicate'" in err
    assert "Try 'mlbook --help' for help" in err


def test_bad_directory_for_C() -> None:
    code, _, err = invoke("-C", "/nonexistent/dir", "check")
    assert code == 2
    assert "/nonexistent/dir" in err


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_real_entry_points(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "mlbook"
    done = _run(str(exe), "init", "proj", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plant = tmp_path / "proj" / "Models" / "E001_bad.py"
    plant.write_text("from Deployment import server\n")
    done = _run(sys.executable, "-m", "mlbook", "check", cwd=tmp_path / "proj" / "Models")
    assert done.returncode == 1
    assert done.stdout.startswith("Models/E001_bad.py:1: import-boundary:")
    done = _run(str(exe), "check", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: not an mlbook project")
    assert "Traceback" not in done.stderr
