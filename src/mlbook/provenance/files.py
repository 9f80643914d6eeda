"""The project files a run used, the imports of source files, and package versions.

This module is mlbook's one static import walker and its one package-version
detector; ``mlbook check`` (boundaries), run provenance and ``mlbook export``
all use them.

- :func:`import_statements` / :func:`file_imports`: every import statement of a
  source (lazy ones inside functions, classes, ``try`` and ``if`` included) as an
  :class:`ImportStatement` with its line, module, names and level; optionally
  ``importlib.import_module("x")`` / ``__import__("x")`` calls with a literal name.
- :func:`import_closure`: the files reachable from a script by static imports.
- :func:`used_files` merges two sources: the module files the run's process had
  loaded at the end (``sys.modules``), and the static closure of the script,
  resolved against the run's search path (``Models/``, the script's directory)
  and relative to the importing package. Only files inside the project are kept,
  never installed packages or a virtual environment inside it.
- :func:`package_versions`: installed distributions (canonical names) and
  versions for imported module names.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson

from mlbook._fs import atomic_write_bytes, sha256_file

__all__ = [
    "ImportStatement",
    "UsedFile",
    "file_imports",
    "import_closure",
    "import_statements",
    "package_versions",
    "used_files",
]

_SKIP_PARTS = frozenset(
    {"site-packages", "dist-packages", ".venv", "venv", ".git", ".mlbook", "__pycache__"}
)
_IMPORT_CALLS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class UsedFile:
    """A project file a run used: path relative to the project root, size, sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ImportStatement:
    """One import in a source file, as written.

    Attributes:
        line: the 1-based line of the statement.
        module: ``a.b`` in ``import a.b``, ``from a.b import c`` or
            ``import_module("a.b")``; ``""`` in ``from . import c``.
        names: what ``from ... import`` names (``("c",)``); empty for ``import a.b``.
        level: the leading dots of a relative import (0: absolute).
        call: ``"import_module"`` or ``"__import__"`` for such a call with a
            literal name; ``""`` for an import statement.
    """

    line: int
    module: str
    names: tuple[str, ...] = ()
    level: int = 0
    call: str = ""

    @property
    def text(self) -> str:
        """The import as a person would write it: ``from ..a import b, c``."""
        if self.call:
            return f"{self.call}({self.module!r})"
        if self.names:
            return f"from {'.' * self.level}{self.module} import {', '.join(self.names)}"
        return f"import {self.module}"

    @property
    def top(self) -> str:
        """The top-level package of an absolute import (``""`` for a relative one)."""
        return "" if self.level else self.module.partition(".")[0]


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


def import_statements(tree: ast.AST, *, calls: bool = False) -> list[ImportStatement]:
    """The imports of a parsed source, sorted by line.

    ``import a, b`` gives one statement per module. With ``calls``, also each
    ``importlib.import_module("x")`` / ``__import__("x")`` whose first argument is
    a string literal (this walks every expression, so it is slower).
    """
    found: list[ImportStatement] = []
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            found.extend(ImportStatement(node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append(ImportStatement(node.lineno, node.module or "", names, node.level))
    if calls:
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or not call.args:
                continue
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = call.args[0]
            literal = first.value if isinstance(first, ast.Constant) else None
            if name in _IMPORT_CALLS and isinstance(literal, str) and literal:
                found.append(ImportStatement(call.lineno, literal, call=name))
    found.sort(key=lambda statement: statement.line)
    return found


def file_imports(path: Path | str, *, calls: bool = False) -> list[ImportStatement]:
    """The imports of a Python file (:func:`import_statements`); ``[]`` when it cannot be
    read or parsed."""
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    return import_statements(tree, calls=calls)


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


def _imports_of(path: Path, search_path: Sequence[Path]) -> set[Path]:
    """Files that ``path`` imports (any depth in the file), resolved where they exist."""
    found: set[Path] = set()

    def add(base: Path, dotted: str) -> None:
        parts = dotted.split(".") if dotted else []
        for end in range(1, len(parts) + 1):  # each parent package runs its __init__
            hit = _module_file(base, ".".join(parts[:end]))
            if hit is not None:
                found.add(hit)

    for statement in file_imports(path):
        if statement.level:
            base = path.parent
            for _ in range(statement.level - 1):
                base = base.parent
            bases: Sequence[Path] = [base]
        else:
            bases = search_path
        module = statement.module
        for base in bases:
            add(base, module)
            for name in statement.names:  # `from pkg import submodule`
                dotted = f"{module}.{name}" if module else name
                hit = _module_file(base, dotted)
                if hit is not None:
                    found.add(hit)
                    add(base, dotted)
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


def package_versions(module_names: Iterable[str], cache_dir: Path | None = None) -> dict[str, str]:
    """Installed distributions providing ``module_names``: ``{canonical name: version}``.

    The one rule mlbook uses (run provenance, export manifests): names may be
    dotted (``torch.nn``) and the top-level package decides; standard-library,
    private (``_x``) and project modules (no distribution) are left out. A
    distribution named like its package (``numpy``, ``torch``, ``typing_extensions``
    as ``typing-extensions``) is found directly; the full module → distribution map
    (slow: it reads every installed distribution's file list) is built only for a
    module installed in ``site-packages`` under another name (``PIL`` → Pillow,
    ``sklearn`` → scikit-learn). Keys are the distributions' own spelling
    (``Metadata: Name``), sorted case-insensitively.

    With ``cache_dir`` (the runner passes ``.mlbook/cache/``) the answers are kept
    in ``packages.json``, valid while the package directories on ``sys.path``
    keep their modification times (installing or removing a package changes
    them): a run then maps its modules without reading any package metadata.
    """
    cache = _PackageCache.load(cache_dir)
    versions: dict[str, str] = {}
    for top in sorted({name.partition(".")[0] for name in module_names}):
        if not top or top in sys.stdlib_module_names or top.startswith("_"):
            continue
        for found in cache.lookup(top):
            versions[found[0]] = found[1]
    cache.save()
    return dict(sorted(versions.items(), key=lambda item: item[0].lower()))


class _PackageCache:
    """Module -> ``[(distribution, version)]`` answers, in memory and in ``packages.json``."""

    _memory: ClassVar[dict[Path | None, _PackageCache]] = {}

    def __init__(self, path: Path | None, key: list[list[object]]) -> None:
        self.path = path
        self.key = key
        self.modules: dict[str, list[tuple[str, str]]] = {}
        self.changed = False
        self._map: Mapping[str, list[str]] | None = None

    @classmethod
    def load(cls, cache_dir: Path | None) -> _PackageCache:
        key = _environment_key()
        known = cls._memory.get(cache_dir)
        if known is not None and known.key == key:
            return known
        path = cache_dir / "packages.json" if cache_dir is not None else None
        cache = cls(path, key)
        if path is not None:
            try:
                stored = orjson.loads(path.read_bytes())
                if isinstance(stored, dict) and stored.get("key") == key:
                    cache.modules = {
                        str(name): [(str(d), str(v)) for d, v in found]
                        for name, found in stored["modules"].items()
                    }
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                cache.modules = {}
        cls._memory[cache_dir] = cache
        return cache

    def lookup(self, top: str) -> list[tuple[str, str]]:
        if top not in self.modules:
            self.modules[top] = self._find(top)
            self.changed = True
        return self.modules[top]

    def _find(self, top: str) -> list[tuple[str, str]]:
        direct = _distribution(top) or _distribution(top.replace("_", "-"))
        if direct is not None:
            return [direct]
        if not _installed_module(top):
            return []
        if self._map is None:
            from importlib import metadata

            self._map = metadata.packages_distributions()
        return [found for name in self._map.get(top, ()) if (found := _distribution(name))]

    def save(self) -> None:
        if not self.changed or self.path is None:
            return
        self.changed = False
        data = {"key": self.key, "modules": self.modules}
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.path, orjson.dumps(data))


def _environment_key() -> list[list[object]]:
    """The package directories on ``sys.path`` (where distributions are installed)
    with their modification times (ns)."""
    key: list[list[object]] = []
    for entry in sys.path:
        if not entry.endswith(("site-packages", "dist-packages")):
            continue
        with contextlib.suppress(OSError):
            key.append([entry, os.stat(entry).st_mtime_ns])
    return key


@functools.lru_cache(maxsize=1024)
def _distribution(name: str) -> tuple[str, str] | None:
    """``(canonical name, version)`` of the installed distribution ``name``, or ``None``."""
    from importlib import metadata

    try:
        found = metadata.distribution(name)
    except (metadata.PackageNotFoundError, ValueError):
        return None
    version = found.version
    if not version:
        return None
    return str(found.metadata["Name"] or name), version


@functools.lru_cache(maxsize=1024)
def _installed_module(top: str) -> bool:
    """True when top-level module ``top`` would be imported from an installed location.

    Found without importing it, on this process's path (a run's project modules
    are not on the runner's path).
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = (spec.origin if spec else None) or ""
    locations = list(spec.submodule_search_locations or []) if spec else []
    return any("site-packages" in p or "dist-packages" in p for p in [origin, *locations])
