"""``mlbook check``: keep each area's code inside its boundaries.

Training code (the models area) may use only the datasets and models areas;
deployment code only datasets and deployment; data processing only datasets and
data processing. Each Python file is read with :mod:`ast` (never imported); its imports come
from mlbook's one import walker (:func:`mlbook.provenance.files.import_statements`):

- an import that resolves to a module of another area is an ``import-boundary``
  violation (``from Deployment import server``, or ``import common.training``
  from deployment code when ``common`` lives in ``Models/``);
- a string literal that is a path into another area is a ``path-boundary``
  violation (``open("../Deployment/x")``, ``Path("Models/outputs")``);
- a file that cannot be parsed or read is reported as ``syntax-error`` or
  ``unreadable``, never as a crash;
- a dataset record whose ``file``, ``mask`` or feature table is not a path inside its
  dataset directory (``../../Data_processing/x.jpg``, ``/data/x.jpg``) is a
  ``record-path`` violation: data reaches training only through ``Datasets/``.

Run outputs (``Models/outputs/``) and export bundles (``Deployment/exports/``)
hold copies of other areas' code by design and are not checked.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlbook.progress import NullReporter, Reporter
from mlbook.project import AREAS, Area, Project
from mlbook.provenance.files import ImportStatement, import_statements

__all__ = ["ALLOWED", "CheckReport", "Violation", "check_files", "check_project"]

ALLOWED: dict[Area, frozenset[Area]] = {
    "models": frozenset({"datasets", "models"}),
    "deployment": frozenset({"datasets", "deployment"}),
    "data_processing": frozenset({"datasets", "data_processing"}),
    "datasets": frozenset({"datasets"}),
}
_AREA_LABEL: dict[Area, str] = {
    "models": "training code",
    "deployment": "deployment code",
    "data_processing": "data-processing code",
    "datasets": "dataset code",
}
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", ".venv", "build", "dist"}
_SEPARATORS = re.compile(r"[\\/]+")
_IMPORT_CALLS = {"import_module", "__import__"}


@dataclass(frozen=True, order=True)
class Violation:
    """One boundary problem: where it is and what it is."""

    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.detail}"


@dataclass
class CheckReport:
    """The result of a check: files read and violations found (sorted)."""

    files: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no violation was found."""
        return not self.violations


def check_project(project: Project, reporter: Reporter | None = None) -> CheckReport:
    """Check every Python file of every area against the boundary rules."""
    checker = _Checker(project)
    files = [(area, path) for area in AREAS for path in checker.python_files(area)]
    report = CheckReport(files=len(files))
    with (reporter or NullReporter()).task("checking boundaries", total=len(files)) as task:
        for area, path in files:
            report.violations.extend(checker.check_file(area, path))
            task.advance()
    report.violations.extend(_record_paths(project))
    report.violations.sort()
    return report


def _record_paths(project: Project) -> Iterator[Violation]:
    """Record paths of every dataset under the datasets area that leave their dataset."""
    from mlbook.datasets.validate import outside_paths
    from mlbook.errors import DatasetError

    base = project.datasets_dir
    if not base.is_dir():
        return
    where = project.area_name("datasets")
    for directory, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name not in ("records.jsonl", "records.json"):
                continue
            records_file = Path(directory) / name
            relative = project.relative(records_file)
            try:
                found = outside_paths(records_file)
            except DatasetError as exc:
                yield Violation(relative, 1, "unreadable", str(exc))
                continue
            for line, field_name, value, problem in found:
                if _leaves(records_file.parent, value, base):
                    detail = (
                        f"{field_name} {value!r} points outside {where}/ (data reaches "
                        f"training only through {where}/); bring the files into the dataset "
                        "with `mlbook data convert SRC DST --images copy`"
                    )
                else:
                    detail = f"{field_name}: {problem}"
                yield Violation(relative, line, "record-path", detail)


def _leaves(dataset: Path, value: str, base: Path) -> bool:
    """True when ``value`` points outside the datasets area altogether."""
    target = Path(os.path.normpath(dataset / value.replace("\\", "/")))
    return value.startswith("/") or not target.is_relative_to(base)


def check_files(project: Project, area: Area, paths: Iterable[Path]) -> list[Violation]:
    """Check these files as code of ``area`` (``mlbook data process`` checks its script)."""
    checker = _Checker(project)
    return sorted(v for path in paths for v in checker.check_file(area, path))


class _Checker:
    def __init__(self, project: Project) -> None:
        self.project = project
        self.root = project.root
        self.area_dirs: dict[Area, Path] = {area: project.area_dir(area) for area in AREAS}
        self.area_names: dict[str, Area] = {project.area_name(a): a for a in AREAS}
        self.excluded = {project.outputs_dir, project.exports_dir}
        self.modules: dict[Area, set[str]] = {a: self._top_modules(a) for a in AREAS}

    def python_files(self, area: Area) -> list[Path]:
        base = self.area_dirs[area]
        if not base.is_dir():
            return []
        found: list[Path] = []
        for directory, dirnames, filenames in os.walk(base):
            here = Path(directory)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".") and d not in _SKIP_DIRS and here / d not in self.excluded
            )
            found.extend(here / name for name in sorted(filenames) if name.endswith(".py"))
        return found

    def _top_modules(self, area: Area) -> set[str]:
        base = self.area_dirs[area]
        if not base.is_dir():
            return set()
        names: set[str] = set()
        for entry in base.iterdir():
            if entry.name.startswith(".") or entry in self.excluded:
                continue
            if entry.is_file() and entry.suffix == ".py":
                names.add(entry.stem)
            elif entry.is_dir() and entry.name.isidentifier() and entry.name not in _SKIP_DIRS:
                names.add(entry.name)
        return names

    def check_file(self, area: Area, path: Path) -> Iterator[Violation]:
        relative = self.project.relative(path)
        try:
            source = path.read_bytes()
            tree = ast.parse(source, filename=str(path))
        except SyntaxError as exc:
            yield Violation(relative, exc.lineno or 1, "syntax-error", f"cannot parse: {exc.msg}")
            return
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            yield Violation(relative, 1, "unreadable", f"cannot read: {reason}")
            return
        local = {p.stem for p in path.parent.glob("*.py")} | {
            p.name for p in path.parent.iterdir() if p.is_dir()
        }
        for statement in import_statements(tree, calls=True):
            if statement.level:
                yield from self._check_relative(area, relative, path, statement)
            else:
                yield from self._check_import(
                    area, relative, statement.line, statement.module, local, statement.text
                )
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield from self._check_call(area, relative, node)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                yield from self._check_literal(area, relative, node.lineno, node.value)

    def _violation_for(self, area: Area, target: Area) -> bool:
        return target not in ALLOWED[area]

    def _describe(self, area: Area, target: Area) -> str:
        allowed = " and ".join(f"{self.project.area_name(a)}/" for a in sorted(ALLOWED[area]))
        return f"{_AREA_LABEL[area]} may use only {allowed}"

    def _check_import(
        self,
        area: Area,
        relative: str,
        line: int,
        module: str,
        local: set[str],
        shown: str,
    ) -> Iterator[Violation]:
        top = module.split(".", 1)[0]
        target = self._area_of_module(area, top, local)
        if target is not None and self._violation_for(area, target):
            where = self.project.area_name(target)
            yield Violation(
                relative,
                line,
                "import-boundary",
                f"'{shown}' reaches into {where}/ ({self._describe(area, target)})",
            )

    def _area_of_module(self, area: Area, top: str, local: set[str]) -> Area | None:
        if top in self.area_names:
            return self.area_names[top]
        if top in local or top in self.modules[area] or top in sys.stdlib_module_names:
            return None
        for other in AREAS:
            if other != area and top in self.modules[other]:
                return other
        return None

    def _check_relative(
        self, area: Area, relative: str, path: Path, statement: ImportStatement
    ) -> Iterator[Violation]:
        base = path.parent
        for _ in range(statement.level - 1):
            base = base.parent
        parts = statement.module.split(".") if statement.module else []
        candidates = [base.joinpath(*parts)] if parts else [base / n for n in statement.names]
        for candidate in candidates:
            target = self.project.area_of(candidate)
            if target is not None and self._violation_for(area, target):
                yield Violation(
                    relative,
                    statement.line,
                    "import-boundary",
                    f"'{statement.text}' reaches into "
                    f"{self.project.area_name(target)}/ ({self._describe(area, target)})",
                )
                return

    def _check_call(self, area: Area, relative: str, node: ast.Call) -> Iterator[Violation]:
        """A call given an area's bare name (``Path("Deployment")``); imports are checked above."""
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _IMPORT_CALLS:
            return
        for arg in node.args:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            if arg.value in self.area_names:
                target = self.area_names[arg.value]
                if self._violation_for(area, target):
                    yield Violation(
                        relative,
                        node.lineno,
                        "path-boundary",
                        f"path '{arg.value}' points into {arg.value}/ "
                        f"({self._describe(area, target)})",
                    )

    def _check_literal(
        self, area: Area, relative: str, line: int, text: str
    ) -> Iterator[Violation]:
        if len(text) > 400 or "\n" in text or ("/" not in text and "\\" not in text):
            return
        target = self._area_of_path(text)
        if target is not None and self._violation_for(area, target):
            yield Violation(
                relative,
                line,
                "path-boundary",
                f"path '{text}' points into {self.project.area_name(target)}/ "
                f"({self._describe(area, target)})",
            )

    def _area_of_path(self, text: str) -> Area | None:
        candidate = text.strip()
        if os.path.isabs(candidate):
            return self.project.area_of(candidate)
        for part in _SEPARATORS.split(candidate):
            if part in {"", ".", ".."}:
                continue
            return self.area_names.get(part)
        return None


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found
