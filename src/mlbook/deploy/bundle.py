"""``mlbook export``: write a run's model as a self-contained, verified bundle.

A bundle (``Deployment/exports/E012-small/``) holds ``code/`` (the script and
every file under ``Models/`` it imports, paths kept relative to ``Models/``),
``weights/``, ``params.json``, ``labels.json``, the recorded sample input,
optionally ``model.onnx``, and ``manifest.json`` with the hash of every file.

It is built in a temporary directory beside the destination, verified there by
a clean child process (:mod:`mlbook.deploy.verify`), which also signs the
manifest with the project's key (``signature.json``, see
:mod:`mlbook.deploy.signing`), checked once more against its manifest and
signature, and only then renamed into place. If anything fails (a full disk
included: one :class:`ExportError` line), nothing is left at the destination:
no half-written bundle, no directory the export created (an older bundle there
stays as it was).

The exporting process reads the script's source but does not import it (nor
torch): ``dataset=``, ``files=``, ``title=``, ``metric=`` and ``goal=`` are read
from the ``mlbook.Experiment(...)`` call when it is made of literals, and the
script is imported in a child process when it is not (:mod:`mlbook.experiments.plans`).

Which run: the best completed run by the selection metric (:mod:`mlbook.deploy.selection`),
and :attr:`ExportResult.selection` says why. A bundle already at the destination
is replaced only with ``force``; :attr:`ExportResult.replaced` names the run it held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mlbook._fs import sha256_file
from mlbook.deploy.manifest import MANIFEST_FILE, Manifest, check_bundle, write_manifest
from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.deploy.selection import Selection
    from mlbook.deploy.signing import PublicKey
    from mlbook.experiments.query import RunRecord
    from mlbook.progress import Reporter
    from mlbook.project import Project

__all__ = [
    "ExportResult",
    "FileWriter",
    "Replaced",
    "code_files",
    "default_destination",
    "export_run",
    "script_settings",
    "write_file",
]

#: Puts one file into the staging directory, from its bytes or from a file to copy.
FileWriter = Callable[[Path, bytes | Path], None]

_WEIGHT_FORMATS = {".pt": "torch", ".pth": "torch", ".safetensors": "safetensors", ".pkl": "pickle"}


@dataclass(frozen=True)
class Replaced:
    """The bundle an export replaced: its run, and its value of the selection metric."""

    run_id: str
    metric: str | None
    value: float | None


@dataclass(frozen=True)
class ExportResult:
    """A finished export: where it is, what it holds, how it was verified, who signed it.

    ``key`` is the fingerprint of the project key that signed the bundle and
    ``public_key`` the file deployment machines need to trust it; ``selection``
    says which run and why; ``replaced`` the bundle that was there before (``force``).
    """

    path: Path
    manifest: Manifest
    seconds: float
    verify_seconds: float
    key: str
    public_key: Path
    selection: Selection | None = None
    replaced: Replaced | None = None


def write_file(target: Path, source: bytes | Path) -> None:
    """The default :data:`FileWriter`: write the bytes, or copy the file."""
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(source, target)


def default_destination(project: Project, experiment: str, version: str) -> Path:
    """``Deployment/exports/<experiment>-<version>`` (the directory is configurable)."""
    return project.exports_dir / f"{experiment}-{version}"


def script_settings(script: Path, models_dir: Path) -> dict[str, Any]:
    """What the script's ``Experiment(...)`` says: dataset, files, title, metric and goal.

    Read by :func:`mlbook.experiments.plans.read_plan`: from the source when the
    arguments are literals, otherwise by importing the script in a child process.

    Raises:
        ExportError: a plain script (no ``mlbook.Experiment``): loading an export
            imports its script, and a plain script runs its training when imported.
    """
    from mlbook.experiments.plans import read_plan

    plan = read_plan(script, models_dir)
    if plan.kind == "plain":
        raise ExportError(
            f"{script.name} is a plain script (no mlbook.Experiment); an export is rebuilt "
            "through the mlbook.Experiment shape (a model hook, or a saved scikit-learn "
            "estimator, and predict/sample hooks): see docs/experiments.md"
        )
    return {
        "dataset": plan.dataset,
        "files": list(plan.files),
        "title": plan.title,
        "metric": plan.metric,
        "goal": plan.goal,
    }


def _selection(
    project: Project,
    experiment: str,
    version: str | None,
    run_id: str | None,
    settings: dict[str, Any],
    metric: str | None,
    goal: str | None,
) -> Selection:
    """Pick the run: the metric given, else the script's, else the config's."""
    from mlbook.deploy.selection import select_run

    configured = project.config.experiments
    if metric is not None:
        chosen, how, source = metric, goal or "max", "--metric"
    elif settings["metric"]:
        chosen, how, source = settings["metric"], settings["goal"], "Experiment(metric=...)"
    elif configured.metric:
        chosen, how, source = configured.metric, configured.goal, "[experiments] metric"
    else:
        chosen, how, source = None, "max", ""
    return select_run(
        project, experiment, version, run_id, metric=chosen, goal=goal or how, source=source
    )


def _existing(target: Path, selection: Selection, force: bool, where: str) -> Replaced | None:
    """The bundle at ``target`` that the export would replace (refused without ``force``)."""
    from mlbook.deploy.manifest import parse_manifest, read_manifest_bytes
    from mlbook.deploy.selection import metric_value

    if not target.exists():
        return None
    if not (target / MANIFEST_FILE).is_file():
        raise ExportError(
            f"{where}: exists and is not an export bundle; choose another destination (--dest)"
        )
    try:
        old = parse_manifest(read_manifest_bytes(target), target / MANIFEST_FILE)
    except ExportError:
        old_run, old_value = "(unreadable manifest)", None
    else:
        old_run, old_value = old.run_id, metric_value(old.metrics, selection.metric)
    replaced = Replaced(old_run, selection.metric, old_value)
    if not force:
        new = selection.run
        if old_run == new.id:
            raise ExportError(
                f"{where} already holds run {new.id}{_shown(selection.metric, selection.value)}: "
                "pass --force to export it again, or --dest to export elsewhere"
            )
        raise ExportError(
            f"{where} holds run {old_run}{_shown(replaced.metric, old_value)}; this export is "
            f"run {new.id}{_shown(selection.metric, selection.value)}: pass --force to replace "
            "it, or --dest to export elsewhere"
        )
    return replaced


def _shown(metric: str | None, value: float | None) -> str:
    if metric is None:
        return ""
    return f" ({metric} {value:.4g})" if value is not None else f" (no {metric})"


class _ChangedCode(ExportError):
    """A file the run used differs from what the run recorded."""


def code_files(
    root: Path,
    models_dir: Path,
    outputs_dir: Path,
    script: Path,
    recorded: list[tuple[str, int, str]],
    extra: list[str],
    *,
    current_code: bool,
) -> dict[str, Path]:
    """The code to carry: ``Models/``-relative path -> file.

    The union of the static import walk from ``script``, the files the run recorded
    (paths relative to ``root``; those under ``models_dir``) and the script's declared
    ``files``. A recorded file whose content changed since the run is refused unless
    ``current_code``.
    """
    from mlbook.provenance.files import import_closure

    models = models_dir.resolve()
    outputs = outputs_dir.resolve()
    chosen: dict[str, Path] = {}

    def relative(path: Path) -> str:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return str(path)

    def add(path: Path, why: str) -> None:
        resolved = path.resolve()
        if models not in resolved.parents or outputs in resolved.parents or outputs == resolved:
            return
        parts = resolved.relative_to(models).parts
        if any(p in ("__pycache__", ".git", ".venv", "venv") for p in parts):
            return
        if not resolved.is_file():
            raise ExportError(f"{relative(path)}: {why} but it is missing; restore it")
        chosen[resolved.relative_to(models).as_posix()] = resolved

    for path in import_closure(script, [script.parent, models]):
        add(path, "imported by the script")
    for rel, _size, digest in recorded:
        path = root / rel
        parent = path.parent.resolve()
        if not path.is_file() and (parent == models or models in parent.parents):
            raise _ChangedCode(f"{rel} was used by the run but is missing; restore it or re-run")
        add(path, "used by the run")
        changed = path.is_file() and sha256_file(path) != digest
        if changed and models in path.resolve().parents and not current_code:
            raise _ChangedCode(
                f"{rel} changed since the run (sha256 differs); re-run the version, "
                "or pass --current-code to export the current code with the run's weights"
            )
    for name in extra:
        path = models_dir / name
        if not path.is_file():
            raise ExportError(
                f"{relative(path)}: listed in Experiment(files=...) but missing; "
                "fix the path (relative to Models/)"
            )
        add(path, "listed in Experiment(files=...)")
    return dict(sorted(chosen.items()))


def _weights(project: Project, run: RunRecord) -> tuple[Path, str]:
    from mlbook.experiments.query import run_artifacts
    from mlbook.experiments.store import Store

    if run.weights is None:
        raise ExportError(
            f"run {run.id} saved no weights; call run.save_weights(model) in the train hook"
        )
    path = project.root / run.weights
    if not path.is_file():
        raise ExportError(f"{project.relative(path)}: the weights of run {run.id} are missing")
    with Store.for_project(project, recover=False) as store:
        recorded = {p: digest for p, _s, digest, _k in run_artifacts(store, run.id)}
    digest = recorded.get(run.weights)
    if digest is not None and sha256_file(path) != digest:
        raise ExportError(
            f"{project.relative(path)}: changed since run {run.id} saved it (sha256 differs); "
            "re-run the version"
        )
    kind = _WEIGHT_FORMATS.get(path.suffix)
    if kind is None:
        raise ExportError(f"{path}: unknown weights format; use run.save_weights(model)")
    return path, kind


def _labels(project: Project, run: RunRecord, dataset: str | None) -> bytes | None:
    saved = project.root / run.outputs / "labels.json"
    if saved.is_file():
        return saved.read_bytes()
    if not dataset:
        return None
    from mlbook.datasets.dataset import open_dataset
    from mlbook.errors import DatasetError

    try:
        encoding = open_dataset(project.datasets_dir / dataset).encoding
    except DatasetError as exc:
        raise ExportError(f"cannot read the class encoding of dataset {dataset!r}: {exc}") from exc
    return encoding.to_json() + b"\n"


def _packages(files: dict[str, Path]) -> dict[str, str]:
    """Versions of the installed packages the bundle's code imports (and what loading needs)."""
    from mlbook.provenance.files import file_imports, package_versions

    local = {Path(rel).parts[0].removesuffix(".py") for rel in files}  # the bundle's own code
    names = {"mlbook", "safetensors", "torch"}
    for path in files.values():
        if path.suffix == ".py":
            names.update(s.module for s in file_imports(path) if s.top and s.top not in local)
    return package_versions(names)


def export_run(
    project: Project,
    experiment: str,
    version: str | None = None,
    *,
    run_id: str | None = None,
    dest: Path | str | None = None,
    onnx: bool | None = None,
    force: bool = False,
    current_code: bool = False,
    metric: str | None = None,
    goal: str | None = None,
    reporter: Reporter | None = None,
    writer: FileWriter = write_file,
) -> ExportResult:
    """Export a run of ``experiment`` as a verified bundle, signed with the project's key.

    Args:
        project: the project.
        experiment: the experiment ID (``E012``).
        version: only runs of this version (default: any version).
        run_id: the run (a unique prefix is enough); default: the best completed
            run by the selection metric (see :mod:`mlbook.deploy.selection`).
        dest: the bundle directory; default ``Deployment/exports/<ID>-<version>``.
        onnx: also write ``model.onnx`` (default: ``[export] onnx`` in mlbook.toml).
        force: replace a bundle already at ``dest``.
        current_code: export the code as it is now even when files the run used
            changed since (default: the run's own code, from its snapshot).
        metric, goal: the selection metric, instead of the script's or the config's.
        reporter: progress (default: none).
        writer: puts each file into the staging directory (a seam: tests pass one
            that fails like a full disk).

    Raises:
        ExportError: no such run, no run with the selection metric, a bundle at
            ``dest`` without ``force``, missing weights or code, changed code, a
            file that cannot be written (a full disk), or a failed verification
            (nothing is left at ``dest`` then).
    """
    from mlbook.errors import ExperimentError
    from mlbook.experiments.discovery import find_experiment
    from mlbook.experiments.query import run_files
    from mlbook.experiments.store import Store
    from mlbook.progress import NullReporter

    start = time.perf_counter()
    report = reporter or NullReporter()
    onnx = project.config.export.onnx if onnx is None else onnx

    try:
        script = find_experiment(project, experiment).path
    except ExperimentError as exc:
        raise ExportError(str(exc)) from exc
    current = script_settings(script, project.models_dir)
    selection = _selection(project, experiment, version, run_id, current, metric, goal)
    run = selection.run
    target = (
        Path(dest) if dest is not None else default_destination(project, experiment, run.version)
    ).absolute()
    replaced = _existing(target, selection, force, project.relative(target))
    with Store.for_project(project, recover=False) as store:
        recorded: list[tuple[str, int, str]] = list(run_files(store, run.id))
    stack = contextlib.ExitStack()
    with stack:
        code, settings, code_commit = _collect_code(
            project, run, script, recorded, current_code, stack, current
        )
        result = _write_bundle(
            project, run, script, code, settings, code_commit, target, onnx, report, start, writer
        )
        return dataclasses.replace(result, selection=selection, replaced=replaced)
    raise AssertionError("unreachable")  # pragma: no cover


def _collect_code(
    project: Project,
    run: RunRecord,
    script: Path,
    recorded: list[tuple[str, int, str]],
    current_code: bool,
    stack: contextlib.ExitStack,
    settings: dict[str, Any],
) -> tuple[dict[str, Path], dict[str, Any], str | None]:
    """The code to carry, from the working tree or, when it changed since the run,
    from the run's ``before`` snapshot (whose files must match what the run recorded).

    ``settings`` are those of the script in the working tree."""
    try:
        files = code_files(
            project.root,
            project.models_dir,
            project.outputs_dir,
            script,
            recorded,
            settings["files"],
            current_code=current_code,
        )
        return files, settings, None
    except _ChangedCode:
        if run.commit_before is None:
            raise
    from mlbook.errors import ProvenanceError
    from mlbook.provenance.git import checkout

    tree = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlbook-export-"))) / "tree"
    try:
        checkout(project.root, run.commit_before, tree, missing_ok=True)
    except ProvenanceError as exc:
        raise ExportError(
            f"code of run {run.id} changed since, and its snapshot {run.commit_before[:12]} "
            f"cannot be read ({exc}); re-run the version or pass --current-code"
        ) from exc
    models = tree / project.models_dir.relative_to(project.root)
    old_script = tree / script.relative_to(project.root)
    settings = script_settings(old_script, models)
    try:
        files = code_files(
            tree,
            models,
            tree / project.outputs_dir.relative_to(project.root),
            old_script,
            recorded,
            settings["files"],
            current_code=False,
        )
    except _ChangedCode as exc:
        raise ExportError(
            f"{exc} (the run's snapshot {run.commit_before[:12]} differs too)"
        ) from exc
    return files, settings, run.commit_before


def _write_bundle(
    project: Project,
    run: RunRecord,
    script: Path,
    code: dict[str, Path],
    settings: dict[str, Any],
    code_commit: str | None,
    target: Path,
    onnx: bool,
    report: Reporter,
    start: float,
    writer: FileWriter,
) -> ExportResult:
    from mlbook._version import __version__
    from mlbook.deploy.signing import project_key

    experiment = run.experiment
    weights, weights_kind = _weights(project, run)
    labels = _labels(project, run, settings["dataset"])
    key = project_key(project.root)
    created: list[Path] = []
    tmp: Path | None = None
    try:
        created = _make_parents(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        for rel, path in code.items():
            copy = tmp / "code" / rel
            copy.parent.mkdir(parents=True, exist_ok=True)
            writer(copy, path)
        (tmp / "weights").mkdir()
        weight_name = f"weights/model{weights.suffix}"
        writer(tmp / weight_name, weights)
        params = orjson.dumps(run.params, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        writer(tmp / "params.json", params + b"\n")
        if labels is not None:
            writer(tmp / "labels.json", labels)
        manifest = Manifest(
            experiment=run.experiment,
            version=run.version,
            run_id=run.id,
            title=settings["title"] or "",
            entry_point=f"code/{script.resolve().relative_to(project.models_dir.resolve()).as_posix()}",
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            mlbook=__version__,
            python=run.python or platform.python_version(),
            packages=_packages(code),
            commits={"before": run.commit_before, "after": run.commit_after},
            code_commit=code_commit,
            dataset=settings["dataset"],
            data_version=run.data_version,
            metrics=run.metrics,
            weights=[weight_name],
            weights_format=weights_kind,
            labels_file="labels.json" if labels is not None else None,
        )
        write_manifest(tmp, manifest)
        from mlbook.deploy.verify import verify_bundle

        with report.task(f"verifying {experiment}-{run.version} in a clean process"):
            verified = verify_bundle(
                tmp,
                finish=True,
                onnx=onnx,
                forbid=project.root,
                signing_key=key.path,
                name=project.relative(target),
            )
        final = _check_signed(tmp, key.public)
        _replace_dir(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        if isinstance(exc, OSError):
            raise ExportError(
                f"{project.relative(target)}: cannot write the export ({_os_reason(exc)}); "
                "nothing was written: free some space (or fix the permissions) and export again"
            ) from exc
        raise
    return ExportResult(
        path=target,
        manifest=final,
        seconds=time.perf_counter() - start,
        verify_seconds=verified.seconds,
        key=key.public.fingerprint,
        public_key=Path(key.public.source),
    )


def _os_reason(exc: OSError) -> str:
    if exc.strerror:
        return f"{exc.strerror}, errno {exc.errno}" if exc.errno else exc.strerror
    return str(exc) or type(exc).__name__


def _make_parents(directory: Path) -> list[Path]:
    """``mkdir -p directory``; return the directories it made, outermost first."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _check_signed(root: Path, public: PublicKey) -> Manifest:
    """The bundle the child finished: every file matches, and the project's key signed it."""
    from mlbook.deploy.manifest import parse_manifest, read_manifest_bytes
    from mlbook.deploy.signing import check_signature

    data = read_manifest_bytes(root)
    manifest = check_bundle(root, parse_manifest(data, root / MANIFEST_FILE))
    signature = check_signature(root, data, [public])
    if not signature.ok:
        raise ExportError(f"the verified bundle is not signed as expected: {signature.problem}")
    return manifest


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is replaced only once ``new`` is in."""
    if not target.exists():
        os.rename(new, target)
        return
    if not (target / MANIFEST_FILE).is_file():
        raise ExportError(
            f"{target}: exists and is not an export bundle; choose another destination"
        )
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / "bundle")
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old / "bundle", target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
