"""The project files a run used, and the versions of the packages it imported.

:func:`used_files` merges two sources: the module files the run's process had
loaded at the end (``sys.modules``), and a static walk of the imports of the
script (every ``import`` statement, lazy ones inside functions included),
resolved against the run's search path (``Models/``, the script's directory)
and relative to the importing package. Only files inside the project are kept,
never installed packages or a virtual environment inside it.
"""

from __future__ import annotations

import ast
import functools
import os
import platform
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mlbook._fs import sha256_file

__all__ = [
    "UsedFile",
    "environment",
    "import_closure",
    "package_versions",
    "used_files",
]

_SKIP_PARTS = frozenset(
    {"site-packages", "dist-packages", ".venv", "venv", ".git", ".mlbook", "__pycache__"}
)


@dataclass(frozen=True)
class UsedFile:
    """A project file a run used: path relative to the project root, size, sha256."""

    path: str
    size: int
    sha256: str


def _inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` (posix), or ``None`` when outside or skipped."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return None
    if any(part in _SKIP_PARTS for part in relative.parts):
        return None
    return relative.as_posix()


def _module_file(base: Path, dotted: str) -> Path | None:
    """The file of module ``dotted`` under ``base``: a package ``__init__`` or a ``.py``."""
    target = base.joinpath(*dotted.split("."))
    package = target / "__init__.py"
    if package.is_file():
        return package
    module = target.with_suffix(".py")
    return module if module.is_file() else None


def _statements(tree: ast.AST) -> Iterator[ast.stmt]:
    """Every statement, at any depth (function bodies too), skipping expressions.

    Imports are statements, so this finds them all while visiting a fraction of
    the nodes :func:`ast.walk` would.
    """
    todo: list[Any] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.stmt):
            yield node
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, name, None)
            if isinstance(children, list):
                todo.extend(children)


def _imports_of(path: Path, search_path: Sequence[Path]) -> set[Path]:
    """Files that ``path`` imports (any depth in the file), resolved where they exist."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    package_dir = path.parent
    found: set[Path] = set()

    def add(base: Path, dotted: str) -> None:
        parts = dotted.split(".") if dotted else []
        for end in range(1, len(parts) + 1):  # each parent package runs its __init__
            hit = _module_file(base, ".".join(parts[:end]))
            if hit is not None:
                found.add(hit)

    for node in _statements(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                for base in search_path:
                    add(base, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_dir
                for _ in range(node.level - 1):
                    base = base.parent
                bases: Sequence[Path] = [base]
            else:
                bases = search_path
            module = node.module or ""
            for base in bases:
                add(base, module)
                for alias in node.names:  # `from pkg import submodule`
                    name = f"{module}.{alias.name}" if module else alias.name
                    hit = _module_file(base, name)
                    if hit is not None:
                        found.add(hit)
                        add(base, name)
    return found


def import_closure(script: Path | str, search_path: Sequence[Path | str]) -> set[Path]:
    """Every existing file reachable from ``script`` by static imports (``script`` included)."""
    roots = [Path(p).resolve() for p in search_path]
    start = Path(script).resolve()
    seen = {start}
    todo = [start]
    while todo:
        for hit in _imports_of(todo.pop(), roots):
            resolved = hit.resolve()
            if resolved not in seen:
                seen.add(resolved)
                todo.append(resolved)
    return seen


def used_files(
    root: Path | str,
    module_files: Iterable[str | Path] = (),
    script: Path | str | None = None,
    search_path: Sequence[Path | str] = (),
) -> list[UsedFile]:
    """The project files a run used, sorted by path, each with its size and sha256.

    Args:
        root: the project root; files outside it are left out.
        module_files: ``__file__`` of each module the run had loaded (``sys.modules``).
        script: the experiment script, whose imports are walked statically.
        search_path: where absolute imports resolve (e.g. ``Models/``); the script's
            own directory is searched first.
    """
    base = Path(root).resolve()
    candidates: set[Path] = set()
    for name in module_files:
        if name:
            candidates.add(Path(os.path.abspath(name)))
    if script is not None:
        paths = [Path(script).resolve().parent, *(Path(p) for p in search_path)]
        candidates |= import_closure(script, paths)
    result: dict[str, UsedFile] = {}
    for path in candidates:
        relative = _inside(base, path)
        if relative is None or relative in result or not path.is_file():
            continue
        if path.suffix == ".pyc":
            continue
        result[relative] = UsedFile(relative, path.stat().st_size, sha256_file(path))
    return [result[key] for key in sorted(result)]


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@functools.lru_cache(maxsize=512)
def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package_versions(module_names: Iterable[str]) -> dict[str, str]:
    """Installed distributions providing ``module_names``, as ``{distribution: version}``.

    Standard-library and project modules (no distribution) are left out; names may
    be dotted (``torch.nn``): the top-level package decides. A distribution named
    like its package (``numpy``, ``torch``) is found directly; the full module →
    distribution map (slow: it reads every installed distribution's file list) is
    built only for a loaded module installed under another name (``PIL`` → Pillow).
    """
    versions: dict[str, str] = {}
    for top in sorted({name.partition(".")[0] for name in module_names}):
        if not top or top in sys.stdlib_module_names or top.startswith("_"):
            continue
        direct = _version(top) or _version(top.replace("_", "-"))
        if direct is not None:
            versions[_canonical(top)] = direct
            continue
        if not _installed_module(top):
            continue
        for distribution in _distributions().get(top, ()):
            version = _version(distribution)
            if version is not None:
                versions[_canonical(distribution)] = version
    return dict(sorted(versions.items(), key=lambda item: item[0].lower()))


@functools.lru_cache(maxsize=512)
def _canonical(name: str) -> str:
    try:
        return str(metadata.metadata(name)["Name"] or name)
    except metadata.PackageNotFoundError:
        return name


def _installed_module(top: str) -> bool:
    """True when ``top`` is loaded here from an installed location (not the project)."""
    module = sys.modules.get(top)
    filename = getattr(module, "__file__", None) or ""
    return "site-packages" in filename or "dist-packages" in filename


def environment() -> dict[str, str]:
    """Python version and implementation, platform and host of this process."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "host": platform.node(),
    }
