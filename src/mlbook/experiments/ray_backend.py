"""The ``ray`` backend: each version is a Ray task on a cluster; this process stays the driver.

``mlbook run --backend ray [--address HOST:PORT]`` (or ``[ray]`` in
``mlbook.toml``) runs versions through :class:`RayBackend`, which speaks the
runner's backend protocol (:mod:`mlbook.experiments.backends`), so the runner
stays the only writer of the run store, as Ray Tune's logger callbacks keep one
writer on the driver. Ray is imported only here, when the backend is made.

- **Code**: the runner takes each run's before snapshot first
  (:attr:`RayBackend.code_from_snapshot`); the backend puts ``git archive`` of
  that commit's tree in Ray's object store once per tree (every version of an
  experiment has the same one, as a rule), and the task runs those files
  (:mod:`mlbook.experiments.ray_worker`), so an edit made after submission
  never changes what runs.
- **Data**: ``[ray] data = "ship"`` puts the run's dataset directory in the
  object store once per command; ``"shared"`` passes its path as it is.
- **Events**: the task is a streaming generator; a thread per task hands its
  batches to :meth:`RayBackend.events`. The runner drops events it already
  has (attempt + sequence number).
- **Retries**: a task whose worker or node died is submitted again by the
  backend (``[ray] retries``), as attempt 2, 3...: Ray's own retries of a
  streaming generator skip the items an earlier attempt already returned, and
  a new attempt's first batches would be lost. An application error is never
  retried; neither is a cancelled task.
- **Outputs**: the run's output directory comes back zipped with the last
  batch and is unpacked into ``Models/outputs/<ID>/<version>/<run-id>/``
  before the runner hears that the run ended, so the after snapshot and
  ``mlbook export`` see them as after a local run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mlbook.errors import ExperimentError, MlbookWarning
from mlbook.experiments.contract import (
    Artifact,
    Attempt,
    Event,
    Exit,
    Files,
    FrameReader,
)
from mlbook.experiments.ray_worker import (
    Batch,
    FlushAcks,
    TaskOptions,
    ack_token,
    pack_dir,
    run_attempt,
    unpack_zip,
)

if TYPE_CHECKING:
    from mlbook.config import RaySettings
    from mlbook.experiments.backends import Job
    from mlbook.project import Project

__all__ = ["RayBackend", "retryable"]

#: how the driver's local Ray head is started (no address given)
_LOCAL_INIT: dict[str, Any] = {"include_dashboard": False}
_SIZE_HINT = ", or set [ray] {key} in mlbook.toml"


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def _prepare_environment(address: str | None) -> None:
    """Ray's environment for this driver, set before Ray is imported.

    No usage statistics are sent. A local head (no address) binds the loopback
    interface only (Ray's own switch for that is
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). With an address, Ray's auth token
    is used when one is present and ``RAY_AUTH_MODE`` is not set, as ``ray start``
    does on the head.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    elif "RAY_AUTH_MODE" not in os.environ:
        token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(
            Path.home() / ".ray" / "auth_token"
        )
        if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file):
            os.environ["RAY_AUTH_MODE"] = "token"


def retryable(exc: BaseException) -> bool:
    """True for a task that failed because its worker, node or objects were lost."""
    import ray.exceptions as rex

    if isinstance(exc, rex.TaskCancelledError):
        return False
    lost = tuple(
        getattr(rex, name)
        for name in (
            "WorkerCrashedError",
            "NodeDiedError",
            "LocalRayletDiedError",
            "ObjectLostError",
            "OwnerDiedError",
            "OutOfMemoryError",
        )
        if hasattr(rex, name)
    )
    return isinstance(exc, lost)


@dataclass
class _Task:
    job: Job
    commit: str
    attempt: int = 1
    generator: Any = None
    reader: FrameReader = field(default_factory=FrameReader)
    seen_attempt: int = 0
    stopped: bool = False
    worker_root: str = ""
    worker_out: str = ""


class RayBackend:
    """Runs each job as a Ray task (see the module doc).

    Args:
        project: the project whose runs these are (its root, git and ``[ray]``).
        address: the cluster (``HOST:PORT``, ``auto``); default ``[ray] address``;
            empty: start a local head for this
            backend's life and stop it in :meth:`close`.
        settings: ``[ray]`` settings (default: the project's).

    Raises:
        ExperimentError: Ray is not installed, or its cluster cannot be reached.
    """

    code_from_snapshot = True
    schedules = True

    def __init__(
        self, project: Project, address: str | None = None, settings: RaySettings | None = None
    ) -> None:
        self.settings = settings or project.config.ray
        chosen = address or self.settings.address
        self.address = chosen or None
        _prepare_environment(self.address)
        try:
            import ray
        except ImportError:
            raise ExperimentError(
                "the ray backend needs Ray: pip install 'mlbook[ray]' (ray[default]>=2.11,<3)"
            ) from None
        self.ray = ray
        self.project = project
        self.events_queue: queue.Queue[tuple[int, int, bytes | BaseException | None]] = (
            queue.Queue()
        )
        self.tasks: dict[int, _Task] = {}
        self.code_refs: dict[str, Any] = {}
        self.data_refs: dict[str, tuple[str, Any]] = {}
        self._started_here = False
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(address="local", log_to_driver=False, **_LOCAL_INIT)
            except Exception as exc:  # Ray raises several kinds here, none of them ours
                where = self.address or "a local Ray head"
                text = f"{exc} {exc.__cause__ or ''}"
                hint = "check --address / [ray] address (start a cluster with `ray start --head`)"
                if "InvalidAuthToken" in text or "AuthenticationError" in text:
                    hint = (
                        "the cluster wants Ray's auth token: set RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN (or ~/.ray/auth_token), as for `ray` itself"
                    )
                raise ExperimentError(
                    f"cannot connect to Ray at {where}: {_first_line(exc)}; {hint}"
                ) from exc
            self._started_here = True
        self._remote = ray.remote(num_returns="streaming", max_retries=0)(run_attempt)
        # committed flushes go back to the tasks through this actor (no CPU of its own)
        self._acks: Any = ray.remote(num_cpus=0)(FlushAcks).remote()

    # -- the backend protocol -------------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Ship the job's code (and data) and start attempt 1; returns 0 (no local process).

        Raises:
            ExperimentError: no before commit to ship, a snapshot or dataset over its
                limit, or an option Ray runs cannot take (``--resume``, export mode).
        """
        spec = job.spec
        where = f"{spec.experiment}/{spec.version}"
        if spec.mode == "test":
            raise ExperimentError(
                f"{where}: --backend ray runs the files of each run's before commit, and test "
                "mode records none; test with the local backend (mlbook run --mode test)"
            )
        if spec.resume_dir or spec.source_weights:
            raise ExperimentError(
                f"{where}: --resume and --mode export read earlier runs' outputs on this "
                "machine; run them with the local backend (--backend local)"
            )
        if not job.commit:
            raise ExperimentError(
                f"{where}: --backend ray ships the run's before commit and there is none "
                '(see `mlbook show`); set [git] commits = "refs" in a git repository'
            )
        task = _Task(job=job, commit=job.commit)
        self._start(task)
        self.tasks[job.key] = task
        return 0

    def _start(self, task: _Task) -> None:
        spec = task.job.spec
        code_key, code = self._code(task.commit, f"{spec.experiment}/{spec.version}")
        data_key, data_name, data = None, "", None
        if spec.dataset_dir and self.settings.data == "ship" and Path(spec.dataset_dir).is_dir():
            data_key, data = self._data(Path(spec.dataset_dir), f"{spec.experiment}/{spec.version}")
            data_name = Path(spec.dataset_dir).name
        options = TaskOptions(
            attempt=task.attempt,
            code_key=code_key,
            data_key=data_key,
            data_name=data_name,
            max_output_size=self.settings.size("max_output_size"),
        )
        resources: dict[str, Any] = {
            "num_cpus": self.settings.num_cpus,
            "num_gpus": self.settings.num_gpus,
        }
        memory = self.settings.size("memory")
        if memory:
            resources["memory"] = memory
        remote = self._remote.options(**resources)
        task.generator = remote.remote(
            msgspec.json.encode(spec),
            options,
            [code],
            [data] if data is not None else None,
            self._acks,
        )
        thread = threading.Thread(
            target=self._drain,
            args=(task.job.key, task.attempt, task.generator),
            name=f"mlbook-ray-{task.job.key}",
            daemon=True,
        )
        thread.start()

    def _drain(self, key: int, attempt: int, generator: Any) -> None:
        """Hand the task's batches to :meth:`events`; ``None`` when it ended, or its error."""
        try:
            for ref in generator:
                self.events_queue.put((key, attempt, self.ray.get(ref)))
        except BaseException as exc:
            self.events_queue.put((key, attempt, exc))
            return
        self.events_queue.put((key, attempt, None))

    def events(self, timeout: float) -> list[tuple[int, list[Event]]]:
        """What the tasks sent; one entry per attempt that began, each starting with
        :class:`~mlbook.experiments.contract.Attempt`."""
        out: list[tuple[int, list[Event]]] = []
        try:
            item = self.events_queue.get(timeout=timeout)
        except queue.Empty:
            return out
        deadline = time.monotonic() + 0.02
        while True:
            self._take(*item, out)
            if time.monotonic() > deadline:
                break
            try:
                item = self.events_queue.get_nowait()
            except queue.Empty:
                break
        return out

    def _take(
        self,
        key: int,
        attempt: int,
        item: bytes | BaseException | None,
        out: list[tuple[int, list[Event]]],
    ) -> None:
        task = self.tasks.get(key)
        if task is None or attempt != task.attempt:
            return  # a job that ended, or an attempt given up on
        if isinstance(item, bytes):
            try:
                batch = msgspec.msgpack.decode(item, type=Batch)
            except (msgspec.DecodeError, msgspec.ValidationError) as bad:
                self.kill(key)
                reason = f"the Ray task sent a malformed batch ({bad}); it was stopped"
                self._end(task, Exit(1, None, reason), out)
                return
            self._batch(task, batch, out)
            return
        if item is None:  # the stream ended without an Exit (should not happen)
            self._end(task, Exit(1, None, "the Ray task ended without reporting"), out)
            return
        exc = item
        if retryable(exc) and not task.stopped and task.attempt <= self.settings.retries:
            task.attempt += 1
            task.reader = FrameReader()
            where = f"{task.job.spec.experiment}/{task.job.spec.version}"
            warnings.warn(
                f"{where}: the Ray worker of attempt {task.attempt - 1} was lost "
                f"({_first_line(exc)}); starting attempt {task.attempt}",
                MlbookWarning,
                stacklevel=2,
            )
            try:
                self._start(task)
            except (ExperimentError, OSError) as error:
                reason = f"could not start attempt {task.attempt}: {error}"
                self._end(task, Exit(1, None, reason), out)
            return
        import ray.exceptions as rex

        if isinstance(exc, rex.TaskCancelledError):
            self._end(task, Exit(-2, "SIGINT", None), out)
        elif retryable(exc):
            self._end(
                task,
                Exit(
                    1,
                    None,
                    f"the Ray worker was lost after {task.attempt} attempt(s): {_first_line(exc)}",
                ),
                out,
            )
        else:
            self._end(task, Exit(1, None, f"the Ray task failed: {_first_line(exc)}"), out)

    def _batch(self, task: _Task, batch: Batch, out: list[tuple[int, list[Event]]]) -> None:
        events: list[Event] = []
        if batch.attempt != task.seen_attempt:
            task.seen_attempt = batch.attempt
            task.worker_root, task.worker_out = batch.root, batch.out
            events.append(Attempt(batch.attempt, batch.host, batch.pid, batch.device))
        try:
            decoded = list(task.reader.feed(batch.frames))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.kill(task.job.key)
            reason = f"the Ray task sent a malformed event ({exc}); it was stopped"
            self._end(task, Exit(1, None, reason), out, events)
            return
        for event in decoded:
            if isinstance(event, Exit):
                self._outputs(task, batch)
                self._end(task, event, out, events)
                return
            events.append(self._local(task, event))
        out.append((task.job.key, events))

    def _local(self, task: _Task, event: Event) -> Event:
        """An event with the worker's paths mapped to this machine's."""
        out_dir = str(task.job.log_path.parent)
        root = str(self.project.root)
        if isinstance(event, Artifact):
            return msgspec.structs.replace(event, path=_rebase(event.path, task, out_dir, root))
        if isinstance(event, Files):
            files = [_rebase(p, task, out_dir, root) for p in event.files]
            return msgspec.structs.replace(event, files=files)
        return event

    def _outputs(self, task: _Task, batch: Batch) -> None:
        """Unpack what came back into the run's output directory."""
        where = f"{task.job.spec.experiment}/{task.job.spec.version}"
        if batch.outputs_note:
            warnings.warn(f"{where}: {batch.outputs_note}", MlbookWarning, stacklevel=2)
        if batch.outputs is None:
            return
        try:
            unpack_zip(batch.outputs, task.job.log_path.parent)
        except (ValueError, OSError) as exc:
            warnings.warn(
                f"{where}: the run's outputs could not be unpacked: {exc}",
                MlbookWarning,
                stacklevel=2,
            )

    def _end(
        self,
        task: _Task,
        exit_event: Exit,
        out: list[tuple[int, list[Event]]],
        events: list[Event] | None = None,
    ) -> None:
        out.append((task.job.key, [*(events or []), exit_event]))
        self.tasks.pop(task.job.key, None)

    def acknowledge(self, key: int, seq: int) -> None:
        """Tell the task that flush ``seq`` of its current attempt is committed."""
        task = self.tasks.get(key)
        if task is not None:
            self._acks.ack.remote(ack_token(task.job.spec.run_id, task.attempt), seq)

    def interrupt(self, key: int) -> None:
        """Cancel the task (``ray.cancel``: KeyboardInterrupt in the worker); no retry."""
        task = self.tasks.get(key)
        if task is not None and task.generator is not None:
            task.stopped = True
            with contextlib.suppress(Exception):
                self.ray.cancel(task.generator)

    def kill(self, key: int) -> None:
        """Cancel the task by killing its worker process; no retry."""
        task = self.tasks.get(key)
        if task is not None and task.generator is not None:
            task.stopped = True
            with contextlib.suppress(Exception):
                self.ray.cancel(task.generator, force=True)

    def close(self) -> None:
        """Cancel what still runs; stop the local Ray head when this backend started it."""
        for key in list(self.tasks):
            self.kill(key)
        self.tasks.clear()
        if self._started_here:
            with contextlib.suppress(Exception):
                self.ray.shutdown()
            self._started_here = False

    # -- shipping --------------------------------------------------------------------------

    def _code(self, commit: str, where: str) -> tuple[str, Any]:
        """The project's tree in ``commit`` and the object reference of its ``git archive``.

        Keyed by the tree, so runs whose snapshots hold the same files (every
        version of one experiment, as a rule) ship and unpack them once.
        """
        from mlbook.provenance.git import git_info

        info = git_info(self.project.root)
        if isinstance(info, str):
            raise ExperimentError(f"{where}: cannot ship commit {commit[:7]}: {info}")
        path = info.prefix.rstrip("/")
        tree = self._git(info.git, ["rev-parse", "--verify", f"{commit}^{{tree}}:{path}"
                                    if path else f"{commit}^{{tree}}"], commit, where)  # fmt: skip
        key = tree.decode().strip()
        ref = self.code_refs.get(key)
        if ref is not None:
            return key, ref
        archive = self._git(info.git, ["archive", "--format=zip", key], commit, where)
        limit = self.settings.size("max_snapshot_size")
        if len(archive) > limit:
            raise ExperimentError(
                f"{where}: the code snapshot {commit[:7]} is {_mb(len(archive))}, over "
                f"[ray] max_snapshot_size ({_mb(limit)}); raise max_snapshot_size in "
                "mlbook.toml, or keep large files out of the project"
            )
        ref = self.ray.put(archive)
        self.code_refs[key] = ref
        return key, ref

    def _git(self, git: str, args: list[str], commit: str, where: str) -> bytes:
        """The output of one git command about ``commit``; its failure is one line."""
        try:
            done = subprocess.run(
                [git, *args],
                cwd=self.project.root,
                capture_output=True,
                check=False,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ExperimentError(f"{where}: git {args[0]} of {commit[:7]} failed: {exc}") from exc
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            raise ExperimentError(
                f"{where}: git {args[0]} of {commit[:7]} failed: {detail[-1] if detail else ''}"
            )
        return done.stdout

    def _data(self, directory: Path, where: str) -> tuple[str, Any]:
        """The key and object reference of the dataset at ``directory`` (once per command)."""
        name = self.project.relative(directory)
        known = self.data_refs.get(name)
        if known is not None:
            return known
        limit = self.settings.size("max_data_size")
        # the zip holds the dataset's directory itself, so that its name is kept
        prefix = directory.name + "/"
        packed, total = pack_dir(directory, limit, prefix)
        if packed is None:
            raise ExperimentError(
                f"{where}: dataset {name} is {_mb(total)}, over [ray] max_data_size "
                f'({_mb(limit)}); raise max_data_size, or set [ray] data = "shared" when '
                "every node sees this path"
            )
        digest = hashlib.sha256(packed).hexdigest()[:32]
        entry = (digest, self.ray.put(packed))
        self.data_refs[name] = entry
        return entry


def _rebase(path: str, task: _Task, out_dir: str, root: str) -> str:
    """A worker path under its output directory or code root, as the same path here."""
    for worker, here in ((task.worker_out, out_dir), (task.worker_root, root)):
        if worker and (path == worker or path.startswith(worker + os.sep)):
            return here + path[len(worker) :]
    return path


def _first_line(exc: BaseException) -> str:
    """The line of a Ray error that says what happened."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "died" in line or "cancel" in line:
            return line[:300]
    return (lines[-1] if lines else type(exc).__name__)[:300]
