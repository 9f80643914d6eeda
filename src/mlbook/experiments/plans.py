"""What an experiment script declares, read without running it in this process.

Planning (``mlbook ls``, ``mlbook run``, ``mlbook export``) needs each script's
title, dataset, files, hooks and versions. :func:`read_plan` gets them without
importing the script (nor torch, numpy or ``Models/common``) in the caller:

1. **From the source** when the ``mlbook.Experiment(...)`` call is made of
   literals (:mod:`mlbook.experiments.static` says exactly which forms).
2. **In a child process** otherwise (``python -m mlbook.experiments.plans``):
   the child imports the script as the runner's child does and writes the plan
   back as msgpack (JSON would turn a ``nan`` param into ``null``). With a cache
   directory the answer is kept (``.mlbook/cache/plans/``, one file per script)
   and reused while the script, the project files it imports (its static import
   closure) and the project files its import loaded or opened are unchanged.
   A script that fails or exits while being imported is one error naming it.

:attr:`ScriptPlan.read` says which way a plan was read and :attr:`ScriptPlan.why`
why the source alone was not enough (``mlbook --debug ls`` prints it).

A second kind of script (a plain argparse script) would get its own ``kind``, a
static reader beside :mod:`~mlbook.experiments.static` and a child-side reader
beside :func:`_answer`; :func:`read_plan` would pick the reader from the source.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from mlbook._version import __version__
from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    from mlbook.experiments.api import Experiment

__all__ = ["ScriptPlan", "plan_of", "read_plan"]

#: Bumped when the cached answer's shape or meaning changes.
CACHE_FORMAT = 2
#: Files above this size are compared by size and mtime, not hashed, as cache dependencies.
_HASH_LIMIT = 8 << 20
_SKIP_PARTS = frozenset({".git", ".mlbook", ".venv", "venv", "site-packages", "__pycache__"})


class ScriptPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a script declares: the versions (with their params) and hooks the runner plans.

    ``kind`` is ``"experiment"`` (a script with an ``mlbook.Experiment``);
    ``metric`` and ``goal`` say which run is the best (``Experiment(metric=, goal=)``).
    ``read`` is ``"static"`` (from the source), ``"child"`` (imported in a child
    process) or ``"cache"`` (a child's earlier answer); ``why`` says why the
    source alone was not enough.
    """

    kind: Literal["experiment"] = "experiment"
    title: str = ""
    dataset: str | None = None
    files: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    versions: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    metric: str | None = None
    goal: Literal["max", "min"] = "max"
    read: Literal["static", "child", "cache"] = "static"
    why: str = ""

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
    from mlbook.experiments.static import NotStatic, read_experiment

    try:
        static = read_experiment(source, shown)
        return plan_of(static.experiment, hooks=static.hooks)
    except SyntaxError as exc:
        raise ExperimentError(
            f"{shown}:{exc.lineno or 0}: the script failed to import: SyntaxError: {exc.msg}"
        ) from exc
    except NotStatic as exc:
        why = str(exc)
    cache = _Cache(cache_dir, script, models_dir, root) if cache_dir and root else None
    if cache is not None:
        cached = cache.load()
        if cached is not None:
            return msgspec.structs.replace(cached, read="cache", why=why)
    answer = _import_in_child(script, models_dir, root, python)
    if answer.error is not None or answer.plan is None:
        message = answer.error or "the child process gave no plan"
        raise ExperimentError(message.replace(str(script), shown, 1))
    if cache is not None:
        cache.save(answer.plan, answer.files)
    return msgspec.structs.replace(answer.plan, read="child", why=why)


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
    script: Path, models_dir: Path, root: Path | None, python: str | None
) -> _Answer:
    import subprocess

    argv = [python or sys.executable, "-m", "mlbook.experiments.plans", str(script)]
    argv += [str(models_dir), str(root or models_dir)]
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
    return _Answer(
        error=f"{script}: the script {how} while being imported to read its versions{last}"
    )


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
    """Child entry: ``python -m mlbook.experiments.plans SCRIPT MODELS_DIR ROOT``.

    Imports the script as the runner's child does (cwd ``Models/``, on ``sys.path``)
    and writes an :class:`_Answer` as msgpack to stdout; whatever the script prints
    goes to stderr.
    """
    script, models_dir, root = (sys.argv[1:] if argv is None else list(argv))[:3]
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
    answer = _answer(Path(script), Path(models_dir))
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
