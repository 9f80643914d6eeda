"""The Ray task's side of the ray backend: one attempt at one version, on a worker.

:func:`run_attempt` is the body of the streaming-generator task that
:mod:`mlbook.experiments.ray_backend` submits. On the worker it:

1. unpacks the version's code (a ``git archive`` zip of its run's before
   commit's tree, fetched from Ray's object store only when this node has not
   unpacked that tree yet) into a cache keyed by the tree, and the dataset
   when it was shipped (a cache keyed by its content listing);
2. runs the same child entry point as the local backend
   (``python -m mlbook.experiments._child``) through a
   :class:`~mlbook.experiments.backends.LocalBackend` on this node, its
   stdout/stderr going to the run's ``output.log`` on the worker (not to Ray's
   log forwarding), its environment seeded as the local backend seeds it;
3. yields :class:`Batch` es of the child's events, each at most
   :data:`BATCH_SECONDS` old or :data:`BATCH_EVENTS` long, and acknowledges a
   flush to the child once the driver has committed it: the driver writes the
   flush's sequence number into a :class:`FlushAcks` actor after its commit,
   and the task reads it back (so ``run.flush()`` means durable, as locally);
4. at the end, yields the run's output directory as a zip (when it is within
   the size limit) with the child's :class:`~mlbook.experiments.contract.Exit`.

Every batch carries the attempt number, the host and the worker's process ID,
so the driver records each attempt and where it ran. Paths in the events are
the worker's; the driver maps them back (:attr:`Batch.root`, :attr:`Batch.out`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from mlbook.experiments.contract import End, Event, Exit, Flush, RunSpec, encode_event

__all__ = [
    "BATCH_EVENTS",
    "BATCH_SECONDS",
    "Batch",
    "FlushAcks",
    "TaskOptions",
    "pack_dir",
    "run_attempt",
    "unpack_zip",
]

#: a batch is sent when its first event is this many seconds old...
BATCH_SECONDS = 0.5
#: ...or when it holds this many events
BATCH_EVENTS = 1000
_POLL = 0.05


class FlushAcks:
    """The driver's acknowledgements of committed flushes, by run attempt (a Ray actor).

    The driver calls :meth:`ack` once a batch's points are in SQLite; the task polls
    :meth:`get` while its child waits in ``run.flush()``.
    """

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}

    def ack(self, token: str, seq: int) -> None:
        """Flushes of ``token`` up to ``seq`` are committed."""
        if seq > self.acked.get(token, 0):
            self.acked[token] = seq

    def get(self, token: str) -> int:
        """The highest committed flush of ``token`` (0: none)."""
        return self.acked.get(token, 0)


def ack_token(run_id: str, attempt: int) -> str:
    """The key of one run attempt in :class:`FlushAcks`."""
    return f"{run_id}/{attempt}"


class TaskOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the driver tells a task besides the spec."""

    attempt: int
    #: the git tree of the run's code (the cache key of its unpacked files)
    code_key: str
    #: key of the shipped dataset (None: the dataset path is used as it is, or none)
    data_key: str | None = None
    #: the dataset's directory name under the shipped root
    data_name: str = ""
    max_output_size: int = 1 << 30
    #: where this node keeps unpacked code and data (empty: the temp dir's ``mlbook-ray``)
    cache_dir: str = ""


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the task's stream."""

    attempt: int
    host: str
    pid: int
    device: str
    #: the project root and the run's output directory on the worker
    root: str
    out: str
    #: the events, as length-prefixed frames (:func:`~mlbook.experiments.contract.encode_event`)
    frames: bytes = b""
    #: the last batch: the output directory as a zip (None: none, or over the limit)
    outputs: bytes | None = None
    #: the last batch: why the outputs stayed on the worker
    outputs_note: str = ""


def _acknowledge_committed(backend: Any, acks: Any, token: str, waiting: list[int]) -> list[int]:
    """Pass on to the child the flushes the driver has committed; returns those still waiting."""
    import ray

    try:
        committed = int(ray.get(acks.get.remote(token), timeout=5))
    except Exception:  # the driver (and its actor) is gone: the child keeps waiting, as locally
        return waiting
    for seq in waiting:
        if seq <= committed:
            backend.acknowledge(0, seq)
    return [seq for seq in waiting if seq > committed]


def _device() -> str:
    """The accelerator the task was given (Ray sets ``CUDA_VISIBLE_DEVICES``), or ``cpu``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return f"cuda:{visible}" if visible.strip() else "cpu"


def _cache_root(options: TaskOptions) -> Path:
    root = Path(options.cache_dir or os.path.join(tempfile.gettempdir(), "mlbook-ray"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def unpack_zip(data: bytes, target: Path) -> None:
    """Extract a zip into ``target``; a member that would land outside it is refused.

    Raises:
        ValueError: an absolute member name or one with ``..`` (nothing is written then).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        for name in names:
            parts = Path(name).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise ValueError(f"refusing zip member {name!r}: it leaves the target directory")
        target.mkdir(parents=True, exist_ok=True)
        for info in archive.infolist():
            path = target / info.filename
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode | 0o600)


def pack_dir(directory: Path, limit: int, prefix: str = "") -> tuple[bytes | None, int]:
    """``directory`` as a zip (stored, symbolic links left out), and its files' total size.

    Member names start with ``prefix`` (e.g. ``"digits/"``). Returns
    ``(None, total)`` when the files add up to more than ``limit`` bytes.
    """
    files: list[tuple[Path, str]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            total += path.stat().st_size
            files.append((path, prefix + path.relative_to(directory).as_posix()))
    if total > limit:
        return None, total
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path, name in files:
            archive.write(path, name)
    return buffer.getvalue(), total


def _cached(root: Path, kind: str, key: str, fetch: Any) -> Path:
    """``root/kind/key``, unpacked from ``fetch()`` (zip bytes) once per node."""
    target = root / kind / key
    if target.is_dir():
        return target
    staging = root / kind / f".{key}.{uuid.uuid4().hex}"
    try:
        unpack_zip(fetch(), staging)
        try:
            os.rename(staging, target)
        except OSError:  # another task on this node unpacked it first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch(refs: list[Any]) -> bytes:
    import ray

    data = ray.get(refs[0])
    assert isinstance(data, bytes)
    return data


def _moved(path: str | None, old: str, new: str) -> str | None:
    """``path`` under ``old`` re-rooted under ``new`` (None stays None)."""
    if path is None:
        return None
    relative = os.path.relpath(path, old)
    if relative == "." or relative.startswith(".."):
        return path
    return os.path.join(new, relative)


def run_attempt(
    spec_json: bytes,
    options: TaskOptions,
    code: list[Any],
    data: list[Any] | None,
    acks: Any,
) -> Iterator[bytes]:
    """Run one attempt at ``spec`` on this worker; yields encoded :class:`Batch` es.

    ``code`` and ``data`` hold one object reference each (wrapped in a list, so Ray
    does not fetch them unless this node needs them); ``acks`` is the driver's
    :class:`FlushAcks` actor.
    """
    from mlbook.experiments.backends import Job, LocalBackend

    spec = msgspec.json.decode(spec_json, type=RunSpec)
    cache = _cache_root(options)
    code_dir = _cached(cache, "code", options.code_key, lambda: _fetch(code))
    dataset_dir = spec.dataset_dir
    if data is not None and options.data_key:
        shipped = _cached(cache, "data", options.data_key, lambda: _fetch(data))
        dataset_dir = str(shipped / options.data_name)
    out_dir = cache / "runs" / spec.run_id / str(options.attempt)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    root = spec.project_root
    local = msgspec.structs.replace(
        spec,
        script=_moved(spec.script, root, str(code_dir)) or spec.script,
        models_dir=_moved(spec.models_dir, root, str(code_dir)) or spec.models_dir,
        project_root=str(code_dir),
        dir=str(out_dir),
        dataset_dir=dataset_dir,
        attempt=options.attempt,
    )
    header: dict[str, Any] = {
        "attempt": options.attempt,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": _device(),
        "root": str(code_dir),
        "out": str(out_dir),
    }
    encoder = msgspec.msgpack.Encoder()
    backend = LocalBackend()
    backend.submit(Job(key=0, spec=local, log_path=out_dir / "output.log"))
    yield encoder.encode(Batch(**header))  # the driver records the attempt's host now
    pending: list[Event] = []
    waiting: list[int] = []  # flushes sent to the driver, not yet committed there
    token = ack_token(spec.run_id, options.attempt)
    started = 0.0
    ended: Exit | None = None
    try:
        while ended is None:
            try:
                for _, events in backend.events(_POLL):
                    if not pending:
                        started = time.monotonic()
                    pending.extend(events)
            except KeyboardInterrupt:  # ray.cancel: the child ends as on Ctrl-C
                backend.interrupt(0)
                continue
            ended = next((e for e in pending if isinstance(e, Exit)), None)
            urgent = any(isinstance(e, Flush | End) for e in pending)
            old = pending and time.monotonic() - started >= BATCH_SECONDS
            if ended is None and (urgent or old or len(pending) >= BATCH_EVENTS):
                frames = b"".join(encode_event(e) for e in pending)
                yield encoder.encode(Batch(frames=frames, **header))
                waiting.extend(e.seq for e in pending if isinstance(e, Flush))
                pending = []
            if waiting:
                waiting = _acknowledge_committed(backend, acks, token, waiting)
    finally:
        if ended is None:
            backend.kill(0)
    outputs, total = pack_dir(out_dir, options.max_output_size)
    note = ""
    if outputs is None:
        note = (
            f"the run's outputs ({total:,} bytes) exceed [ray] max_output_size "
            f"({options.max_output_size:,} bytes); they stay on {header['host']} in {out_dir}"
        )
    frames = b"".join(encode_event(e) for e in pending)
    yield encoder.encode(Batch(frames=frames, outputs=outputs, outputs_note=note, **header))
    if outputs is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(out_dir.parent if len(os.listdir(out_dir.parent)) == 1 else out_dir)
