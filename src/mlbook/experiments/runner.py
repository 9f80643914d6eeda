"""The runner: plans versions, runs each in its own process, records what happens.

:func:`run_experiments` is what ``mlbook run`` calls. For each selected
experiment and version it creates a run in the store (``run`` and ``export``
modes; ``test`` mode records nothing and uses a temporary directory), submits a
job to the backend, writes the events the child streams back, and ends the run
``completed``, ``failed`` (traceback or signal stored) or ``interrupted``. A
failing version never stops the next one; Ctrl-C stops the current ones and
starts no more.

Provenance and the journal plug in through :class:`RunObserver`: observers get
``before_run`` / ``after_run`` (and ``experiment_created`` from ``mlbook new``).
Register a factory in :data:`OBSERVER_FACTORIES`.
"""

from __future__ import annotations

import importlib
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlbook.errors import ExperimentError
from mlbook.experiments.backends import Backend, Job, get_backend
from mlbook.experiments.discovery import read_script, select_scripts, select_versions
from mlbook.experiments.store import Store, new_run_id

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = [
    "OBSERVER_FACTORIES",
    "Mode",
    "RunInfo",
    "RunListener",
    "RunObserver",
    "RunnerResult",
    "default_observers",
    "run_experiments",
]

Mode = Literal["test", "run", "export"]
MODES: tuple[str, ...] = ("test", "run", "export")
INTERRUPT_GRACE_SECONDS = 10.0

#: "module:callable" factories called with the project, each returning a RunObserver.
#: Provenance (git snapshots) and the journal register themselves here.
OBSERVER_FACTORIES: list[str] = ["mlbook.provenance.observer:observer"]


@dataclass
class RunInfo:
    """One version's run as the runner sees it (handed to observers and listeners)."""

    run_id: str
    experiment: str
    version: str
    mode: str
    params: dict[str, Any]
    dir: Path
    script: Path
    project: Project
    dataset_dir: Path | None = None
    pk: int = 0
    pid: int = 0
    status: str = "running"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    step: int = 0
    total: int | None = None
    latest: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    ended: float | None = None
    files: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it ended)."""
        return (self.ended or time.time()) - self.started


class RunObserver:
    """Hooks around each run; the default does nothing. Subclass and override.

    ``store`` is ``None`` in test mode. Exceptions raised by an observer are
    turned into warnings: a failed side channel never loses a run. Only
    :meth:`preflight` may refuse, before any run starts.
    """

    def preflight(self, mode: str) -> None:
        """Called once before any run starts; raise an ``MlbookError`` to refuse them all."""

    def before_run(self, info: RunInfo, store: Store | None) -> None:
        """Called after the run is created in the store, before its process starts."""

    def after_run(self, info: RunInfo, store: Store | None) -> None:
        """Called after the run ended and its final status, metrics and files are stored."""

    def experiment_created(self, project: Project, ident: str, title: str, path: Path) -> None:
        """Called by ``mlbook new`` after it wrote the script at ``path``."""


def default_observers(project: Project) -> list[RunObserver]:
    """Instantiate every factory registered in :data:`OBSERVER_FACTORIES`."""
    observers: list[RunObserver] = []
    for target in OBSERVER_FACTORIES:
        module, _, name = target.partition(":")
        factory = getattr(importlib.import_module(module), name)
        observers.append(factory(project))
    return observers


_STAGES = {"before_run": "before the run", "after_run": "after the run"}


def notify(observers: Sequence[RunObserver], method: str, *args: Any) -> None:
    """Call ``method`` on each observer, turning their errors into warnings."""
    for observer in observers:
        try:
            getattr(observer, method)(*args)
        except Exception as exc:
            from mlbook.errors import MlbookWarning

            what = _STAGES.get(method, method)
            warnings.warn(f"{what}: {exc}", MlbookWarning, stacklevel=2)


class RunListener(Protocol):
    """Live progress for a terminal (the CLI passes a rich one)."""

    def run_started(self, info: RunInfo) -> None: ...
    def run_progress(self, info: RunInfo) -> None: ...
    def run_finished(self, info: RunInfo) -> None: ...


class _NullListener:
    def run_started(self, info: RunInfo) -> None:
        pass

    def run_progress(self, info: RunInfo) -> None:
        pass

    def run_finished(self, info: RunInfo) -> None:
        pass


@dataclass
class RunnerResult:
    """What a call to :func:`run_experiments` did: one :class:`RunInfo` per version."""

    runs: list[RunInfo]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when every run completed."""
        return not self.interrupted and all(r.status == "completed" for r in self.runs)

    @property
    def exit_code(self) -> int:
        """0 all completed, 130 interrupted, 1 otherwise."""
        return 130 if self.interrupted else (0 if self.ok else 1)


@dataclass
class _Planned:
    ident: str
    title: str
    script: Path
    version: str
    params: dict[str, Any]
    dataset: str | None
    resume_from: str | None = None
    resume_dir: Path | None = None


def plan(
    project: Project,
    ids: Sequence[str] = (),
    versions: Sequence[str] = (),
    skip_versions: Sequence[str] = (),
) -> list[_Planned]:
    """The (experiment, version) pairs a run would execute, in order.

    Scripts are read without being imported here (:func:`read_script`).
    """
    planned: list[_Planned] = []
    for script in select_scripts(project, list(ids)):
        script_plan = read_script(project, script)
        where = project.relative(script.path)
        for version in select_versions(script_plan, list(versions), list(skip_versions), where):
            planned.append(
                _Planned(
                    ident=script.id,
                    title=script_plan.title,
                    script=script.path,
                    version=version,
                    params=script_plan.params(version),
                    dataset=script_plan.dataset,
                )
            )
    return planned


def run_experiments(
    project: Project,
    ids: Sequence[str] = (),
    *,
    versions: Sequence[str] = (),
    skip_versions: Sequence[str] = (),
    mode: str = "run",
    jobs: int | None = None,
    resume: str | None = None,
    test_steps: int | None = None,
    observers: Sequence[RunObserver] | None = None,
    listener: RunListener | None = None,
    backend: Backend | None = None,
) -> RunnerResult:
    """Run the selected versions of the selected experiments.

    Args:
        ids: experiment IDs in order (default: the config's include/exclude lists).
        versions: only these versions (default: all); ``skip_versions``: not these.
        mode: ``test`` (temporary outputs, nothing recorded, loops cut short),
            ``run`` or ``export``.
        jobs: versions run at once (default: ``[runner] jobs``).
        resume: a run ID to continue (its experiment and version; the new run
            can read the old one's checkpoints via ``run.load_checkpoint()``).
        test_steps: steps ``run.iterate`` yields in test mode (default: config).
        observers: run hooks (default: :func:`default_observers`).
        listener: live progress (default: none).
        backend: where jobs run (default: ``[runner] backend``).

    Raises:
        ExperimentError: unknown experiment, version, mode or run to resume.
    """
    if mode not in MODES:
        raise ExperimentError(f"unknown mode {mode!r}; use one of: {', '.join(MODES)}")
    settings = project.config
    jobs = jobs or settings.runner.jobs
    if jobs < 1:
        raise ExperimentError(f"--jobs must be at least 1, got {jobs}")
    steps = test_steps or settings.experiments.test_steps
    store = Store.for_project(project) if mode != "test" else None
    try:
        if resume:
            planned = [_plan_resume(project, store, resume)]
        else:
            planned = plan(project, ids, versions, skip_versions)
        chosen = default_observers(project) if observers is None else list(observers)
        for observer in chosen:
            preflight = getattr(observer, "preflight", None)
            if preflight is not None:
                preflight(mode)
        runner = _Runner(
            project,
            store,
            mode,
            jobs,
            steps,
            chosen,
            listener or _NullListener(),
            backend or get_backend(settings.runner.backend),
        )
        return runner.run(planned)
    finally:
        if store is not None:
            store.close()


def _plan_resume(project: Project, store: Store | None, run_id: str) -> _Planned:
    if store is None:
        raise ExperimentError("--resume needs the run store; it cannot be used in test mode")
    from mlbook.experiments.query import get_run

    try:
        old = get_run(store, run_id)
    except ExperimentError:
        raise ExperimentError(f"no run {run_id!r} to resume; see `mlbook runs`") from None
    planned = plan(project, [old.experiment], [old.version])
    planned[0].resume_from = old.id
    planned[0].resume_dir = project.root / old.outputs if old.outputs else None
    return planned[0]


class _Runner:
    def __init__(
        self,
        project: Project,
        store: Store | None,
        mode: str,
        jobs: int,
        test_steps: int,
        observers: list[RunObserver],
        listener: RunListener,
        backend: Backend,
    ) -> None:
        self.project = project
        self.store = store
        self.mode = mode
        self.jobs = jobs
        self.test_steps = test_steps
        self.observers = observers
        self.listener = listener
        self.backend = backend
        self.active: dict[int, RunInfo] = {}
        self.stopping = False
        self.stop_deadline = 0.0
        self.temp_root: Path | None = None

    def run(self, planned: list[_Planned]) -> RunnerResult:
        done: list[RunInfo] = []
        pending = list(enumerate(planned))
        previous = self._install_sigint()
        try:
            while (pending and not self.stopping) or self.active:
                while pending and len(self.active) < self.jobs and not self.stopping:
                    key, item = pending.pop(0)
                    info = self._start(key, item)
                    if info.status == "running":
                        self.active[key] = info
                    else:
                        done.append(self._finish(info))
                for key, event in self.backend.events(0.1):
                    current = self.active.get(key)
                    if current is not None and self._handle(current, event):
                        done.append(self._finish(self.active.pop(key)))
                if self.stopping and time.monotonic() > self.stop_deadline:
                    for key in self.active:
                        self.backend.kill(key)
        finally:
            self._restore_sigint(previous)
            if self.temp_root is not None:
                shutil.rmtree(self.temp_root, ignore_errors=True)
        return RunnerResult(runs=done, interrupted=self.stopping)

    # -- Ctrl-C --------------------------------------------------------------------

    def _install_sigint(self) -> Any:
        if not _main_thread():
            return None
        return signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_sigint(self, previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stopping:  # second Ctrl-C: no more waiting
            self.stop_deadline = 0.0
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
        for key in self.active:
            self.backend.interrupt(key)

    # -- one run ---------------------------------------------------------------------

    def _start(self, key: int, item: _Planned) -> RunInfo:
        if self.store is not None:
            run_id = new_run_id()
            out_dir = self.project.outputs_dir / item.ident / item.version / run_id
            self.store.ensure_experiment(item.ident, self.project.relative(item.script), item.title)
            pk, run_id = self.store.create_run(
                experiment=item.ident,
                version=item.version,
                mode=self.mode,
                params=item.params,
                outputs=self.project.relative(out_dir),
                run_id=run_id,
                resumed_from=item.resume_from,
            )
        else:
            if self.temp_root is None:
                self.temp_root = Path(tempfile.mkdtemp(prefix="mlbook-test-"))
            pk, run_id = 0, f"test-{key}"
            out_dir = self.temp_root / item.ident / item.version
        info = RunInfo(
            run_id=run_id,
            experiment=item.ident,
            version=item.version,
            mode=self.mode,
            params=item.params,
            dir=out_dir,
            script=item.script,
            project=self.project,
            dataset_dir=self.project.datasets_dir / item.dataset if item.dataset else None,
            pk=pk,
        )
        notify(self.observers, "before_run", info, self.store)
        spec = {
            "script": str(item.script),
            "models_dir": str(self.project.models_dir),
            "project_root": str(self.project.root),
            "run_id": run_id,
            "run_pk": pk,
            "experiment": item.ident,
            "version": item.version,
            "mode": self.mode,
            "dir": str(out_dir),
            "dataset_dir": str(info.dataset_dir) if info.dataset_dir else None,
            "resume_dir": str(item.resume_dir) if item.resume_dir else None,
            "source_weights": self._source_weights(item) if self.mode == "export" else None,
            "test_steps": self.test_steps,
        }
        log_path = out_dir / "output.log"
        try:
            info.pid = self.backend.submit(Job(key=key, spec=spec, log_path=log_path))
        except OSError as exc:
            info.status, info.error = "failed", f"could not start the child process: {exc}"
        if self.store is not None and info.pid:
            self.store.set_pid(run_id, info.pid)
        self.listener.run_started(info)
        return info

    def _source_weights(self, item: _Planned) -> str | None:
        assert self.store is not None
        row = self.store.db.execute(
            "SELECT weights FROM runs WHERE experiment = ? AND version = ? AND mode = 'run' "
            "AND status = 'completed' AND weights IS NOT NULL ORDER BY created DESC LIMIT 1",
            (item.ident, item.version),
        ).fetchone()
        return str(self.project.root / row[0]) if row else None

    def _handle(self, info: RunInfo, event: list[Any]) -> bool:
        """Apply one event; True when the run has ended."""
        kind = event[0]
        if kind == "metrics":
            rows = event[1]
            if self.store is not None:
                self.store.add_metrics(rows)
            info.step = max(info.step, rows[-1][2])
            for row in rows[-8:]:
                info.latest[row[1]] = row[3]
            self.listener.run_progress(info)
        elif kind == "progress":
            info.step, info.total = event[1], event[2]
            self.listener.run_progress(info)
        elif kind == "artifact":
            _, path, size, digest, artifact_kind = event
            if self.store is not None:
                rel = self.project.relative(path)
                self.store.add_artifact(info.run_id, rel, size, digest, artifact_kind)
        elif kind == "files":
            self._record_files(info, event[1], event[2] if len(event) > 2 else [])
        elif kind == "end":
            _, info.status, info.metrics, info.error = event
        elif kind == "exit":
            _, code, signal_name = event
            if info.error is None and info.status == "running":
                info.status = "failed"
                info.error = (
                    f"the child process was killed by {signal_name}"
                    if signal_name
                    else f"the child process exited with code {code} without reporting"
                ) + _log_tail(info.dir / "output.log")
            if self.stopping and info.status != "completed":
                info.status = "interrupted"
                info.error = info.error or "interrupted (Ctrl-C)"
            return True
        return False

    def _record_files(self, info: RunInfo, module_files: list[str], modules: list[str]) -> None:
        """Store the files a run used (loaded modules + static walk) and its package versions."""
        from mlbook.provenance.files import package_versions, used_files

        used = used_files(
            self.project.root, module_files, info.script, search_path=[self.project.models_dir]
        )
        info.files = [f.path for f in used]
        if self.store is not None:
            self.store.add_files(info.run_id, [(f.path, f.size, f.sha256) for f in used])
            if modules:
                self.store.set_provenance(info.run_id, packages=package_versions(modules))

    def _finish(self, info: RunInfo) -> RunInfo:
        info.ended = time.time()
        if self.store is not None:
            self.store.finish_run(info.run_id, info.status, info.metrics, info.error)
        notify(self.observers, "after_run", info, self.store)
        self.listener.run_finished(info)
        return info


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    tail = text.rstrip().splitlines()[-lines:]
    return ("\nlast output:\n" + "\n".join(tail)) if tail else ""


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def new_experiment(
    project: Project,
    ident: str,
    title: str,
    *,
    name: str | None = None,
    observers: Sequence[RunObserver] | None = None,
) -> Path:
    """Write ``Models/<ident>_<name>.py`` from the template; tell observers (the journal).

    ``name`` defaults to the title in snake case.

    Raises:
        ExperimentError: a bad ID, or the ID is taken.
    """
    import re
    from importlib.resources import files

    from mlbook._fs import atomic_write_text
    from mlbook.experiments.discovery import find_scripts

    pattern = project.config.experiments.id_pattern
    if not re.fullmatch(pattern, ident):
        raise ExperimentError(
            f"experiment ID {ident!r} does not match [experiments] id_pattern {pattern!r} "
            "(e.g. E013)"
        )
    taken = {s.id: s for s in find_scripts(project)}
    if ident in taken:
        raise ExperimentError(
            f"experiment {ident} exists: {project.relative(taken[ident].path)}; pick another ID"
        )
    slug = name or re.sub(r"[^0-9a-zA-Z]+", "_", title).strip("_").lower() or "experiment"
    path = project.models_dir / f"{ident}_{slug}.py"
    template = files("mlbook.templates").joinpath("experiment.py.txt").read_text(encoding="utf-8")
    text = template.replace("{id}", ident).replace("{title}", title.replace('"', "'"))
    atomic_write_text(path, text)
    notify(
        default_observers(project) if observers is None else observers,
        "experiment_created",
        project,
        ident,
        title,
        path,
    )
    return path
