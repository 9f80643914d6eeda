"""Where versions run: the backend seam, and the ``local`` backend (child processes).

A backend runs :class:`Job` s and streams their events back
(:mod:`mlbook.experiments.contract`): :meth:`Backend.submit` starts one,
:meth:`Backend.events` returns what arrived, :meth:`Backend.acknowledge` tells a
child that its flush is committed, and every job ends with an
:class:`~mlbook.experiments.contract.Exit` event. The Ray backend
(:mod:`mlbook.experiments.ray_backend`) implements the same protocol.

The local backend can start a child interpreter before its job is known
(:meth:`LocalBackend.start_spare`, called by the runner once it has planned): Python
and mlbook's child modules load while the runner asks its observers and creates
the run, and the first job's spec then goes down a pipe to that waiting child.

The local backend reads at most :data:`READ_LIMIT` bytes per child per call to
:meth:`LocalBackend.events`: the runner commits what it got before it reads
more, so a child that logs faster than the store writes fills its pipe and
waits, and the runner's memory stays bounded however long the run.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import msgspec

from mlbook.experiments import _spare
from mlbook.experiments.contract import ACK, Event, Exit, FrameReader, RunSpec
from mlbook.experiments.seeds import seed_env

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = [
    "READ_LIMIT",
    "Backend",
    "Job",
    "LocalBackend",
    "get_backend",
    "leftover_processes",
    "stop_process_group",
]

#: Bytes read from one child per :meth:`LocalBackend.events` call (then the runner commits).
READ_LIMIT = 4 << 20
# a spec up to this size is written to a spare child at once (a pipe holds 64 KiB)
_SPEC_LIMIT = 60_000


@dataclass
class Job:
    """One version to run: ``key`` names it in events; ``spec`` goes to the child."""

    key: int
    spec: RunSpec
    log_path: Path
    #: the run's before commit (set when the backend ships it: ``code_from_snapshot``)
    commit: str | None = None


class Backend(Protocol):
    """Runs jobs and streams their events back."""

    #: True when a job runs the files of its run's before commit (the commit must
    #: exist before :meth:`submit`); False when it runs the working tree, so the
    #: runner may take the before snapshot while the job starts up.
    code_from_snapshot: bool
    #: True when the backend queues jobs until its cluster has room for them (Ray):
    #: the runner then submits every version at once unless ``--jobs`` says otherwise
    schedules: bool

    def submit(self, job: Job) -> int:
        """Start ``job``; returns the process ID (0 when there is none on this host)."""
        ...

    def events(self, timeout: float) -> list[tuple[int, list[Event]]]:
        """Events that arrived within ``timeout`` seconds, per job key, in order."""
        ...

    def acknowledge(self, key: int, seq: int) -> None:
        """Tell job ``key`` that everything up to event ``seq`` is committed."""
        ...

    def interrupt(self, key: int) -> None:
        """Ask a job to stop (its run ends ``interrupted``)."""
        ...

    def kill(self, key: int) -> None:
        """Stop a job now."""
        ...

    def close(self) -> None:
        """Release what the backend holds (a Ray head it started); jobs left are stopped."""
        ...


@dataclass
class _Child:
    job: Job
    process: subprocess.Popen[bytes]
    fd: int
    ack_fd: int
    log: IO[bytes] | None
    reader: FrameReader = field(default_factory=FrameReader)
    open: bool = True
    broken: str | None = None


class LocalBackend:
    """Each job is a child process of this one (``python -m mlbook.experiments._child``)."""

    code_from_snapshot = False
    schedules = False

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, _Child] = {}
        self.spare: _spare.Spare | None = None

    def start_spare(self, seed: int | None = None) -> None:
        """Start the next job's child now: it loads Python and mlbook's child modules,
        then waits for its spec. Used by a job whose seed is ``seed`` (the hash seed is
        fixed when the interpreter starts); a job with another seed starts its own.
        A spare :func:`~mlbook.experiments._spare.prestart` started is taken when its
        seed and interpreter fit, else stopped."""
        if self.spare is not None:
            return
        early = _spare.take()
        if early is not None:
            if early.seed == seed and early.python == self.python:
                self.spare = early
                return
            _spare.stop(early)
        self.spare = _spare.spawn(self.python, seed)

    def _take_spare(self, job: Job) -> _Child | None:
        """Hand ``job`` to the spare child, if there is one that can run it."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        spec = msgspec.structs.replace(
            job.spec, events_fd=spare.events_fd, ack_fd=spare.ack_fd, log=str(job.log_path)
        )
        data = msgspec.json.encode(spec)
        if spare.seed == job.spec.seed and len(data) <= _SPEC_LIMIT:
            try:
                os.write(spare.spec_fd, data)  # fits the pipe: never blocks
            except OSError:  # the spare is gone
                pass
            else:
                os.close(spare.spec_fd)
                return _Child(job, spare.process, spare.events_read, spare.ack_write, None)
        _spare.stop(spare)
        return None

    def submit(self, job: Job) -> int:
        """Start the job's child in its own process group (the spare, when it fits);
        its output goes to ``job.log_path``."""
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        child = self._take_spare(job) or self._spawn(job)
        self.children[job.key] = child
        self.selector.register(child.fd, selectors.EVENT_READ, child)
        return child.process.pid

    def _spawn(self, job: Job) -> _Child:
        events_read, events_write, ack_read, ack_write = _spare.pipes()
        spec = msgspec.structs.replace(job.spec, events_fd=events_write, ack_fd=ack_read)
        log = open(job.log_path, "ab")  # noqa: SIM115 - closed when the child ends
        env = dict(os.environ, PYTHONUNBUFFERED="1", **seed_env(job.spec.seed))
        try:
            process = subprocess.Popen(
                [self.python, "-m", "mlbook.experiments._child", msgspec.json.encode(spec)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(events_write, ack_read),
                env=env,
                process_group=0,
            )
        except BaseException:
            for fd in (events_read, ack_write):
                os.close(fd)
            log.close()
            raise
        finally:
            os.close(events_write)
            os.close(ack_read)
        return _Child(job=job, process=process, fd=events_read, ack_fd=ack_write, log=log)

    def events(self, timeout: float) -> list[tuple[int, list[Event]]]:
        """Read what the children sent; report each child's exit once its pipe is drained."""
        out: dict[int, list[Event]] = {}
        if self.selector.get_map():
            for key, _ in self.selector.select(timeout):
                self._read(key.data, out, READ_LIMIT)
        else:
            time.sleep(min(timeout, 0.05))
        for child in list(self.children.values()):
            if child.open and child.process.poll() is not None:
                # the child is gone: what is left in the pipe is bounded by its size; a
                # grandchild may still hold the pipe open, so stop at what is there now
                self._read(child, out, None)
                self._close(child)
            if not child.open:
                code = child.process.wait()
                name = signal.Signals(-code).name if code < 0 else None
                out.setdefault(child.job.key, []).append(Exit(code, name, child.broken))
                if child.log is not None:
                    child.log.close()
                with contextlib.suppress(OSError):
                    os.close(child.ack_fd)
                del self.children[child.job.key]
        return list(out.items())

    def _read(self, child: _Child, out: dict[int, list[Event]], limit: int | None) -> None:
        taken = 0
        while child.open and (limit is None or taken < limit):
            try:
                data = os.read(child.fd, 1 << 20)
            except BlockingIOError:
                return
            if not data:
                self._close(child)
                return
            taken += len(data)
            events = out.setdefault(child.job.key, [])
            try:
                events.extend(child.reader.feed(data))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                child.broken = f"the child sent a malformed event ({exc}); it was stopped"
                self._close(child, kill=True)
                return

    def _close(self, child: _Child, kill: bool = False) -> None:
        if child.open:
            self.selector.unregister(child.fd)
            os.close(child.fd)
            child.open = False
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
            child.process.wait()

    def acknowledge(self, key: int, seq: int) -> None:
        """Write ``seq`` on the child's ack pipe (never blocks; a gone child is ignored)."""
        child = self.children.get(key)
        if child is not None:
            with contextlib.suppress(OSError):
                os.write(child.ack_fd, ACK.pack(seq))

    def interrupt(self, key: int) -> None:
        """Send SIGINT to the child (Python raises KeyboardInterrupt in the hook)."""
        child = self.children.get(key)
        if child is not None and child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGINT)

    def kill(self, key: int) -> None:
        """SIGKILL the child."""
        child = self.children.get(key)
        if child is not None and child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()

    def close(self) -> None:
        """Stop the spare child, if no job took it (the runner waits for the others)."""
        spare, self.spare = self.spare, None
        if spare is not None:
            _spare.stop(spare)


def leftover_processes(pgid: int) -> list[tuple[int, str]]:
    """Processes still in process group ``pgid`` (a finished child's), as ``(pid, command)``."""
    try:
        os.killpg(pgid, 0)  # one call answers the common case: the group is empty
    except ProcessLookupError:
        return []
    except OSError:  # another user's process is in it: look
        pass
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b") ", 1)[1].split()
                if int(fields[2]) != pgid or fields[0] == b"Z":
                    continue
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            found.append((int(entry.name), command.strip()[:80]))
    return found


def stop_process_group(pgid: int, grace: float = 2.0) -> list[tuple[int, str]]:
    """SIGTERM what is left of process group ``pgid``, SIGKILL after ``grace``; what was left."""
    left = leftover_processes(pgid)
    if not left:
        return []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and leftover_processes(pgid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return left


def get_backend(name: str, project: Project | None = None, address: str | None = None) -> Backend:
    """The backend called ``name``: ``local``, or ``ray`` (needs ``project``; ``address``
    overrides ``[ray] address``).

    Raises:
        ExperimentError: an unknown name; Ray not installed or not reachable.
    """
    from mlbook.errors import ExperimentError

    if name == "local":
        return LocalBackend()
    if name == "ray" and project is not None:
        from mlbook.experiments.ray_backend import RayBackend

        return RayBackend(project, address)
    raise ExperimentError(f'unknown runner backend {name!r}; use "local" or "ray"')
