"""Data lineage: which script at which commit produced which dataset version, and who used it.

Two kinds of *step* make a dataset version:

- :func:`process_data` (``mlbook data process``) runs a ``Data_processing/`` script
  in its own process with ``--in PATH ... --out TMP`` appended to its arguments,
  under the boundary rule (checked statically first, then guarded at run time:
  the script may touch only ``Datasets/`` and ``Data_processing/``). ``TMP`` is a
  new directory beside the output, renamed into place only when the script
  succeeds, so a failed script leaves the previous dataset as it was. The step is
  recorded in the run store: the script's sha256 and the commit of the code (a
  snapshot like a run's before commit), params (the extra arguments), input and
  output dataset hashes (as :func:`~mlbook.provenance.datasets.dataset_identity`
  gives them, so they match what runs record), duration, status, output log.
- A ``dvc.lock`` stage whose command runs a ``Data_processing/`` script is read as
  the same kind of step (:func:`dvc_steps`): the script's md5 from its ``deps``,
  the commit that last changed the lock file.

:func:`lineage` puts it together for one dataset: each version (hash) with the
steps that made it and the runs that trained on it; :func:`run_data` does the
same for the datasets of one run (``mlbook show``), with what changed since.
:func:`pipeline_warnings` names ``dvc.yaml`` stages that run a script missing
from their own ``deps`` (DVC cannot see changes to it).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook._fs import sha256_file
from mlbook.errors import DatasetError, MlbookError

if TYPE_CHECKING:
    from mlbook.experiments.query import DataStep, RunDataset
    from mlbook.project import Project
    from mlbook.provenance.datasets import DatasetRecord
    from mlbook.provenance.dvc import DvcStage

__all__ = [
    "OUTPUT_LIMIT",
    "DataChange",
    "DatasetVersion",
    "Lineage",
    "ProcessResult",
    "RunData",
    "Step",
    "compare_data",
    "dvc_steps",
    "lineage",
    "pipeline_warnings",
    "process_data",
    "run_data",
]

#: characters of a step's output log kept in the store (the end is kept)
OUTPUT_LIMIT = 1 << 20


@dataclass(frozen=True)
class Step:
    """A step that made a dataset version: an ``mlbook data process`` run or a dvc.lock stage.

    Attributes:
        kind: ``process`` or ``dvc``.
        id: the step id (``process``) or ``dvc.lock:<stage>``.
        script: root-relative path of the script ('' when the stage runs none).
        script_hash: ``sha256:...`` (process) or ``md5:...`` (from the stage's deps).
        commit: the commit of the code (process: its snapshot; dvc: the lock's last commit).
        params: the extra arguments (process) or the stage's params.
        inputs: ``(path, hash)`` of each input dataset.
        outputs: ``(path, hash)`` of each output dataset.
        status, duration, command: how it went (process) / the stage command (dvc).
    """

    kind: str
    id: str
    script: str
    script_hash: str
    commit: str | None
    params: Any
    inputs: tuple[tuple[str, str], ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()
    status: str = "completed"
    duration: float | None = None
    command: str = ""

    @property
    def label(self) -> str:
        """``Data_processing/clean.py@83d45cd`` (or the stage command)."""
        where = (self.commit or "")[:7] or "no commit"
        return f"{self.script or self.command}@{where}"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {
            "kind": self.kind,
            "id": self.id,
            "script": self.script,
            "script_hash": self.script_hash,
            "commit": self.commit,
            "params": self.params,
            "inputs": [{"path": p, "hash": h} for p, h in self.inputs],
            "outputs": [{"path": p, "hash": h} for p, h in self.outputs],
            "status": self.status,
            "duration": self.duration,
            "command": self.command,
        }


@dataclass(frozen=True)
class ProcessResult:
    """What :func:`process_data` did: the step id, how it ended, its output record."""

    step_id: str
    status: str
    returncode: int | None
    output: str
    record: DatasetRecord | None = None
    log: str = ""

    @property
    def ok(self) -> bool:
        """True when the script succeeded and its output is in place."""
        return self.status == "completed"

    def last_line(self) -> str:
        """The last non-empty line of the output (the exception of a traceback)."""
        lines = [line for line in self.log.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit code {self.returncode}"


# ---------------------------------------------------------------- mlbook data process


def _inside_area(project: Project, path: Path, area: str, what: str) -> Path:
    absolute = Path(os.path.abspath(path if path.is_absolute() else project.root / path))
    base = project.area_dir(area)  # type: ignore[arg-type]
    if not absolute.is_relative_to(base) or absolute == base:
        raise DatasetError(
            f"{what} {path}: must lie inside {project.area_name(area)}/ "  # type: ignore[arg-type]
            f"(data processing may use only {project.area_name('datasets')}/ and "
            f"{project.area_name('data_processing')}/)"
        )
    return absolute


def process_data(
    project: Project,
    script: Path | str,
    inputs: Sequence[Path | str],
    output: Path | str,
    args: Sequence[str] = (),
    *,
    echo: Callable[[str], None] | None = None,
    python: str | None = None,
) -> ProcessResult:
    """Run a data-processing script as a recorded step (see the module docstring).

    Args:
        project: the project.
        script: a ``.py`` file inside ``Data_processing/``.
        inputs: input datasets (inside ``Datasets/``), passed as ``--in PATH`` each.
        output: the output dataset directory (inside ``Datasets/``), passed as ``--out TMP``.
        args: extra arguments for the script, before ``--in`` / ``--out`` (recorded as params).
        echo: called with each line the script prints (default: nothing shown).
        python: the interpreter (default: this one).

    Returns:
        the result; a failed script is ``status="failed"`` with its log, not an exception.

    Raises:
        DatasetError: a path outside its area, a missing script or input, a boundary
            violation in the script, or an output inside an input.
    """
    from mlbook.boundaries import check_files
    from mlbook.experiments.store import Store, finish_data_step, new_run_id, start_data_step
    from mlbook.provenance.datasets import Datasets
    from mlbook.provenance.files import import_closure

    script_path = _inside_area(project, Path(script), "data_processing", "script")
    if script_path.suffix != ".py" or not script_path.is_file():
        raise DatasetError(
            f"script {script}: no such Python file; give a .py file in Data_processing/"
        )
    input_paths = [_inside_area(project, Path(p), "datasets", "--in") for p in inputs]
    for path in input_paths:
        if not path.exists():
            raise DatasetError(f"--in {project.relative(path)}: no such dataset; check the path")
    out = _inside_area(project, Path(output), "datasets", "--out")
    for path in input_paths:
        if out.is_relative_to(path) or path.is_relative_to(out):
            raise DatasetError(
                f"--out {project.relative(out)} overlaps --in {project.relative(path)}; "
                "write the output to a dataset of its own"
            )
    closure = import_closure(script_path, [script_path.parent, project.data_processing_dir])
    local = sorted(p for p in closure if p.is_relative_to(project.data_processing_dir.resolve()))
    violations = check_files(project, "data_processing", local or [script_path])
    if violations:
        raise DatasetError(
            f"{violations[0]}; data processing may use only {project.area_name('datasets')}/ "
            f"and {project.area_name('data_processing')}/ (see `mlbook check`)"
        )
    step_id = "step-" + new_run_id()
    relative_script = project.relative(script_path)
    with Datasets(project) as datasets:
        in_records = [r for path in input_paths for r in datasets.identities(path)]
    commit, reason = _snapshot(project, step_id, relative_script)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.{step_id}.mlbook-step")
    work.mkdir()
    argv = [*args, *(a for p in input_paths for a in ("--in", str(p))), "--out", str(work)]
    with Store.for_project(project) as store:
        start_data_step(
            store,
            step_id,
            script=relative_script,
            target=project.relative(out),
            script_sha256=sha256_file(script_path),
            commit=commit,
            commit_reason=reason,
            params=list(args),
            inputs=in_records,
        )
        status, code, log = "failed", None, ""
        record = None
        out_records: list[DatasetRecord] = []
        try:
            code, log = _run_child(project, script_path, argv, echo, python)
            if code == 0:
                _swap(work, out)
                with Datasets(project) as datasets:
                    out_records = datasets.identities(out)
                record = out_records[0]
                status = "completed"
            else:
                status = "failed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
            kept = log[-OUTPUT_LIMIT:]
            finish_data_step(
                store,
                step_id,
                status=status,
                returncode=code,
                output=kept,
                outputs=out_records,
            )
    return ProcessResult(step_id, status, code, project.relative(out), record, log)


def _snapshot(project: Project, step_id: str, script: str) -> tuple[str | None, str | None]:
    """The commit of the code the step runs (a snapshot like a run's before commit)."""
    from mlbook.provenance.git import snapshot

    settings = project.config.git
    if settings.commits == "off":
        return None, '[git] commits = "off" in mlbook.toml'
    try:
        shot = snapshot(
            project.root,
            step_id,
            "before",
            f"[data] before {script}",
            settings.max_file_bytes,
            settings.commits,
            data_dir=None if settings.snapshot_data else project.area_name("datasets"),
        )
    except (MlbookError, OSError) as exc:
        return None, str(exc)
    return shot.commit, shot.reason or None


def _run_child(
    project: Project,
    script: Path,
    argv: list[str],
    echo: Callable[[str], None] | None,
    python: str | None,
) -> tuple[int, str]:
    """Run the script in its own process under the guard; (exit code, output)."""
    import json

    denied = [str(project.models_dir), str(project.deployment_dir)]
    areas = f"{project.area_name('datasets')}/ and {project.area_name('data_processing')}/"
    spec = json.dumps({"script": str(script), "argv": argv, "denied": denied, "areas": areas})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [python or sys.executable, "-m", "mlbook.provenance._step_child", spec],
        cwd=project.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if echo is not None:
                echo(line.rstrip("\n"))
        code = proc.wait()
    except BaseException:
        proc.stdout.close()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    proc.stdout.close()
    return code, "".join(lines)


def _swap(work: Path, out: Path) -> None:
    """Put ``work`` in place of ``out``; the old ``out`` is deleted only once the new is in."""
    if not out.exists():
        os.rename(work, out)
        return
    old = out.with_name(f".{out.name}.{secrets.token_hex(4)}.mlbook-old")
    os.rename(out, old)
    try:
        os.rename(work, out)
    except BaseException:
        os.rename(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


# ---------------------------------------------------------------- dvc.lock stages as steps

_SCRIPT = r"(?:^|[\s'\"=/])((?:\./)?{area}/[^\s'\";|&]+\.py)"


def _stage_script(project: Project, command: str, base: str) -> str:
    """The root-relative ``Data_processing/`` script a stage command runs ('' when none)."""
    area = re.escape(project.area_name("data_processing"))
    found = re.search(_SCRIPT.format(area=area), command)
    if found is None:
        return ""
    joined = os.path.normpath(os.path.join(base, found[1]))
    return Path(joined).as_posix()


def _lock_commit(project: Project, lock: str) -> str | None:
    """The commit that last changed ``lock`` (``None`` without git or history)."""
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", lock],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def dvc_steps(project: Project) -> list[Step]:
    """Every ``dvc.lock`` stage whose command runs a ``Data_processing/`` script, as a step.

    Raises:
        DvcFileError: a malformed ``dvc.lock`` or ``dvc.yaml``.
    """
    from mlbook.provenance.dvc import find_dvc_files, read_dvc_lock, read_dvc_yaml

    _, locks = find_dvc_files(project.datasets_dir, project.root)
    processing = project.data_processing_dir / "dvc.lock"
    if processing.is_file():
        locks.append(processing)
    steps = []
    for lock in locks:
        yaml_file = lock.with_name("dvc.yaml")
        yaml_stages = read_dvc_yaml(yaml_file, project.root) if yaml_file.is_file() else []
        wdirs = {s.name: s.wdir for s in yaml_stages}
        relative = project.relative(lock)
        commit: str | None = None
        for stage in read_dvc_lock(lock, project.root, wdirs):
            step = _stage_step(project, stage, relative, wdirs)
            if step is None:
                continue
            if commit is None:
                commit = _lock_commit(project, relative) or ""
            steps.append(_with_commit(step, commit or None))
    return steps


def _with_commit(step: Step, commit: str | None) -> Step:
    from dataclasses import replace

    return replace(step, commit=commit)


def _stage_step(project: Project, stage: DvcStage, lock: str, wdirs: dict[str, str]) -> Step | None:
    base = Path(lock).parent.as_posix()
    base = os.path.normpath(os.path.join(base, wdirs.get(stage.name, ".")))
    script = _stage_script(project, stage.cmd, "" if base == "." else base)
    if not script:
        return None
    script_dep = next((d for d in stage.deps if d.path == script), None)
    inputs = tuple((d.path, f"md5:{d.md5}") for d in stage.deps if d.path != script and d.md5)
    outputs = tuple((o.path, f"md5:{o.md5}") for o in stage.outs if o.md5)
    return Step(
        kind="dvc",
        id=f"{lock}:{stage.name}",
        script=script,
        script_hash=f"md5:{script_dep.md5}" if script_dep and script_dep.md5 else "",
        commit=None,
        params=dict(stage.params),
        inputs=inputs,
        outputs=outputs,
        command=stage.cmd,
    )


def pipeline_warnings(project: Project) -> list[str]:
    """One line per ``dvc.yaml`` stage that runs a ``Data_processing/`` script not in its deps.

    Raises:
        DvcFileError: a malformed ``dvc.yaml``.
    """
    from mlbook.provenance.dvc import read_dvc_yaml

    found = []
    candidates = [project.root / "dvc.yaml", project.data_processing_dir / "dvc.yaml"]
    candidates += sorted(project.datasets_dir.glob("**/dvc.yaml"))
    for path in dict.fromkeys(c for c in candidates if c.is_file()):
        for stage in read_dvc_yaml(path, project.root):
            base = Path(stage.source).parent.as_posix()
            base = os.path.normpath(os.path.join(base, stage.wdir))
            script = _stage_script(project, stage.cmd, "" if base == "." else base)
            if script and script not in stage.deps:
                found.append(
                    f"{stage.source}: stage {stage.name} runs {script}, which is not among its "
                    "deps; DVC cannot see changes to it: add it to the stage's deps"
                )
    return found


def _process_step(step: DataStep) -> Step:
    return Step(
        kind="process",
        id=step.id,
        script=step.script,
        script_hash=f"sha256:{step.script_sha256}",
        commit=step.commit_before,
        params=step.params,
        inputs=tuple((d.path, d.hash) for d in step.inputs),
        outputs=tuple((d.path, d.hash) for d in step.outputs),
        status=step.status,
        duration=step.duration,
    )


# ---------------------------------------------------------------- lineage of a dataset


@dataclass
class DatasetVersion:
    """One version (hash) of a dataset: the steps that made it and the runs that used it."""

    hash: str
    current: bool = False
    steps: list[Step] = field(default_factory=list)
    runs: list[RunDataset] = field(default_factory=list)
    upstream: list[Lineage] = field(default_factory=list)

    @property
    def short(self) -> str:
        """``md5:1a2b3c4d5e6f``."""
        kind, _, value = self.hash.partition(":")
        return f"{kind}:{value[:12]}"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {
            "hash": self.hash,
            "current": self.current,
            "steps": [s.to_dict() for s in self.steps],
            "runs": [{"run_id": r.run_id, "state": r.state} for r in self.runs],
            "upstream": [u.to_dict() for u in self.upstream],
        }


@dataclass
class Lineage:
    """The versions of one dataset, oldest first, and the failed steps that targeted it."""

    path: str
    versions: list[DatasetVersion] = field(default_factory=list)
    failed: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {
            "path": self.path,
            "versions": [v.to_dict() for v in self.versions],
            "failed": [s.to_dict() for s in self.failed],
            "warnings": self.warnings,
        }


class _Sources:
    """What lineage reads once: process steps, dvc.lock steps and run records."""

    def __init__(self, project: Project) -> None:
        from mlbook.experiments.query import data_steps, reading

        self.project = project
        with reading(project) as store:
            self.recorded = data_steps(store)
            self.store_path = store.path
        done = [_process_step(s) for s in self.recorded if s.status == "completed"]
        self.steps = done + dvc_steps(project)

    def failed(self, path: str) -> list[Step]:
        return [
            _process_step(s) for s in self.recorded if s.status != "completed" and s.target == path
        ]

    def runs(self, path: str) -> list[RunDataset]:
        from mlbook.experiments.query import dataset_runs

        return dataset_runs(self.store_path, path)


def lineage(project: Project, dataset: Path | str, depth: int = 4) -> Lineage:
    """The lineage of one dataset: every version with its steps and runs (see the module doc).

    Args:
        project: the project.
        dataset: the dataset path (root-relative or absolute).
        depth: how many levels of input datasets to follow upstream.

    Raises:
        DvcFileError: a malformed ``.dvc``, ``dvc.lock`` or ``dvc.yaml``.
    """
    sources = _Sources(project)
    found = _lineage(project, sources, dataset, depth, set())
    found.warnings = pipeline_warnings(project)
    return found


def _current(project: Project, path: str) -> str | None:
    from mlbook.provenance.datasets import Datasets

    with Datasets(project) as datasets:
        try:
            return datasets.identity(project.root / path).hash
        except DatasetError:
            return None


def _lineage(
    project: Project, sources: _Sources, dataset: Path | str, depth: int, seen: set[str]
) -> Lineage:
    path = Path(dataset)
    relative = project.relative(path if path.is_absolute() else project.root / path)
    seen = seen | {relative}
    result = Lineage(relative)
    versions: dict[str, DatasetVersion] = {}

    def version(value: str) -> DatasetVersion:
        if value not in versions:
            versions[value] = DatasetVersion(value)
        return versions[value]

    runs = sources.runs(relative)
    now = _current(project, relative)
    known = {r.hash for r in runs} | ({now} if now else set())
    for step in sources.steps:
        made = [h for p, h in step.outputs if p == relative]
        # a step records its output's content hash and DVC's md5: show the one in use
        for value in [h for h in made if h in known] or made[:1]:
            version(value).steps.append(step)
    result.failed = sources.failed(relative)
    for record in runs:
        version(record.hash).runs.append(record)
    if now is not None:
        version(now).current = True
    if depth > 0:
        for item in versions.values():
            for step in item.steps:
                for input_path in dict.fromkeys(p for p, _ in step.inputs):
                    if input_path not in seen:
                        item.upstream.append(
                            _lineage(project, sources, input_path, depth - 1, seen)
                        )
    result.versions = list(versions.values())
    return result


# ---------------------------------------------------------------- the data of one run


@dataclass(frozen=True)
class RunData:
    """A dataset a run used, the steps that made that version, and its hash now."""

    record: RunDataset
    steps: tuple[Step, ...]
    now: str | None

    @property
    def changed(self) -> bool:
        """True when the dataset is no longer what the run used (stale data)."""
        return self.now != self.record.hash

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {
            **self.record.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "now": self.now,
            "changed": self.changed,
        }


def run_data(project: Project, run_id: str, *, compare: bool = True) -> list[RunData]:
    """The datasets of a run with the steps behind each version (``mlbook show``).

    Args:
        compare: also hash each dataset now, to say whether it changed since.

    Raises:
        DvcFileError: a malformed ``dvc.lock`` or ``dvc.yaml``.
    """
    from mlbook.experiments.query import run_datasets

    records = run_datasets(project, run_id)
    if not records:
        return []
    sources = _Sources(project)
    found = []
    for record in records:
        steps = tuple(s for s in sources.steps if (record.path, record.hash) in s.outputs)
        found.append(
            RunData(record, steps, _current(project, record.path) if compare else record.hash)
        )
    return found


@dataclass(frozen=True)
class DataChange:
    """A dataset whose version differs between two runs, or since a run (``b`` is ``None``)."""

    path: str
    a: str | None
    b: str | None
    state_a: str = ""
    state_b: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {
            "path": self.path,
            "a": self.a,
            "b": self.b,
            "state_a": self.state_a,
            "state_b": self.state_b,
        }


def compare_data(project: Project, run_a: str, run_b: str | None = None) -> list[DataChange]:
    """Datasets that differ between two runs (``run_b=None``: between run ``a`` and now)."""
    from mlbook.experiments.query import run_datasets

    left = {r.path: r for r in run_datasets(project, run_a)}
    if run_b is not None:
        right = {r.path: r for r in run_datasets(project, run_b)}
        changes = []
        for path in sorted(set(left) | set(right)):
            a, b = left.get(path), right.get(path)
            if a is None or b is None or a.hash != b.hash:
                changes.append(
                    DataChange(
                        path,
                        a.hash if a else None,
                        b.hash if b else None,
                        a.state if a else "",
                        b.state if b else "",
                    )
                )
        return changes
    found = []
    for path, record in sorted(left.items()):
        now = _current(project, path)
        if now != record.hash:
            found.append(DataChange(path, record.hash, now, record.state, "now"))
    return found
