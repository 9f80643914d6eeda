"""The run contract: what the runner sends a child, and the events a child sends back.

Every backend speaks this one contract, so the runner (the driver) stays the
only writer of the store whatever runs the version. The runner hands the child
a :class:`RunSpec`; the child answers with a stream of :data:`Event` structs,
msgpack-encoded and length-prefixed on the wire (:class:`Channel`,
:class:`FrameReader`)::

    child                                   runner
    run.log(step=3, loss=0.2)  --buffer-->  (nothing yet)
    every FLUSH_POINTS points or 0.2 s:
    Metrics(seq=7, series=[...]) ---------> one transaction: metric chunks + last seq
    run.flush(): Flush(seq=8) ------------> commit, then write ack 8 on the ack pipe
    <---------------------------------------  8   (flush returns: the points are in SQLite)
    End(seq=9, status, metrics, error) ---> finish the run
    (process exits)                         Exit(code, signal) from the backend

Each event carries the child's sequence number (``seq``, from 1, per attempt);
together with :attr:`RunSpec.attempt` it lets the store drop an event it has
already written (a retried task, a resent batch). :class:`Exit` is made by the
backend, not the child, and has no sequence number; nor has :class:`Attempt`,
which a backend that retries jobs on other hosts (Ray) sends when an attempt begins.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any

import msgspec

from mlbook import _frames
from mlbook._frames import Frames

__all__ = [
    "ACK",
    "Artifact",
    "Attempt",
    "Channel",
    "End",
    "Event",
    "Exit",
    "Files",
    "Flush",
    "FrameReader",
    "Metrics",
    "Params",
    "Progress",
    "RunSpec",
    "Series",
    "ViewUsed",
    "Warn",
    "decode_event",
    "encode_event",
]


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a child needs to run one version (paths are absolute)."""

    script: str
    models_dir: str
    project_root: str
    run_id: str
    experiment: str
    version: str
    mode: str
    dir: str
    dataset_dir: str | None = None
    resume_dir: str | None = None
    source_weights: str | None = None
    test_steps: int = 2
    #: test mode: steps of nested ``iterate`` loops (2nd level, 3rd...; the last repeats);
    #: empty: ``test_steps`` at every level
    inner_steps: tuple[int, ...] = ()
    #: params the runner sets: for an ``Experiment`` script, overrides of its own
    #: (``--set``, test-mode params); for a plain script, all of them (JSON values)
    params: dict[str, Any] | None = None
    #: an ``Experiment`` script: the version whose params ``params`` change (a version
    #: made by ``--grid`` has a name of its own); None: ``version``
    base_version: str | None = None
    #: a plain script's command-line arguments (``["--lr", "0.1"]``); None: an
    #: ``Experiment`` script (its hooks are called)
    argv: list[str] | None = None
    #: read metric points from the output lines (:mod:`mlbook.experiments.output`)
    output_metrics: bool = False
    #: regular expressions for those lines; empty: the built-in patterns
    output_patterns: tuple[str, ...] = ()
    #: the run's seed, applied by the child before the model hook (None: not seeded)
    seed: int | None = None
    #: which attempt at this run this is (1 for the first; a retried task counts up)
    attempt: int = 1
    #: file descriptor the child writes events to (local backend); None: no runner
    events_fd: int | None = None
    #: file descriptor the child reads flush acknowledgements from; None: no acks
    ack_fd: int | None = None
    #: the file the child makes its stdout and stderr (a child started before its job
    #: was known); None: the backend gave it them
    log: str | None = None


class Series(msgspec.Struct, frozen=True, array_like=True):
    """Points of one metric key, columnar: steps (int64), values and times (float64).

    The three byte strings are little-endian arrays of equal length; NaN and
    ±inf are ordinary values.
    """

    key: str
    steps: bytes
    values: bytes
    times: bytes


class Metrics(msgspec.Struct, frozen=True, array_like=True, tag="metrics"):
    """A batch of metric points, one :class:`Series` per key."""

    seq: int
    series: list[Series]


class Params(msgspec.Struct, frozen=True, array_like=True, tag="params"):
    """Params the script logged (``mlbook.log_params``): merged into the run's params."""

    seq: int
    params: dict[str, Any]


class Flush(msgspec.Struct, frozen=True, array_like=True, tag="flush"):
    """The child waits: acknowledge ``seq`` once everything before it is committed."""

    seq: int


class Progress(msgspec.Struct, frozen=True, array_like=True, tag="progress"):
    """Where ``run.iterate`` is: ``step`` of ``total`` (``None``: unknown length)."""

    seq: int
    step: int
    total: int | None


class Artifact(msgspec.Struct, frozen=True, array_like=True, tag="artifact"):
    """A file the run wrote (absolute ``path``); ``kind``: file, weights, checkpoint..."""

    seq: int
    path: str
    size: int
    sha256: str
    kind: str


class Files(msgspec.Struct, frozen=True, array_like=True, tag="files"):
    """Project files the run imported (absolute paths) and its top-level module names."""

    seq: int
    files: list[str]
    modules: list[str]


class End(msgspec.Struct, frozen=True, array_like=True, tag="end"):
    """The hooks returned (``completed``) or raised (``failed``, ``interrupted``)."""

    seq: int
    status: str
    metrics: dict[str, Any]
    error: str | None


class Warn(msgspec.Struct, frozen=True, array_like=True, tag="warn"):
    """A warning for the user (a refused metric value); the runner shows it once."""

    seq: int
    message: str


class ViewUsed(msgspec.Struct, frozen=True, array_like=True, tag="view"):
    """The run read its data through a saved view (``dataset``: absolute path)."""

    seq: int
    dataset: str
    view: str
    query: str
    boxes: str | None
    records_hash: str
    ids_hash: str
    count: int


class Exit(msgspec.Struct, frozen=True, array_like=True, tag="exit"):
    """Made by the backend: the child's process ended (always a job's last event).

    ``reason`` says why the backend ended it, when it did (a malformed event).
    """

    code: int
    signal: str | None = None
    reason: str | None = None


class Attempt(msgspec.Struct, frozen=True, array_like=True, tag="attempt"):
    """Made by a backend that retries: attempt ``attempt`` of the job started on ``host``.

    The events after it belong to that attempt (their ``seq`` starts again at 1);
    a backend sends it before the first event of every attempt it runs remotely,
    so the run records each attempt's host and process.
    """

    attempt: int
    host: str
    pid: int = 0
    device: str = ""


Event = (
    Metrics | Flush | Progress | Artifact | Params | Files | Warn | ViewUsed | End | Exit | Attempt
)

#: An acknowledgement on the ack pipe: the sequence number, little-endian uint64.
ACK = struct.Struct("<Q")

_FRAMES: Frames[Event] = Frames(Event)


def encode_event(event: Event) -> bytes:
    """One event as a length-prefixed msgpack frame (:mod:`mlbook._frames`)."""
    return _FRAMES.encode(event)


def decode_event(payload: bytes | memoryview) -> Event:
    """Decode one frame's payload (without its length prefix)."""
    return _FRAMES.decode(payload)


class Channel:
    """The child's end: write event frames to the runner, wait for flush acks.

    Whole frames are written under the caller's lock (see
    :class:`~mlbook.experiments.metrics.MetricBuffer`); a closed pipe (runner gone)
    raises ``BrokenPipeError``.
    """

    def __init__(self, events_fd: int | None = None, ack_fd: int | None = None) -> None:
        self.events_fd = events_fd
        self.ack_fd = ack_fd
        self._acked = 0

    @property
    def connected(self) -> bool:
        """True when a runner listens (False in a plain ``python script.py``)."""
        return self.events_fd is not None

    def send(self, event: Event) -> None:
        """Write one event frame (blocks while the pipe is full: backpressure)."""
        if self.events_fd is None:
            return
        data = memoryview(encode_event(event))
        while data:
            written = os.write(self.events_fd, data)
            data = data[written:]

    def wait_ack(self, seq: int) -> None:
        """Block until the runner acknowledged ``seq`` (no-op without an ack pipe).

        Raises:
            BrokenPipeError: the runner went away before acknowledging.
        """
        if self.ack_fd is None:
            return
        while self._acked < seq:
            data = os.read(self.ack_fd, ACK.size * 64)
            if not data:
                raise BrokenPipeError("the runner closed the acknowledgement pipe")
            usable = len(data) - len(data) % ACK.size
            for offset in range(0, usable, ACK.size):
                (acked,) = ACK.unpack_from(data, offset)
                self._acked = max(self._acked, acked)

    def close(self) -> None:
        """Close both descriptors (the runner sees end of file)."""
        for name in ("events_fd", "ack_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


class FrameReader(_frames.FrameReader[Event]):
    """The runner's end: split a byte stream into decoded events."""

    def __init__(self) -> None:
        super().__init__(_FRAMES)
