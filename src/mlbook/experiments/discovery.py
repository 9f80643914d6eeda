"""Find experiment scripts (``Models/<ID>_<name>.py``), read their plans, load them.

The ID pattern and the include/exclude lists come from ``[experiments]`` in
``mlbook.toml``. Planning reads a script with :func:`read_script` (its source,
or an import in a child process: :mod:`mlbook.experiments.plans`), so the
caller never imports it. :func:`load_script` imports it with ``Models/`` on
``sys.path``, as the runner's child process does.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlbook.experiments.api import Experiment
    from mlbook.experiments.plans import ScriptPlan
    from mlbook.project import Project

__all__ = [
    "Script",
    "find_experiment",
    "find_scripts",
    "load_experiment",
    "load_script",
    "read_script",
    "select_scripts",
    "select_versions",
]


@dataclass(frozen=True)
class Script:
    """An experiment script on disk: ``Models/E012_digits_cnn.py`` has id ``E012``."""

    id: str
    name: str
    path: Path


def find_scripts(project: Project) -> list[Script]:
    """All experiment scripts in ``Models/``, sorted by ID.

    Raises:
        ExperimentError: two scripts share an ID.
    """
    id_pattern = project.config.experiments.id_pattern
    pattern = re.compile(rf"^(?P<id>{id_pattern})_(?P<name>\w[\w.-]*)\.py$")
    models = project.models_dir
    found: dict[str, Script] = {}
    if not models.is_dir():
        return []
    for path in sorted(models.iterdir()):
        match = pattern.match(path.name)
        if not match or not path.is_file():
            continue
        script = Script(id=match["id"], name=match["name"], path=path)
        if script.id in found:
            raise ExperimentError(
                f"{project.relative(path)}: ID {script.id} is also used by "
                f"{project.relative(found[script.id].path)}; rename one of them"
            )
        found[script.id] = script
    return sorted(found.values(), key=lambda s: _id_key(s.id))


def _id_key(ident: str) -> tuple[str, int, str]:
    match = re.match(r"^(\D*)(\d+)(.*)$", ident)
    if match:
        return (match[1], int(match[2]), match[3])
    return (ident, 0, "")


def select_scripts(project: Project, ids: tuple[str, ...] | list[str] = ()) -> list[Script]:
    """The scripts to run: ``ids`` in the given order, or the config's include/exclude lists.

    Raises:
        ExperimentError: an unknown ID (the message lists the IDs that exist).
    """
    scripts = {s.id: s for s in find_scripts(project)}
    settings = project.config.experiments
    if ids:
        wanted = list(ids)
    elif settings.include:
        wanted = list(settings.include)
    else:
        excluded = set(settings.exclude)
        return [s for s in scripts.values() if s.id not in excluded]
    unknown = [i for i in wanted if i not in scripts]
    if unknown:
        source = "" if ids else " (listed in mlbook.toml [experiments] include)"
        known = ", ".join(scripts) or 'none; create one with `mlbook new E001 "title"`'
        raise ExperimentError(
            f"unknown experiment {', '.join(unknown)}{source}; experiments in "
            f"{project.relative(project.models_dir)}/: {known}"
        )
    return [scripts[i] for i in dict.fromkeys(wanted)]


def find_experiment(project: Project, ident: str) -> Script:
    """The script of experiment ``ident``; unknown IDs raise :class:`ExperimentError`."""
    return select_scripts(project, [ident])[0]


def read_script(project: Project, script: Script) -> ScriptPlan:
    """What ``script`` declares (title, dataset, hooks, versions and their params).

    Read from the source when it can be; otherwise the script is imported in a
    child process and the answer cached in ``.mlbook/cache/plans/``. This process
    never imports the script. ``[experiments.<ID>]`` in ``mlbook.toml`` adds a
    plain script's versions and every script's test-mode params.

    Raises:
        ExperimentError: the script is unreadable, fails or exits while being
            imported, or defines no experiment with a train hook.
        ConfigError: its ``[experiments.<ID>]`` table does not fit the script.
    """
    from mlbook.experiments.plans import configure, read_plan

    plan = read_plan(
        script.path,
        project.models_dir,
        root=project.root,
        cache_dir=project.state_dir / "cache" / "plans",
    )
    return configure(plan, project, script.id, project.relative(script.path))


def load_script(path: Path, models_dir: Path, *, isolate: bool = True) -> Experiment:
    """Import the script at ``path`` (``models_dir`` on ``sys.path``); return its experiment.

    With ``isolate`` (the default) the import leaves no trace: ``sys.path`` is
    restored and the modules imported from ``models_dir`` are dropped again, so
    scripts of several projects (or an edited ``Models/common``) can be loaded in
    one process. The runner's child loads with ``isolate=False``.

    Raises:
        ExperimentError: the script fails to import, or does not define exactly one
            :class:`~mlbook.Experiment` at module level.
    """
    saved_path = list(sys.path)
    _forget_modules(models_dir)
    try:
        return _load(path, models_dir)
    finally:
        if isolate:
            sys.path[:] = saved_path
            _forget_modules(models_dir)


def _forget_modules(models_dir: Path) -> None:
    """Drop cached modules that ``models_dir`` provides or shadows (``common``, ``common.x``)."""
    try:
        names = {p.stem if p.suffix == ".py" else p.name for p in models_dir.iterdir()}
    except OSError:
        return
    for name in [m for m in sys.modules if m.split(".")[0] in names or m.startswith("_mlbook_")]:
        del sys.modules[name]


def _load(path: Path, models_dir: Path) -> Experiment:
    import importlib.util
    import traceback

    from mlbook.experiments.api import Experiment

    models = str(models_dir)
    if models not in sys.path:
        sys.path.insert(0, models)
    module_name = f"_mlbook_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ExperimentError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ExperimentError as exc:
        raise ExperimentError(f"{path}: {exc}") from exc
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = f":{frames[-1].lineno}" if frames else ""
        raise ExperimentError(
            f"{path}{line}: the script failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    found = [v for v in vars(module).values() if isinstance(v, Experiment)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ExperimentError(
            f"{path}: defines {what} mlbook.Experiment at module level; "
            "expected exactly one (exp = mlbook.Experiment(...))"
        )
    exp = found[0]
    if "train" not in exp.hooks:
        raise ExperimentError(f"{path}: no train hook; decorate a function with @exp.train")
    return exp


def load_experiment(project: Project, ident: str) -> Experiment:
    """Find and import experiment ``ident`` of ``project``."""
    return load_script(find_experiment(project, ident).path, project.models_dir)


class _Versioned(Protocol):
    @property
    def versions(self) -> Mapping[str, Any]: ...


def select_versions(
    exp: _Versioned,
    versions: tuple[str, ...] | list[str] = (),
    skip: tuple[str, ...] | list[str] = (),
    where: str = "",
) -> list[str]:
    """The version names to run: ``versions`` (default: all) minus ``skip``.

    ``exp`` is a :class:`~mlbook.experiments.plans.ScriptPlan` or an
    :class:`~mlbook.Experiment`.

    Raises:
        ExperimentError: an unknown version name (the message lists the versions).
    """
    known = list(exp.versions)
    unknown = [v for v in (*versions, *skip) if v not in exp.versions]
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ExperimentError(
            f"{prefix}unknown version {', '.join(unknown)}; versions: {', '.join(known)}"
        )
    chosen = list(dict.fromkeys(versions)) if versions else known
    return [v for v in chosen if v not in set(skip)]
