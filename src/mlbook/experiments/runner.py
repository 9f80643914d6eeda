"""The runner: plans versions, runs each in its own process, records what happens.

:func:`run_experiments` is what ``mlbook run`` calls. For each selected
experiment and version it creates a run in the store (``run`` and ``export``
modes; ``test`` mode records nothing and uses a temporary directory), submits a
job to the backend, writes the events the child streams back, and ends the run
``completed``, ``failed`` (traceback or signal stored) or ``interrupted``. A
failing version never stops the next one; Ctrl-C stops the current ones and
starts no more.

The runner is the store's only writer for its runs. Events from a child (see
:mod:`mlbook.experiments.contract`) are applied in order: the metric batches
that one read brings are committed in one transaction (with the attempt's last
sequence number, so a repeated event is dropped), and only then are the
child's flushes acknowledged. A store write that fails (a full disk) fails that
run with the reason and stops its child; Ctrl-C and SIGTERM end runs
``interrupted``; processes a finished child left behind are stopped, with a
warning.

Provenance and the journal plug in through :class:`RunObserver`: observers get
``before_run`` / ``after_run`` (and ``experiment_created`` from ``mlbook new``).
"""

from __future__ import annotations

import platform
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlbook.errors import ExperimentError, MlbookError, MlbookWarning, StoreError
from mlbook.experiments import _spare
from mlbook.experiments.backends import (
    Backend,
    Job,
    LocalBackend,
    get_backend,
    stop_process_group,
)
from mlbook.experiments.contract import (
    Artifact,
    Attempt,
    End,
    Event,
    Exit,
    Files,
    Flush,
    Metrics,
    Params,
    Progress,
    RunSpec,
    ViewUsed,
    Warn,
)
from mlbook.experiments.discovery import read_script, select_scripts, select_versions
from mlbook.experiments.series import Chunk, pack_series
from mlbook.experiments.store import Store, new_run_id

if TYPE_CHECKING:
    from mlbook.experiments.discovery import Script
    from mlbook.experiments.plans import ScriptPlan
    from mlbook.project import Project

__all__ = [
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
STORE_FAILURE_GRACE_SECONDS = 2.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    attempt: int = 1
    last_seq: int = 0
    title: str = ""

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it ended)."""
        return (self.ended or time.time()) - self.started


class RunObserver(Protocol):
    """Hooks around each run (provenance and the journal are one).

    ``store`` is ``None`` in test mode. Exceptions an observer raises become
    warnings: a failed side channel never loses a run. Only :meth:`preflight`
    may refuse, before any run starts. The methods have no-op bodies, so a class
    that names this protocol as its base overrides only what it needs.
    """

    def preflight(self, mode: str) -> None:
        """Called once before any run starts; raise an ``MlbookError`` to refuse them all."""

    def before_run(self, info: RunInfo, store: Store | None) -> None:
        """Called after the run is created in the store: while its process starts up
        (the local backend), or before it is submitted (a backend that ships the
        before commit)."""

    def after_run(self, info: RunInfo, store: Store | None) -> None:
        """Called after the run ended and its final status, metrics and files are stored."""

    def experiment_created(self, project: Project, ident: str, title: str, path: Path) -> None:
        """Called by ``mlbook new`` after it wrote the script at ``path``."""


def default_observers(project: Project) -> list[RunObserver]:
    """The observers every run gets: provenance (git snapshots, data version) and the journal."""
    from mlbook.provenance.observer import ProvenanceObserver

    return [ProvenanceObserver(project)]


def _side_channel(stage: str, call: Callable[[], object]) -> None:
    """Run an observer hook; its failure is one warning, never a lost run."""
    try:
        call()
    except Exception as exc:
        warnings.warn(f"{stage}: {exc}", MlbookWarning, stacklevel=3)


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

    stop_signal: int | None = None

    @property
    def exit_code(self) -> int:
        """0 all completed, 128 + the signal when stopped (130 Ctrl-C, 143 SIGTERM), 1 otherwise."""
        if self.interrupted:
            return 128 + (self.stop_signal or signal.SIGINT)
        return 0 if self.ok else 1


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
    #: an Experiment script: the version ``overrides`` change; None: no overrides
    base_version: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    #: a plain script's arguments (None: an Experiment script)
    argv: list[str] | None = None
    output_metrics: bool = False
    output_patterns: tuple[str, ...] = ()
    seed: int | None = None


def plan(
    project: Project,
    ids: Sequence[str] = (),
    versions: Sequence[str] = (),
    skip_versions: Sequence[str] = (),
    *,
    mode: str = "run",
    sets: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
) -> list[_Planned]:
    """The (experiment, version) pairs a run would execute, in order.

    Scripts are read without being imported here (:func:`read_script`).
    ``sets`` (``--set``) change every selected version; ``grid`` (``--grid``)
    crosses each with its values; in test mode the ``[experiments.<ID>] test``
    params are added. Each version's seed is its ``seed`` param, else
    ``[experiments] seed`` (added to an ``Experiment`` version's params, so the
    run records it; a plain script is seeded without a new option).

    Raises:
        ExperimentError: a ``seed`` param that is not an int in range.
    """
    from mlbook.experiments.seeds import run_seed

    default_seed = project.config.experiments.seed
    planned: list[_Planned] = []
    for script in select_scripts(project, list(ids)):
        script_plan = read_script(project, script)
        where = project.relative(script.path)
        for version in select_versions(script_plan, list(versions), list(skip_versions), where):
            expanded = script_plan.expand(version, sets, grid, test=mode == "test", where=where)
            for name, params, overrides in expanded:
                seed = run_seed(params, default_seed, f"{where} version {name}")
                if seed is not None and script_plan.kind != "plain":
                    params.setdefault("seed", seed)
                item = _planned(project, script, script_plan, name, params, overrides)
                item.base_version = version if overrides else None
                item.seed = seed
                planned.append(item)
    return planned


def _planned(
    project: Project,
    script: Script,
    script_plan: ScriptPlan,
    version: str,
    params: dict[str, Any],
    overrides: dict[str, Any],
) -> _Planned:
    settings = project.config.experiments
    table = settings.script(script.id)
    plain = script_plan.kind == "plain"
    where = project.relative(script.path)
    output = table.output_metrics
    patterns = table.output_patterns
    return _Planned(
        ident=script.id,
        title=script_plan.title,
        script=script.path,
        version=version,
        params=params,
        dataset=script_plan.dataset,
        overrides=overrides,
        argv=script_plan.command_line(params, where) if plain else None,
        output_metrics=(settings.output_metrics and plain) if output is None else output,
        output_patterns=tuple(settings.output_patterns if patterns is None else patterns),
    )


def run_experiments(
    project: Project,
    ids: Sequence[str] = (),
    *,
    versions: Sequence[str] = (),
    skip_versions: Sequence[str] = (),
    mode: str = "run",
    jobs: int | None = None,
    resume: str | None = None,
    test_steps: int | Sequence[int] | None = None,
    sets: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    observers: Sequence[RunObserver] | None = None,
    listener: RunListener | None = None,
    backend: Backend | str | None = None,
    address: str | None = None,
    strict_data: bool = False,
) -> RunnerResult:
    """Run the selected versions of the selected experiments.

    Args:
        ids: experiment IDs in order (default: the config's include/exclude lists).
        versions: only these versions (default: all); ``skip_versions``: not these.
        mode: ``test`` (temporary outputs, nothing recorded, loops cut short),
            ``run`` or ``export``.
        jobs: versions run at once (default: ``[runner] jobs``; with a backend that
            queues jobs itself, such as Ray, all of them: the cluster decides).
        resume: a run ID to continue (its experiment, version and params; the new
            run can read the old one's checkpoints via ``run.load_checkpoint()``).
        test_steps: steps ``run.iterate`` yields in test mode (default: config); a
            sequence gives nested loops their own counts (``(3, 2)``: 3 epochs of
            2 batches; the last count repeats for deeper loops).
        sets: param -> value for every selected version (``--set lr=0.1``); text is
            read as the kind of the current value. An unknown key is refused.
        grid: param -> values: each version is crossed with them (``--grid``).
        observers: run hooks (default: :func:`default_observers`).
        listener: live progress (default: none).
        backend: where jobs run: a backend, or its name (``local``, ``ray``);
            default ``[runner] backend``. A backend made here is closed at the end.
        address: the Ray cluster for the ``ray`` backend (default ``[ray] address``;
            none: a local Ray head for this call).
        strict_data: refuse to start when a run's dataset differs from what DVC
            recorded (``mlbook run --strict``).

    Raises:
        ExperimentError: unknown experiment, version, mode or run to resume.
        DatasetError: ``strict_data`` and a dirty dataset.
    """
    if mode not in MODES:
        raise ExperimentError(f"unknown mode {mode!r}; use one of: {', '.join(MODES)}")
    settings = project.config
    jobs = jobs or None  # 0: the default, as before
    if jobs is not None and jobs < 1:
        raise ExperimentError(f"--jobs must be at least 1, got {jobs}")
    counts = _steps(test_steps, settings.experiments.test_steps)
    owned: Backend | None = None
    store: Store | None = None
    try:
        store = Store.for_project(project) if mode != "test" else None
        if resume:
            if sets or grid:
                raise ExperimentError("--resume runs with the old run's params; drop --set/--grid")
            planned = [_plan_resume(project, store, resume)]
        else:
            planned = plan(project, ids, versions, skip_versions, mode=mode, sets=sets, grid=grid)
        if planned and (backend or settings.runner.backend) == "local":
            # its first child starts up (Python, mlbook) while the runner checks the
            # data, asks the observers and creates the run (the plan, read statically,
            # is cheap and gives the first version's seed: the child's hash seed)
            owned = backend = LocalBackend()
            backend.start_spare(planned[0].seed)
        else:
            _spare.discard()  # `mlbook run` started one for nothing
        if planned:
            _spare.remember(project.root, ids, planned[0].seed)  # the next prestart's guess
        if strict_data:
            from mlbook.provenance.datasets import refuse_dirty_datasets

            refuse_dirty_datasets(
                project, (project.datasets_dir / p.dataset if p.dataset else None for p in planned)
            )
        chosen = default_observers(project) if observers is None else list(observers)
        for observer in chosen:
            observer.preflight(mode)
        if backend is None or isinstance(backend, str):
            owned = backend = get_backend(backend or settings.runner.backend, project, address)
        if jobs is None:  # a backend that queues jobs itself (Ray) gets them all at once
            jobs = (len(planned) or 1) if backend.schedules else settings.runner.jobs
        runner = _Runner(
            project,
            store,
            mode,
            jobs,
            counts,
            chosen,
            listener or _NullListener(),
            backend,
        )
        return runner.run(planned)
    finally:
        if owned is not None:
            owned.close()
        if store is not None:
            store.close()


def _steps(given: int | Sequence[int] | None, default: int) -> tuple[int, ...]:
    """Test-mode step counts per loop level; every count at least 1."""
    counts = (given,) if isinstance(given, int) else tuple(given or ()) or (default,)
    if any(not isinstance(c, int) or c < 1 for c in counts):
        shown = ",".join(str(c) for c in counts)
        raise ExperimentError(f"--steps {shown}: expected whole numbers from 1 up, e.g. 2 or 3,2")
    return counts


def _plan_resume(project: Project, store: Store | None, run_id: str) -> _Planned:
    if store is None:
        raise ExperimentError("--resume needs the run store; it cannot be used in test mode")
    from mlbook.experiments.discovery import find_experiment
    from mlbook.experiments.query import get_run

    try:
        old = get_run(store, run_id)
    except ExperimentError:
        raise ExperimentError(f"no run {run_id!r} to resume; see `mlbook runs`") from None
    script = find_experiment(project, old.experiment)
    script_plan = read_script(project, script)
    # a version made by --grid (narrow-lr=0.1) starts from the script's version it was made of
    base_version = max(
        (v for v in script_plan.versions if old.version == v or old.version.startswith(v + "-")),
        key=len,
        default=None,
    )
    if base_version is None and len(script_plan.versions) == 1:
        base_version = next(iter(script_plan.versions))
    if base_version is None:
        where = project.relative(script.path)
        select_versions(script_plan, [old.version], where=where)  # unknown version: says so
    assert base_version is not None
    base = script_plan.params(base_version)
    known = {k: v for k, v in old.params.items() if k in base}
    overrides = {k: v for k, v in known.items() if not _same_json(base[k], v)}
    item = _planned(project, script, script_plan, old.version, {**base, **known}, overrides)
    item.base_version = base_version if overrides or base_version != old.version else None
    item.resume_from = old.id
    item.resume_dir = project.root / old.outputs if old.outputs else None
    return item


def _same_json(value: Any, stored: Any) -> bool:
    """True when ``value`` reads back from the store as ``stored`` (tuples become lists)."""
    import orjson

    from mlbook.experiments.store import _json

    try:
        return bool(orjson.loads(_json(value)) == stored)
    except (TypeError, ValueError):
        return False


class _Runner:
    def __init__(
        self,
        project: Project,
        store: Store | None,
        mode: str,
        jobs: int,
        test_steps: tuple[int, ...],
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
        self.stop_signal: int | None = None
        self.stop_deadline = 0.0
        self.temp_root: Path | None = None
        self.store_failed: dict[str, str] = {}
        self.kill_at: dict[int, float] = {}
        self.waiting = 0  # versions not started yet
        # runs finished when their child reported its end, with the end they had then
        self.finished_at_end: dict[str, tuple[str, str | None]] = {}

    def run(self, planned: list[_Planned]) -> RunnerResult:
        done: list[RunInfo] = []
        pending = list(enumerate(planned))
        previous = self._install_signals()
        try:
            ended: list[RunInfo] = []
            while (pending and not self.stopping) or self.active or ended:
                while pending and len(self.active) < self.jobs and not self.stopping:
                    key, item = pending.pop(0)
                    self.waiting = len(pending)
                    info = self._start(key, item)
                    if info.status == "running":
                        self.active[key] = info
                        if self.stopping:  # the stop signal came while it was starting
                            self.backend.interrupt(key)
                    else:
                        ended.append(info)
                # runs that ended are finished (after snapshot, journal) once the next
                # children are starting: their start-up hides that work
                done.extend(self._finish(info) for info in ended)
                ended = []
                if not self.active:  # nothing to wait for (the last run just finished)
                    continue
                for key, events in self.backend.events(0.1):
                    current = self.active.get(key)
                    if current is not None and self._apply(key, current, events):
                        ended.append(self.active.pop(key))
                now = time.monotonic()
                if self.stopping and now > self.stop_deadline:
                    for key in self.active:
                        self.backend.kill(key)
                for key, deadline in list(self.kill_at.items()):
                    if key not in self.active:
                        del self.kill_at[key]
                    elif now > deadline:
                        self.backend.kill(key)
        finally:
            self._restore_signals(previous)
            if self.temp_root is not None:
                shutil.rmtree(self.temp_root, ignore_errors=True)
        return RunnerResult(runs=done, interrupted=self.stopping, stop_signal=self.stop_signal)

    # -- Ctrl-C and SIGTERM --------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        if not _main_thread():
            return {}
        return {signum: signal.signal(signum, self._on_signal) for signum in _STOP_SIGNALS}

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping:  # a second Ctrl-C: no more waiting
            self.stop_deadline = 0.0
            return
        self.stopping = True
        self.stop_signal = signum
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
            title=item.title,
        )
        commit = None
        if self.backend.code_from_snapshot:  # the job ships the before commit: take it first
            self._before_run(info)
            commit = self._before_commit(info)
        spec = RunSpec(
            script=str(item.script),
            models_dir=str(self.project.models_dir),
            project_root=str(self.project.root),
            run_id=run_id,
            experiment=item.ident,
            version=item.version,
            mode=self.mode,
            dir=str(out_dir),
            dataset_dir=str(info.dataset_dir) if info.dataset_dir else None,
            resume_dir=str(item.resume_dir) if item.resume_dir else None,
            source_weights=self._source_weights(item) if self.mode == "export" else None,
            test_steps=self.test_steps[0],
            inner_steps=self.test_steps[1:],
            params=_spec_params(item),
            argv=item.argv,
            base_version=item.base_version,
            output_metrics=item.output_metrics,
            output_patterns=item.output_patterns,
            seed=item.seed,
            attempt=info.attempt,
        )
        job = Job(key=key, spec=spec, log_path=out_dir / "output.log", commit=commit)
        try:
            info.pid = self.backend.submit(job)
        except OSError as exc:
            info.status, info.error = "failed", f"could not start the child process: {exc}"
        except MlbookError as exc:  # a backend's refusal (a snapshot over its limit)
            info.status, info.error = "failed", str(exc)
        if self.store is not None and info.status == "running":
            try:
                info.last_seq = self.store.start_attempt(
                    pk, info.attempt, host=platform.node(), pid=info.pid
                )
            except StoreError as exc:
                self._store_failed(key, info, exc)
        if not self.backend.code_from_snapshot:
            # the child runs the working tree: snapshot it while the child starts up
            # (Python and its imports), so the snapshot costs the run no time
            self._before_run(info)
        self.listener.run_started(info)
        return info

    def _before_run(self, info: RunInfo) -> None:
        for observer in self.observers:
            _side_channel("before the run", partial(observer.before_run, info, self.store))

    def _before_commit(self, info: RunInfo) -> str | None:
        """The run's before commit as the store recorded it (None: none, or no store)."""
        if self.store is None:
            return None
        from mlbook.experiments.query import get_run

        try:
            return get_run(self.store, info.run_id).commit_before
        except MlbookError:
            return None

    def _source_weights(self, item: _Planned) -> str | None:
        from mlbook.experiments.query import latest_weights

        weights = latest_weights(self.store, item.ident, item.version)
        return str(self.project.root / weights) if weights else None

    def _apply(self, key: int, info: RunInfo, events: list[Event]) -> bool:
        """Apply one read's events: commit their metrics, then the rest in order.

        Returns True when the run has ended (its child exited).
        """
        if events and isinstance(events[0], Attempt):  # a remote attempt began
            self._attempt(key, info, events[0])
            events = events[1:]
        fresh: list[Event] = []
        top = info.last_seq
        for event in events:  # drop what was applied already (a resent or retried event)
            if isinstance(event, Exit | Attempt):
                fresh.append(event)
            elif event.seq > top:
                fresh.append(event)
                top = event.seq
        chunks: list[Chunk] = []
        for event in fresh:
            if isinstance(event, Metrics):
                for series in event.series:
                    chunk = pack_series(series.key, series.steps, series.values, series.times)
                    if chunk is not None:
                        chunks.append(chunk)
        writable = info.run_id not in self.store_failed
        if chunks and self.store is not None and writable:
            try:
                self.store.add_metrics(info.pk, chunks, attempt=info.attempt, seq=top)
            except StoreError as exc:
                self._store_failed(key, info, exc)
        info.last_seq = top
        for chunk in chunks:
            info.step = max(info.step, chunk.last_step)
            info.latest[chunk.key] = chunk.last
        if chunks:
            self.listener.run_progress(info)
        for event in fresh:
            if isinstance(event, Flush):
                if writable:  # committed above: the points are in SQLite
                    self.backend.acknowledge(key, event.seq)
            elif isinstance(event, Progress):
                info.step, info.total = event.step, event.total
                self.listener.run_progress(info)
            elif isinstance(event, Artifact):
                self._record(key, info, partial(self._add_artifact, info, event))
            elif isinstance(event, Params):
                self._record(key, info, partial(self._add_params, info, event))
            elif isinstance(event, Files):
                self._record(key, info, partial(self._record_files, info, event))
            elif isinstance(event, ViewUsed):
                self._record(key, info, partial(self._add_view, info, event))
            elif isinstance(event, Warn):
                where = f"{info.experiment}/{info.version}"
                warnings.warn(f"{where}: {event.message}", MlbookWarning, stacklevel=2)
            elif isinstance(event, End):
                if info.status == "running":  # the child's own account comes first
                    info.status, info.metrics, info.error = event.status, event.metrics, event.error
                    self._finish_at_end(info)
            elif isinstance(event, Exit):
                self._exited(info, event)
                return True
        return False

    def _attempt(self, key: int, info: RunInfo, event: Attempt) -> None:
        """Attempt ``event.attempt`` began on ``event.host``: record it; a later attempt
        replaces the metrics of earlier ones, and its events count from 1 again."""
        info.attempt = event.attempt
        info.last_seq = 0
        if self.store is None or info.run_id in self.store_failed:
            return
        shown = event.device not in ("", "cpu")
        host = f"{event.host} ({event.device})" if shown else event.host
        try:
            info.last_seq = self.store.start_attempt(
                info.pk, event.attempt, host=host, pid=event.pid
            )
        except StoreError as exc:
            self._store_failed(key, info, exc)

    def _record(self, key: int, info: RunInfo, write: Callable[[], None]) -> None:
        if info.run_id in self.store_failed:
            return
        try:
            write()
        except StoreError as exc:
            self._store_failed(key, info, exc)

    def _add_artifact(self, info: RunInfo, event: Artifact) -> None:
        if self.store is not None:
            rel = self.project.relative(Path(event.path))
            self.store.add_artifact(info.run_id, rel, event.size, event.sha256, event.kind)

    def _add_view(self, info: RunInfo, event: ViewUsed) -> None:
        if self.store is not None and info.mode == "run":
            from mlbook.experiments.store import add_run_view

            add_run_view(
                self.store,
                info.run_id,
                dataset=self.project.relative(Path(event.dataset)),
                view=event.view,
                query=event.query,
                boxes=event.boxes,
                records_hash=event.records_hash,
                ids_hash=event.ids_hash,
                count=event.count,
            )

    def _add_params(self, info: RunInfo, event: Params) -> None:
        if self.store is not None:
            info.params = self.store.update_params(info.run_id, event.params)
        else:
            info.params = {**info.params, **event.params}

    def _record_files(self, info: RunInfo, event: Files) -> None:
        """Store the files a run used (loaded modules + static walk) and its package versions."""
        from mlbook.provenance.files import package_versions, used_files

        used = used_files(
            self.project.root, event.files, info.script, search_path=[self.project.models_dir]
        )
        info.files = [f.path for f in used]
        if self.store is not None:
            self.store.add_files(info.run_id, [(f.path, f.size, f.sha256) for f in used])
            if event.modules:
                packages = package_versions(event.modules, self.project.state_dir / "cache")
                self.store.set_provenance(info.run_id, packages=packages)

    def _store_failed(self, key: int, info: RunInfo, exc: StoreError) -> None:
        """The store cannot take this run's events: stop its child; the run will fail.

        The child's own error, when it sends one (it may have filled the disk
        itself), stays the run's error; the store's reason is added to it.
        """
        if info.run_id not in self.store_failed:
            self.store_failed[info.run_id] = f"the run store could not be written: {exc}"
            # a child that is already ending gets a moment to send its own error
            self.kill_at[key] = time.monotonic() + STORE_FAILURE_GRACE_SECONDS

    def _exited(self, info: RunInfo, event: Exit) -> None:
        if event.reason and info.status in ("running", "completed"):
            info.status, info.error = "failed", event.reason
        store_error = self.store_failed.get(info.run_id)
        if store_error is not None:
            if info.status in ("running", "completed") or info.error is None:
                info.status, info.error = "failed", f"{store_error}; the run was stopped"
            else:
                info.status = "failed"
                info.error = f"{info.error}\n({store_error})"
        if info.status == "running":
            info.status = "failed"
            info.error = (
                f"the child process was killed by {event.signal}"
                if event.signal
                else f"the child process exited with code {event.code} without reporting"
            ) + _log_tail(info.dir / "output.log")
        if self.stopping and info.status != "completed" and info.run_id not in self.store_failed:
            info.status = "interrupted"
            info.error = info.error or f"interrupted ({_signal_name(self.stop_signal)})"
        if info.pid:
            left = stop_process_group(info.pid)
            if left:
                shown = ", ".join(f"{pid} ({command})" for pid, command in left[:3])
                more = f" and {len(left) - 3} more" if len(left) > 3 else ""
                warnings.warn(
                    f"{info.experiment}/{info.version}: the run left {len(left)} process(es) "
                    f"running: {shown}{more}; they were stopped",
                    MlbookWarning,
                    stacklevel=2,
                )

    def _finish_at_end(self, info: RunInfo) -> None:
        """Finish the run as its child reported it while the child's process exits (a
        child that loaded torch takes 10-20 ms to leave), when no other version waits to
        start (then its start-up hides the finish). The exit may still change the end:
        the run is then finished again (:meth:`_finish`)."""
        if self.waiting or self.stopping or info.run_id in self.store_failed:
            return
        self._finish(info)

    def _finish(self, info: RunInfo) -> RunInfo:
        """Record the run's end and call the observers' ``after_run``; a run finished at
        its child's end report is finished again only when its exit changed that end."""
        if self.finished_at_end.get(info.run_id) == (info.status, info.error):
            return info
        self.finished_at_end[info.run_id] = (info.status, info.error)
        info.ended = time.time()
        if self.store is not None:
            try:
                self.store.finish_run(info.run_id, info.status, info.metrics, info.error)
            except StoreError as exc:
                warnings.warn(
                    f"{info.experiment}/{info.version}: run {info.run_id} ended {info.status} "
                    f"but could not be recorded: {exc}",
                    MlbookWarning,
                    stacklevel=2,
                )
        for observer in self.observers:
            _side_channel("after the run", partial(observer.after_run, info, self.store))
        self.listener.run_finished(info)
        return info


def _spec_params(item: _Planned) -> dict[str, Any] | None:
    """The params a child gets from the runner: all of a plain script's, an Experiment
    script's overrides (None: its own), as JSON values."""
    chosen = item.params if item.argv is not None else item.overrides or None
    if chosen is None:
        return None
    import orjson

    from mlbook.experiments.store import _json

    loaded: dict[str, Any] = orjson.loads(_json(chosen))
    return loaded


def _signal_name(signum: int | None) -> str:
    return "Ctrl-C" if signum in (None, signal.SIGINT) else signal.Signals(signum).name


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
    for observer in default_observers(project) if observers is None else observers:
        _side_channel(
            "after creating the experiment",
            partial(observer.experiment_created, project, ident, title, path),
        )
    return path
