"""What an experiment script declares, read without running it in this process.

Planning (``mlbook ls``, ``mlbook run``, ``mlbook export``) needs each script's
title, dataset, files, hooks and versions. :func:`read_plan` gets them without
importing the script (nor torch, numpy or ``Models/common``) in the caller:

1. **From the source** when the ``mlbook.Experiment(...)`` call is made of
   literals (:mod:`mlbook.experiments.static` says exactly which forms), or, for
   a plain script (no ``mlbook.Experiment``), when its ``add_argument`` calls are
   (:mod:`mlbook.experiments.plain`).
2. **In a child process** otherwise (``python -m mlbook.experiments.plans``):
   the child imports the script as the runner's child does (a plain script runs
   as ``__main__`` until its ``parse_args()``) and writes the plan back as
   msgpack (JSON would turn a ``nan`` param into ``null``). With a cache
   directory the answer is kept (``.mlbook/cache/plans/``, one file per script)
   and reused while the script, the project files it imports (its static import
   closure) and the project files its import loaded or opened are unchanged.
   A script that fails or exits while being imported is one error naming it.

:attr:`ScriptPlan.read` says which way a plan was read and :attr:`ScriptPlan.why`
why the source alone was not enough (``mlbook --debug ls`` prints it).

A plain script's versions come from ``mlbook.toml`` (``[experiments.<ID>]``
``versions`` and ``grid`` over its argparse defaults): :func:`configure` adds them
and the table's ``test`` params; :meth:`ScriptPlan.expand` applies ``--set`` and
``--grid`` to a version, typed and checked against the script's options (or, for
an ``Experiment`` script, against the version's params).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from mlbook._version import __version__
from mlbook.errors import ConfigError, ExperimentError
from mlbook.experiments.plain import Option

if TYPE_CHECKING:
    from mlbook.config import ScriptSettings
    from mlbook.experiments.api import Experiment
    from mlbook.project import Project

__all__ = ["ScriptPlan", "configure", "plan_of", "read_plan"]

#: Bumped when the cached answer's shape or meaning changes.
CACHE_FORMAT = 2
#: Files above this size are compared by size and mtime, not hashed, as cache dependencies.
_HASH_LIMIT = 8 << 20
_SKIP_PARTS = frozenset({".git", ".mlbook", ".venv", "venv", "site-packages", "__pycache__"})


class ScriptPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a script declares: the versions (with their params) and hooks the runner plans.

    ``kind`` is ``"experiment"`` (a script with an ``mlbook.Experiment``) or
    ``"plain"`` (a script run as it is; ``options`` are its argparse options).
    ``metric`` and ``goal`` say which run is the best (``Experiment(metric=, goal=)``).
    ``read`` is ``"static"`` (from the source), ``"child"`` (imported in a child
    process) or ``"cache"`` (a child's earlier answer); ``why`` says why the
    source alone was not enough. ``test`` holds the params every version gets in
    test mode (``[experiments.<ID>] test``).
    """

    kind: Literal["experiment", "plain"] = "experiment"
    title: str = ""
    dataset: str | None = None
    files: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    versions: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    options: tuple[Option, ...] = ()
    test: dict[str, Any] = msgspec.field(default_factory=dict)
    metric: str | None = None
    goal: Literal["max", "min"] = "max"
    read: Literal["static", "child", "cache"] = "static"
    why: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        """A plain script's params when it is run without arguments."""
        return {option.dest: option.default for option in self.options}

    def expand(
        self,
        version: str,
        sets: Mapping[str, Any] | None = None,
        grid: Mapping[str, Sequence[Any]] | None = None,
        *,
        test: bool = False,
        where: str = "",
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """``version`` with ``--set`` values, crossed with ``--grid`` values (and, with
        ``test``, the test-mode params): ``[(name, params, overrides), ...]``.

        A grid version is named ``<version>-<key>=<value>,...`` (``<key>=<value>,...``
        for the ``default`` version). Values given as text are read as the kind of
        the current value (the option's type for a plain script).

        Raises:
            ExperimentError: an unknown key (the message lists the known ones) or a
                value that does not fit.
        """
        base = self.params(version)
        try:
            how = "--set"
            overrides = dict(self._typed(base, raw, value) for raw, value in (sets or {}).items())
            how = "--grid"
            axes: dict[str, list[Any]] = {}
            for raw, values in (grid or {}).items():
                if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                    raise ValueError(f"{raw}: expected a list of values")
                typed_values = [self._typed(base, raw, value) for value in values]
                if typed_values:
                    axes[typed_values[0][0]] = [value for _, value in typed_values]
            how = "[experiments] test"
            testing = dict(self._typed(base, raw, value) for raw, value in self.test.items())
        except ValueError as exc:
            raise ExperimentError(f"{where}: {how} {exc}") from None
        if not test:
            testing = {}
        from mlbook.experiments.api import VERSION_NAME

        expanded: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo, strict=True))
            label = ",".join(f"{key}={value}" for key, value in point.items())
            name = version if not label else label if version == "default" else f"{version}-{label}"
            if not VERSION_NAME.match(name):  # it names the run's output directory
                raise ExperimentError(
                    f"{where}: --grid makes the version name {name!r}; grid values in names "
                    "may use letters, digits and _ . = , + - only"
                )
            changed = {**overrides, **point, **testing}
            expanded.append((name, {**base, **changed}, changed))
        return expanded

    def _typed(self, base: dict[str, Any], raw: str, value: Any) -> tuple[str, Any]:
        """``(key, value)``: the param ``raw`` names and ``value`` typed for it.

        Raises:
            ValueError: an unknown key or a value that does not fit (the message
                starts with the key).
        """
        from mlbook.experiments.plain import parse_text, typed

        options = {option.dest: option for option in self.options}
        flags = {f.lstrip("-"): o.dest for o in self.options for f in o.flags}
        key = raw if raw in options else flags.get(raw, raw)
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            what = "options" if self.kind == "plain" else "params"
            raise ValueError(f"{raw}: unknown key; the script's {what}: {known}")
        try:
            if key in options:
                return key, typed(options[key], value)
            return key, parse_text(value, base[key]) if isinstance(value, str) else value
        except ValueError as exc:
            raise ValueError(f"{raw}={value}: {exc}") from None

    def command_line(self, params: Mapping[str, Any], where: str = "") -> list[str]:
        """A plain script's arguments for ``params`` (:func:`.plain.command_line`).

        Raises:
            ExperimentError: a value cannot be passed on the command line.
        """
        from mlbook.experiments.plain import command_line

        try:
            return command_line(self.options, params)
        except ValueError as exc:
            raise ExperimentError(f"{where}: {exc}") from None

    def params(self, version: str) -> dict[str, Any]:
        """The params of ``version`` (a copy).

        Raises:
            ExperimentError: unknown version (the message lists the versions).
        """
        try:
            return dict(self.versions[version])
        except KeyError:
            raise ExperimentError(
                f"unknown version {version!r}; versions: {', '.join(self.versions)}"
            ) from None


def plan_of(
    exp: Experiment,
    *,
    hooks: Sequence[str] | None = None,
    read: Literal["static", "child", "cache"] = "static",
    why: str = "",
) -> ScriptPlan:
    """The plan of an :class:`~mlbook.experiments.api.Experiment` object."""
    return ScriptPlan(
        title=str(exp.title or ""),
        dataset=None if exp.dataset is None else str(exp.dataset),
        files=tuple(str(f) for f in exp.files),
        hooks=tuple(sorted(exp.hooks if hooks is None else hooks)),
        versions={name: params.to_dict() for name, params in exp.versions.items()},
        metric=exp.metric,
        goal="min" if exp.goal == "min" else "max",
        read=read,
        why=why,
    )


# -- reading a script: static first, else a child process (cached) --------------------------


def read_plan(
    script: Path,
    models_dir: Path,
    *,
    root: Path | None = None,
    cache_dir: Path | None = None,
    python: str | None = None,
) -> ScriptPlan:
    """What ``script`` declares, read from its source or, failing that, in a child process.

    This process never imports the script (nor what it imports).

    Args:
        script: the experiment script.
        models_dir: ``Models/`` (where the script's imports resolve; the child's cwd).
        root: the project root: messages name the script relative to it, and the
            cache keeps only files inside it as dependencies.
        cache_dir: where child answers are kept (``.mlbook/cache/plans``); default: no cache.
        python: the interpreter of the child (default: this one).

    Raises:
        ExperimentError: the script cannot be read, is not valid Python, fails (or
            exits) while being imported, or does not define one experiment with a
            train hook.
    """
    shown = _shown(script, root)
    try:
        source = script.read_bytes()
    except OSError as exc:
        raise ExperimentError(f"{shown}: cannot be read ({exc.strerror or exc})") from exc
    from mlbook.experiments.plain import StaticOptions
    from mlbook.experiments.static import NotStatic, read_static

    try:
        static = read_static(source, shown)
        if isinstance(static, StaticOptions):
            return _plain_plan(static.options)
        return plan_of(static.experiment, hooks=static.hooks)
    except SyntaxError as exc:
        raise ExperimentError(
            f"{shown}:{exc.lineno or 0}: the script failed to import: SyntaxError: {exc.msg}"
        ) from exc
    except NotStatic as exc:
        why, kind = str(exc), exc.kind
    cache = _Cache(cache_dir, script, models_dir, root) if cache_dir and root else None
    if cache is not None:
        cached = cache.load()
        if cached is not None and cached.kind == kind:
            return msgspec.structs.replace(cached, read="cache", why=why)
    answer = _import_in_child(script, models_dir, root, python, kind)
    if answer.error is not None or answer.plan is None:
        message = answer.error or "the child process gave no plan"
        raise ExperimentError(message.replace(str(script), shown, 1))
    if cache is not None:
        cache.save(answer.plan, answer.files)
    return msgspec.structs.replace(answer.plan, read="child", why=why)


def _plain_plan(
    options: Sequence[Option], read: Literal["static", "child"] = "static"
) -> ScriptPlan:
    plan = ScriptPlan(kind="plain", options=tuple(options), read=read)
    return msgspec.structs.replace(plan, versions={"default": plan.defaults})


def configure(plan: ScriptPlan, project: Project, ident: str, where: str) -> ScriptPlan:
    """``plan`` with what ``[experiments.<ident>]`` in ``mlbook.toml`` adds.

    A plain script gets its versions (``versions`` and ``grid`` over its argparse
    defaults), title and dataset from the table; every script gets its ``test``
    params (checked here, applied in test mode).

    Raises:
        ConfigError: the table sets versions, grid, title or dataset of an
            ``Experiment`` script, or a key or value its options do not take.
    """
    from mlbook.config import CONFIG_FILE, config_line

    settings: ScriptSettings = project.config.experiments.script(ident)
    config = project.root / CONFIG_FILE
    section = f"experiments.{ident}"

    def error(problem: str, key: str | None, table: str = section) -> ConfigError:
        return ConfigError(config, problem, config_line(config, table, key))

    if plan.kind == "experiment":
        for key in ("versions", "grid", "title", "dataset"):
            if getattr(settings, key):
                raise error(
                    f"[{section}] {key}: {where} declares it in mlbook.Experiment(...); "
                    f"[{section}] {key} is for plain scripts (without mlbook.Experiment)",
                    key,
                )
    else:
        from mlbook.experiments.api import _expand

        base = plan.defaults
        table = ""
        try:
            versions: dict[str, dict[str, Any]] = {}
            for name, changes in settings.versions.items():
                table = f"{section}.versions.{name}"
                versions[name] = dict(plan._typed(base, raw, v) for raw, v in changes.items())
            grid: dict[str, list[Any]] = {}
            for raw, values in settings.grid.items():
                table = f"{section}.grid"
                typed_values = [plan._typed(base, raw, value) for value in values]
                if typed_values:
                    grid[typed_values[0][0]] = [value for _, value in typed_values]
            table = f"{section}.versions"
            expanded = _expand(base, versions or None, grid or None)
        except (ValueError, ExperimentError) as exc:
            parent, _, key = table.rpartition(".")
            raise error(f"{table}: {exc}", key, parent) from None
        plan = msgspec.structs.replace(
            plan,
            versions={name: params.to_dict() for name, params in expanded.items()},
            title=settings.title,
            dataset=settings.dataset,
        )
    if settings.test:
        base = plan.params(next(iter(plan.versions)))
        try:
            for raw, value in settings.test.items():
                plan._typed(base, raw, value)
        except ValueError as exc:
            raise error(f"{section}.test: {exc}", "test") from None
        plan = msgspec.structs.replace(plan, test=dict(settings.test))
    return plan


def _shown(script: Path, root: Path | None) -> str:
    if root is not None:
        absolute = Path(os.path.abspath(script))
        if absolute.is_relative_to(root):
            return absolute.relative_to(root).as_posix()
    return str(script)


class _Answer(msgspec.Struct, kw_only=True):
    """What the child sends back: the plan or one error line, and the files it read."""

    plan: ScriptPlan | None = None
    error: str | None = None
    files: list[str] = msgspec.field(default_factory=list)


def _import_in_child(
    script: Path, models_dir: Path, root: Path | None, python: str | None, kind: str
) -> _Answer:
    import subprocess

    argv = [python or sys.executable, "-m", "mlbook.experiments.plans", str(script)]
    argv += [str(models_dir), str(root or models_dir), kind]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, cwd=models_dir, check=False
        )
    except OSError as exc:
        raise ExperimentError(f"{script}: cannot start a child process to read it: {exc}") from exc
    if done.returncode == 0 and done.stdout:
        try:
            return msgspec.msgpack.decode(done.stdout, type=_Answer)
        except msgspec.DecodeError as exc:
            return _Answer(error=f"{script}: the plan read in a child process is not usable: {exc}")
    tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
    code = done.returncode
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    last = f" (last output: {tail[0].strip()[:200]})" if tail else ""
    what = "run to read its options" if kind == "plain" else "imported to read its versions"
    return _Answer(error=f"{script}: the script {how} while being {what}{last}")


class _CacheEntry(msgspec.Struct):
    key: str
    deps: dict[str, str]
    plan: ScriptPlan


class _Cache:
    """One cached child answer per script, valid while its dependencies are unchanged."""

    def __init__(self, directory: Path, script: Path, models_dir: Path, root: Path) -> None:
        import hashlib

        self.script = Path(os.path.abspath(script))
        self.models_dir = Path(os.path.abspath(models_dir))
        self.root = Path(os.path.abspath(root))
        self.key = "\n".join(
            [str(CACHE_FORMAT), __version__, sys.executable, str(self.script), str(models_dir)]
        )
        name = hashlib.sha256(self.key.encode()).hexdigest()[:32]
        self.path = directory / f"{name}.msgpack"

    def _closure(self) -> set[str]:
        from mlbook.provenance.files import import_closure

        found = import_closure(self.script, [self.script.parent, self.models_dir])
        return {r for p in found if (r := self._relative(p)) is not None}

    def _relative(self, path: Path | str) -> str | None:
        absolute = Path(os.path.abspath(path))
        if not absolute.is_relative_to(self.root):
            return None
        relative = absolute.relative_to(self.root)
        if any(part in _SKIP_PARTS for part in relative.parts):
            return None
        return relative.as_posix()

    def _digest(self, relative: str) -> str:
        import hashlib

        path = self.root / relative
        try:
            stat = path.stat()
            if stat.st_size > _HASH_LIMIT:
                return f"size={stat.st_size},mtime={stat.st_mtime_ns}"
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return ""  # missing (or unreadable): a file created later changes the answer

    def load(self) -> ScriptPlan | None:
        try:
            entry = msgspec.msgpack.decode(self.path.read_bytes(), type=_CacheEntry)
        except (OSError, msgspec.DecodeError):
            return None
        if entry.key != self.key or not self._closure() <= entry.deps.keys():
            return None
        if any(self._digest(path) != digest for path, digest in entry.deps.items()):
            return None
        return entry.plan

    def save(self, plan: ScriptPlan, files: Sequence[str]) -> None:
        from mlbook._fs import atomic_write_bytes

        paths = self._closure() | {r for f in files if (r := self._relative(f)) is not None}
        entry = _CacheEntry(self.key, {p: self._digest(p) for p in sorted(paths)}, plan)
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write_bytes(self.path, msgspec.msgpack.encode(entry))


# -- the child side -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Child entry: ``python -m mlbook.experiments.plans SCRIPT MODELS_DIR ROOT [KIND]``.

    Imports the script as the runner's child does (cwd ``Models/``, on ``sys.path``),
    or, for KIND ``plain``, runs it as ``__main__`` until it parses its arguments,
    and writes an :class:`_Answer` as msgpack to stdout; whatever the script prints
    goes to stderr.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    script, models_dir, root = args[:3]
    kind = args[3] if len(args) > 3 else "experiment"
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # the script's own prints (C code too) go to stderr
    opened: set[str] = set()

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str):
            opened.add(os.path.abspath(args[0]))

    sys.addaudithook(audit)
    os.chdir(models_dir)
    sys.path.insert(0, models_dir)
    sys.argv = [script]
    answer = (
        _answer_plain(Path(script)) if kind == "plain" else _answer(Path(script), Path(models_dir))
    )
    prefix = os.path.join(os.path.abspath(root), "")
    loaded = {
        os.path.abspath(f)
        for m in list(sys.modules.values())
        if isinstance(f := getattr(m, "__file__", None), str)
    }
    answer.files = sorted(f for f in opened | loaded if f.startswith(prefix))
    data = msgspec.msgpack.encode(answer, enc_hook=_plain)
    with os.fdopen(answer_fd, "wb") as out:
        out.write(data)
    sys.stderr.flush()
    os._exit(0)


def _plain(value: Any) -> Any:
    """A param value msgpack cannot hold: numpy/torch scalars and arrays as numbers and lists,
    anything else as its ``repr``."""
    for method in ("item", "tolist"):
        convert = getattr(value, method, None)
        if callable(convert):
            with contextlib.suppress(Exception):
                return convert()
    return repr(value)


def _answer_plain(script: Path) -> _Answer:
    from mlbook.experiments.plain import capture_options

    try:
        options = capture_options(script)
    except ExperimentError as exc:
        return _Answer(error=str(exc))
    return _Answer(plan=_plain_plan(options, read="child"))


def _answer(script: Path, models_dir: Path) -> _Answer:
    from mlbook.experiments.discovery import load_script

    try:
        exp = load_script(script, models_dir, isolate=False)
    except ExperimentError as exc:
        return _Answer(error=str(exc))
    except SystemExit as exc:
        return _Answer(
            error=f"{script}: the script called sys.exit({exc.code!r}) while being imported "
            'to read its versions; keep it under `if __name__ == "__main__":`'
        )
    return _Answer(plan=plan_of(exp, read="child"))


if __name__ == "__main__":
    main()
