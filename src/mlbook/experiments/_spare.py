"""Spare children: a child interpreter started before its job is known.

A run's child spends about 90 ms starting Python and mlbook's child modules
before it can run the script. The local backend hides that behind the runner's
own work by starting the child first (:func:`spawn`) and handing it its spec
later; a spare that gets no job reads the end of its spec pipe and exits, or is
killed (:func:`stop`: it has run no user code).

``mlbook run`` goes one step earlier (:func:`prestart`, called by the console
script before it imports the CLI): the hash seed a child starts with cannot
change later, so it guesses it from what the last run of the same first
experiment ID planned, kept in ``.mlbook/spare-seed`` (:func:`remember`). When
the plan disagrees, the runner replaces that spare with one of the right seed.

This module imports only the standard library and :mod:`mlbook.experiments.seeds`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mlbook.experiments.seeds import MAX_SEED, seed_env

__all__ = ["Spare", "discard", "pipes", "prestart", "remember", "spawn", "stop", "take"]

#: the events pipe's size (the child writes frames of metrics into it)
PIPE_SIZE = 1 << 20
#: where the runner keeps the first planned version's seed (its hash seed)
SEED_FILE = Path(".mlbook") / "spare-seed"
_KEEP = 64

_prestarted: list[Spare] = []


class Spare:
    """A child interpreter waiting for its spec on ``spec_fd``."""

    __slots__ = (
        "ack_fd",
        "ack_write",
        "events_fd",
        "events_read",
        "process",
        "python",
        "seed",
        "spec_fd",
    )

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        python: str,
        seed: int | None,
        spec_fd: int,
        events_read: int,
        ack_write: int,
        events_fd: int,
        ack_fd: int,
    ) -> None:
        self.process = process
        self.python = python
        self.seed = seed  # the hash seed it started with (PYTHONHASHSEED is read at start)
        self.spec_fd = spec_fd
        self.events_read = events_read
        self.ack_write = ack_write
        self.events_fd = events_fd  # the child's ends, by their numbers in the child
        self.ack_fd = ack_fd


def pipes() -> tuple[int, int, int, int]:
    """The events pipe (runner reads, non-blocking; enlarged) and the ack pipe (runner
    writes, non-blocking): ``events_read, events_write, ack_read, ack_write``."""
    events_read, events_write = os.pipe()
    ack_read, ack_write = os.pipe()
    os.set_blocking(events_read, False)
    os.set_blocking(ack_write, False)
    with contextlib.suppress(OSError, ImportError):  # a larger pipe: fewer waits
        import fcntl

        fcntl.fcntl(events_write, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    return events_read, events_write, ack_read, ack_write


def spawn(python: str, seed: int | None) -> Spare | None:
    """Start a spare child whose hash seed is ``seed`` (``None`` when it cannot start:
    the job then starts its own child, and says why if that fails too)."""
    events_read, events_write, ack_read, ack_write = pipes()
    spec_read, spec_write = os.pipe()
    try:
        process = subprocess.Popen(
            [python, "-m", "mlbook.experiments._child", "--wait", str(spec_read)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # until it has its job: the spec names its log
            stderr=subprocess.DEVNULL,
            pass_fds=(events_write, ack_read, spec_read),
            env=dict(os.environ, PYTHONUNBUFFERED="1", **seed_env(seed)),
            process_group=0,
        )
    except OSError:
        for fd in (events_read, ack_write, spec_write):
            os.close(fd)
        return None
    finally:
        for fd in (events_write, ack_read, spec_read):
            os.close(fd)
    return Spare(process, python, seed, spec_write, events_read, ack_write, events_write, ack_read)


def stop(spare: Spare) -> None:
    """Stop a spare child that got no job (it has run no user code: a kill is safe)."""
    for fd in (spare.spec_fd, spare.events_read, spare.ack_write):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(ProcessLookupError):
        spare.process.kill()
    spare.process.wait()


def prestart(argv: list[str], start: Path | None = None) -> None:
    """Start a spare for the first run of ``mlbook run ARGV`` now, in the project at
    or above ``start`` (default: the current directory), with the hash seed
    remembered for ARGV's first experiment ID. Nothing happens outside a project,
    or when a spare is already waiting."""
    if _prestarted:
        return
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "mlbook.toml").is_file():
            break
    else:
        return
    key = next((arg for arg in argv if not arg.startswith("-")), "")
    spare = spawn(sys.executable, _remembered(directory).get(key))
    if spare is not None:
        _prestarted.append(spare)


def _remembered(root: Path) -> dict[str, int | None]:
    """The seeds :func:`remember` kept: a line ``ID SEED`` each (``-``: no seed)."""
    seeds: dict[str, int | None] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (root / SEED_FILE).read_text().splitlines():
            key, _, value = line.rpartition(" ")
            if value == "-":
                seeds[key] = None
            elif value.isdigit() and int(value) <= MAX_SEED:  # else Python would not start
                seeds[key] = int(value)
    return seeds


def take() -> Spare | None:
    """The spare :func:`prestart` started, once (``None`` if there is none)."""
    return _prestarted.pop() if _prestarted else None


def discard() -> None:
    """Stop the prestarted spare, if no one took it (a run on another backend)."""
    spare = take()
    if spare is not None:
        stop(spare)


def remember(root: Path, ids: Sequence[str], seed: int | None) -> None:
    """Keep ``seed`` as the guess of the next :func:`prestart` of a run whose first
    experiment ID is ``ids[0]`` (written only when it changes; the last 64 IDs)."""
    key = ids[0] if ids else ""
    seeds = _remembered(root)
    if key in seeds and seeds[key] == seed:
        return
    seeds.pop(key, None)
    seeds[key] = seed
    lines = [f"{k} {'-' if v is None else v}" for k, v in list(seeds.items())[-_KEEP:]]
    with contextlib.suppress(OSError):  # a guess: losing it costs one child start
        from mlbook._fs import atomic_write_text

        atomic_write_text(root / SEED_FILE, "\n".join(lines) + "\n")
