"""Read a script's ``mlbook.Experiment(...)`` call from its source, without running it.

:func:`read_experiment` parses the script with :mod:`ast` and finds its one
``name = mlbook.Experiment(...)`` at the top level. Its arguments are read when
they are literals: numbers, strings, ``True``/``False``/``None``, lists, tuples,
sets, dicts (``{**BASE, "w": 8}`` too), ``dict(k=v)``, ``range(...)`` of ints,
and names assigned such a literal once at the top of the script before the call
(``LR = 1e-3``). A name whose value is a list, dict or set must not be used
anywhere else, so nothing can change it in place before the call. The
:class:`~mlbook.experiments.api.Experiment` is then built from those values,
so version names and params are exactly what importing the script gives.

Hooks are the ``@exp.<hook>`` decorators and ``exp.<hook>(f)`` calls at the top
level; any other use of ``exp`` at the top level (``exp.versions[...] = ...``,
``register(exp)``), a hook registered inside an ``if`` or a loop, or no visible
train hook makes the script not static. ``if __name__ == "__main__":`` blocks
are ignored: they do not run on import.

Everything else raises :class:`NotStatic` with the line and the reason; the
caller then imports the script in a child process (:mod:`mlbook.experiments.plans`).

:func:`read_static` first tells the two kinds of script apart: a script that
refers to ``mlbook.Experiment`` anywhere, or registers a train hook at the top
level (``@exp.train``, ``exp.train(f)``: an experiment made by a helper), is an
experiment script; any other is a plain script, whose argparse options
:mod:`mlbook.experiments.plain` reads.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbook.errors import ExperimentError
from mlbook.experiments.api import HOOKS, Experiment

__all__ = ["NotStatic", "StaticExperiment", "read_experiment", "read_static"]

_EXPERIMENT = frozenset(
    {"mlbook.Experiment", "mlbook.experiments.Experiment", "mlbook.experiments.api.Experiment"}
)
_ARGUMENTS = (
    "versions",
    "base",
    "grid",
    "dataset",
    "view",
    "files",
    "title",
    "seed",
    "metric",
    "goal",
)


class NotStatic(Exception):
    """The source alone does not say what the script declares (the message says where).

    ``kind`` is the kind of script the source shows: ``"experiment"`` or ``"plain"``.
    """

    def __init__(self, message: str, kind: str = "experiment") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class StaticExperiment:
    """The experiment a script declares, built from its literals, and the hooks it registers."""

    experiment: Experiment
    hooks: tuple[str, ...]


def read_static(source: bytes | str, path: Path | str = "<script>") -> Any:
    """What a script declares, from its source alone: a :class:`StaticExperiment`, or the
    :class:`~mlbook.experiments.plain.StaticOptions` of a plain script.

    Raises:
        NotStatic: the script computes something planning needs (``kind`` says
            which kind of script it is).
        SyntaxError: the source is not Python.
        ExperimentError: the literals are not a valid experiment (a bad version name...).
    """
    tree = ast.parse(source, filename=str(path))
    module = _Module(tree)
    if is_plain(tree, module):
        from mlbook.experiments.plain import read_options

        return read_options(tree, module)
    return _experiment(module, path)


def read_experiment(source: bytes | str, path: Path | str = "<script>") -> StaticExperiment:
    """The ``mlbook.Experiment`` a script declares, read from its source alone.

    Raises:
        NotStatic: the script computes something planning needs (says what and where).
        SyntaxError: the source is not Python.
        ExperimentError: the literals are not a valid experiment (a bad version name...).
    """
    tree = ast.parse(source, filename=str(path))
    return _experiment(_Module(tree), path)


def is_plain(tree: ast.Module, module: _Module) -> bool:
    """True when the script neither refers to ``mlbook.Experiment`` nor registers a train hook."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(
            getattr(node, "ctx", None), ast.Load
        ):
            dotted = _dotted(node)
            if dotted is not None and module.resolve(dotted) in _EXPERIMENT:
                return False
    for statement in module.top:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            registrations = statement.decorator_list
        elif (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Call)
            and len(statement.value.args) == 1
        ):
            registrations = [statement.value.func]
        else:
            continue
        if any(isinstance(r, ast.Attribute) and r.attr == "train" for r in registrations):
            return False
    return True


def _experiment(module: _Module, path: Path | str) -> StaticExperiment:
    call, target = module.experiment_call()
    values = _Values(module).arguments(call)
    try:
        exp = Experiment(**values)
    except ExperimentError as exc:
        raise ExperimentError(f"{path}:{call.lineno}: {exc}") from exc
    except (TypeError, ValueError) as exc:  # grid={"lr": 5}: importing the script reports it
        raise NotStatic(f"line {call.lineno}: Experiment(...) fails: {exc}") from exc
    hooks = module.hooks(target, HOOKS)
    if "train" not in hooks:
        raise NotStatic(f"no @{target.id}.train at the top level of the script")
    return StaticExperiment(exp, tuple(sorted(set(hooks))))


def _is_main_guard(node: ast.If) -> bool:
    """``if __name__ == "__main__":`` (either order): its body does not run on import."""
    test = node.test
    if not (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and len(test.comparators) == 1
    ):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _snippet(node: ast.AST, limit: int = 80) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Module(ast.NodeVisitor):
    """One pass over a module: what its top level binds, imports, calls and references.

    ``if __name__ == "__main__":`` bodies are skipped (they do not run on import).
    """

    def __init__(self, tree: ast.Module) -> None:
        self.local = 0  # inside a function, lambda, class body or comprehension: not module names
        self.later = 0  # inside a function or lambda body: runs when called, not on import
        self.bindings: dict[str, int] = defaultdict(int)
        self.globals: set[str] = set()
        self.references: dict[str, list[tuple[ast.Name, bool]]] = defaultdict(list)
        self.imports: dict[str, set[str]] = defaultdict(set)  # module name -> what it imports
        self.imported: dict[str, int] = defaultdict(int)  # bindings of a name that are imports
        self.calls: list[ast.Call] = []
        self.visit(tree)
        self.top = [s for s in tree.body if not (isinstance(s, ast.If) and _is_main_guard(s))]

    # -- the pass --

    def _bind(self, name: str) -> None:
        if not self.local:
            self.bindings[name] += 1

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.references[node.id].append((node, bool(self.later)))
        else:
            self._bind(node.id)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.partition(".")[0]
            self._bind(bound)
            if not self.local:
                self.imports[bound].add(alias.name if alias.asname else bound)
                self.imported[bound] += 1

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name
            self._bind(bound)
            if not self.local and not node.level and node.module:
                self.imports[bound].add(f"{node.module}.{alias.name}")
                self.imported[bound] += 1

    def visit_Global(self, node: ast.Global) -> None:
        self.globals.update(node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind(node.name)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if _is_main_guard(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.calls.append(node)
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not isinstance(node, ast.Lambda):
            self._bind(node.name)
            for decorator in node.decorator_list:
                self.visit(decorator)
            if node.returns is not None:
                self.visit(node.returns)
        for default in (*node.args.defaults, *node.args.kw_defaults):
            if default is not None:
                self.visit(default)
        self.local += 1
        self.later += 1
        for child in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(child)
        self.local -= 1
        self.later -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._bind(node.name)
        for child in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(child)
        self.local += 1
        for child in node.body:
            self.visit(child)
        self.local -= 1

    def _comprehension(self, node: ast.AST) -> None:
        self.local += 1
        self.generic_visit(node)
        self.local -= 1

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_DictComp = _comprehension
    visit_GeneratorExp = _comprehension

    # -- questions --

    def resolve(self, dotted: str) -> str | None:
        """The full name a dotted reference means, through the module's imports."""
        first, _, rest = dotted.partition(".")
        targets = self.imports.get(first, set())
        if len(targets) != 1 or self.bindings[first] != self.imported[first]:
            return None  # `import mlbook` and `import mlbook.pytorch` are one binding
        (target,) = targets
        return f"{target}.{rest}" if rest else target

    def experiment_call(self) -> tuple[ast.Call, ast.Name]:
        """The one ``name = mlbook.Experiment(...)`` at the top level, and the name."""
        if self.bindings["*"]:
            raise NotStatic("a star import (from x import *) may rebind any name")
        calls = [
            c
            for c in self.calls
            if (dotted := _dotted(c.func)) is not None and self.resolve(dotted) in _EXPERIMENT
        ]
        if not calls:
            raise NotStatic("no mlbook.Experiment(...) call in the source")
        if len(calls) > 1:
            lines = ", ".join(str(c.lineno) for c in calls)
            raise NotStatic(f"{len(calls)} mlbook.Experiment(...) calls (lines {lines})")
        call = calls[0]
        for statement in self.top:
            if isinstance(statement, ast.Assign) and statement.value is call:
                targets = statement.targets
            elif isinstance(statement, ast.AnnAssign) and statement.value is call:
                targets = [statement.target]
            else:
                continue
            if len(targets) == 1 and isinstance(targets[0], ast.Name):
                name = targets[0]
                if self.bindings[name.id] == 1 and name.id not in self.globals:
                    return call, name
                raise NotStatic(f"line {call.lineno}: {name.id!r} is assigned more than once")
        raise NotStatic(
            f"line {call.lineno}: the Experiment(...) call is not assigned to a name "
            "at the top level of the script"
        )

    def constant(self, name: str, before: int) -> ast.expr | None:
        """The value of ``name`` when it is assigned once, at the top level, before ``before``."""
        if self.bindings[name] != 1 or name in self.globals:
            return None
        for statement in self.top:
            if statement.lineno >= before:
                return None
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                targets, value = [statement.target], statement.value
            else:
                continue
            if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id == name:
                return value
        return None

    def hooks(self, target: ast.Name, known: Sequence[str]) -> list[str]:
        """Hooks registered on ``target`` at the top level; other uses make it not static."""
        name = target.id
        found: list[str] = []
        allowed: set[int] = set()
        for statement in self.top:
            registrations: list[ast.expr] = []
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                registrations = statement.decorator_list
            elif (
                isinstance(statement, ast.Expr)
                and isinstance(statement.value, ast.Call)
                and len(statement.value.args) == 1
                and not statement.value.keywords
            ):
                registrations = [statement.value.func]
            for node in registrations:
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == name
                    and node.attr in known
                ):
                    found.append(node.attr)
                    allowed.add(id(node.value))
        for node, later in self.references[name]:
            if not later and id(node) not in allowed:
                raise NotStatic(
                    f"line {node.lineno}: {name!r} is used at the top level other than to "
                    f"register a hook (@{name}.train, {name}.predict(f))"
                )
        return found


class _Values:
    """Evaluates the literal arguments of the Experiment call (names of constants included)."""

    def __init__(self, module: _Module) -> None:
        self.module = module
        self.used: set[int] = set()  # Name nodes read while evaluating
        self.mutable: dict[str, ast.expr] = {}  # constants whose value could be changed in place

    def arguments(self, call: ast.Call) -> dict[str, Any]:
        if any(isinstance(a, ast.Starred) for a in call.args) or len(call.args) > 1:
            raise NotStatic(
                f"line {call.lineno}: Experiment(...) takes one positional argument (versions)"
            )
        values: dict[str, Any] = {}
        named = [("versions", a) for a in call.args] + [(k.arg, k.value) for k in call.keywords]
        for name, node in named:
            if name is None:
                raise NotStatic(f"line {call.lineno}: Experiment(**...) is computed")
            if name not in _ARGUMENTS or name in values:
                raise NotStatic(f"line {call.lineno}: Experiment({name}=...) is not understood")
            try:
                values[name] = self.value(node, frozenset())
            except TypeError as exc:  # {[1]: 2}: importing the script reports it, with the line
                raise NotStatic(f"line {node.lineno}: {name}= cannot be built ({exc})") from exc
        self.check_unchanged("the Experiment(...) call")
        return values

    def check_unchanged(self, what: str, kind: str = "experiment") -> None:
        """Constants holding a list, dict or set that were read are used nowhere else."""
        for name, value in self.mutable.items():
            for node, _ in self.module.references[name]:
                if id(node) not in self.used:
                    raise NotStatic(
                        f"line {node.lineno}: {name} (line {value.lineno}) is used elsewhere "
                        f"and could be changed before {what}",
                        kind,
                    )

    def value(self, node: ast.expr, seen: frozenset[str]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise NotStatic(f"line {node.lineno}: {_snippet(node)} is computed")
            items = [self.value(e, seen) for e in node.elts]
            kind = {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)]
            return kind(items)
        if isinstance(node, ast.Dict):
            result: dict[Any, Any] = {}
            for key, item in zip(node.keys, node.values, strict=True):
                if key is None:
                    unpacked = self.value(item, seen)
                    if not isinstance(unpacked, Mapping):
                        raise NotStatic(f"line {node.lineno}: **{_snippet(item)} is not a dict")
                    result.update(unpacked)
                else:
                    result[self.value(key, seen)] = self.value(item, seen)
            return result
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and isinstance(number := node.operand.value, (int, float, complex))
            and not isinstance(number, bool)
        ):
            return -number if isinstance(node.op, ast.USub) else number
        if isinstance(node, ast.Name):
            return self._name(node, seen)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            builtin = node.func.id
            if builtin == "dict" and not node.args and self._unbound(builtin):
                keys: list[ast.expr | None] = [
                    ast.Constant(k.arg) if k.arg else None for k in node.keywords
                ]
                values = [k.value for k in node.keywords]
                return self.value(ast.Dict(keys, values, lineno=node.lineno), seen)
            if (
                builtin == "range"
                and not node.keywords
                and 1 <= len(node.args) <= 3
                and self._unbound(builtin)
            ):
                bounds = [self.value(a, seen) for a in node.args]
                if all(type(b) is int for b in bounds):
                    return range(*bounds)
        raise NotStatic(f"line {node.lineno}: {_snippet(node)} is computed, not a literal")

    def _unbound(self, name: str) -> bool:
        return self.module.bindings[name] == 0 and name not in self.module.globals

    def _name(self, node: ast.Name, seen: frozenset[str]) -> Any:
        self.used.add(id(node))
        name = node.id
        value = None if name in seen else self.module.constant(name, node.lineno)
        if value is None:
            raise NotStatic(
                f"line {node.lineno}: {name} is not a name assigned a literal once, "
                "at the top of the script, before the Experiment(...) call"
            )
        if any(isinstance(n, (ast.List, ast.Dict, ast.Set, ast.Call)) for n in ast.walk(value)):
            self.mutable[name] = value
        return self.value(value, seen | {name})
