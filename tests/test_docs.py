"""The docs stay true: every module is in the architecture map, every command in the README,
every ``mlbook.…`` name in a code span or block resolves."""

from __future__ import annotations

import importlib
import re
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


_DOTTED = re.compile(r"(?<![\w./-])mlbook(?:\.[A-Za-z_]\w*)+(?![\w*])")
_FROM = re.compile(r"^\s*from (mlbook(?:\.\w+)*) import \(?([\w, ]+)", re.MULTILINE)
_NOT_NAMES = {"mlbook.toml"}  # the config file


def _names_in_docs() -> set[tuple[str, str]]:
    """Every ``mlbook.x.y`` and ``from mlbook.x import y`` in code spans and blocks."""
    found: set[tuple[str, str]] = set()
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        spans = re.findall(r"```.*?```", text, re.DOTALL) + re.findall(r"`[^`\n]+`", text)
        for span in spans:
            found.update((path.name, m.group(0)) for m in _DOTTED.finditer(span))
            for m in _FROM.finditer(span):
                for name in m.group(2).split(","):
                    name = name.strip().split(" as ")[0]
                    if name:
                        found.add((path.name, f"{m.group(1)}.{name}"))
    return {(doc, name) for doc, name in found if name not in _NOT_NAMES}


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def test_every_name_in_a_docs_code_block_resolves() -> None:
    names = _names_in_docs()
    assert len(names) > 50  # the docs do name the API
    broken = []
    for doc, name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{doc}: {name} ({type(exc).__name__}: {exc})")
    assert broken == []
