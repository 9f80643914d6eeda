"""Where versions run: the backend seam, and the ``local`` backend (child processes).

A backend does three things: :meth:`Backend.submit` a :class:`Job`, stream its
events back (:meth:`Backend.events`), and tell when it ended (an ``["exit",
returncode, signal_name]`` event, always the job's last). A Ray backend will
implement the same protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlbook.experiments.metrics import FrameReader

__all__ = ["Backend", "Job", "LocalBackend", "get_backend"]


@dataclass
class Job:
    """One version to run: ``key`` names it in events; ``spec`` goes to the child."""

    key: int
    spec: dict[str, Any]
    log_path: Path


class Backend(Protocol):
    """Runs jobs and streams their events back."""

    def submit(self, job: Job) -> int:
        """Start ``job``; returns the process ID (0 when there is none on this host)."""
        ...

    def events(self, timeout: float) -> list[tuple[int, list[Any]]]:
        """Events that arrived within ``timeout`` seconds, as ``(job key, event)``."""
        ...

    def interrupt(self, key: int) -> None:
        """Ask a job to stop (its run ends ``interrupted``)."""
        ...

    def kill(self, key: int) -> None:
        """Stop a job now."""
        ...


@dataclass
class _Child:
    job: Job
    process: subprocess.Popen[bytes]
    fd: int
    reader: FrameReader = field(default_factory=FrameReader)
    log: Any = None
    open: bool = True


class LocalBackend:
    """Each job is a child process of this one (``python -m mlbook.experiments._child``)."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, _Child] = {}

    def submit(self, job: Job) -> int:
        """Spawn the child; its stdout and stderr go to ``job.log_path``."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        with contextlib.suppress(OSError, ImportError):  # a 1 MiB pipe: the loop rarely waits
            import fcntl

            fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        job.spec["fd"] = write_fd
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(job.log_path, "ab")  # noqa: SIM115 - closed when the child ends
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            process = subprocess.Popen(
                [self.python, "-m", "mlbook.experiments._child", json.dumps(job.spec)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=env,
                process_group=0,
            )
        except BaseException:
            os.close(read_fd)
            log.close()
            raise
        finally:
            os.close(write_fd)
        child = _Child(job=job, process=process, fd=read_fd, log=log)
        self.children[job.key] = child
        self.selector.register(read_fd, selectors.EVENT_READ, child)
        return process.pid

    def events(self, timeout: float) -> list[tuple[int, list[Any]]]:
        """Read what the children sent; report each child's exit once its pipe is drained."""
        out: list[tuple[int, list[Any]]] = []
        if self.selector.get_map():
            for key, _ in self.selector.select(timeout):
                self._read(key.data, out)
        else:
            time.sleep(min(timeout, 0.05))
        for child in list(self.children.values()):
            if child.open and child.process.poll() is not None:
                self._read(child, out)  # a grandchild may hold the pipe open: stop waiting
                self._close(child)
            if not child.open:
                code = child.process.wait()
                name = signal.Signals(-code).name if code < 0 else None
                out.append((child.job.key, ["exit", code, name]))
                child.log.close()
                del self.children[child.job.key]
        return out

    def _read(self, child: _Child, out: list[tuple[int, list[Any]]]) -> None:
        while child.open:
            try:
                data = os.read(child.fd, 1 << 20)
            except BlockingIOError:
                return
            if not data:
                self._close(child)
                return
            out.extend((child.job.key, event) for event in child.reader.feed(data))

    def _close(self, child: _Child) -> None:
        if child.open:
            self.selector.unregister(child.fd)
            os.close(child.fd)
            child.open = False
            child.process.wait()

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


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``local``; ``ray`` comes later)."""
    from mlbook.errors import ExperimentError

    if name == "local":
        return LocalBackend()
    raise ExperimentError(
        f'runner backend {name!r} is not available yet; set [runner] backend = "local"'
    )
