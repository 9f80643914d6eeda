"""The docs stay true: every module is in the architecture map, every command in the README."""

from __future__ import annotations

from pathlib import Path

from mlbook.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "mlbook"


def test_every_module_is_in_the_architecture_map() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if relative.parts[0] == "templates":
            continue
        if relative.parent.name == "formats":  # one line for the formats folder
            relative = relative.parent
            name = f"{relative.as_posix()}/"
        elif relative.name == "__init__.py" and relative.parent != Path("."):
            continue  # package __init__ files only re-export
        else:
            name = relative.as_posix()
        if name not in text:
            missing.append(name)
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    text = (REPO / "README.md").read_text()
    assert [name for name in COMMANDS if f"mlbook {name}" not in text] == []


def test_readme_has_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert "bash scripts/demo.sh" in text
    assert "bash scripts/test.sh" in text
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
