"""The child's outbox: buffered metric logging and every event it sends the runner.

``run.log`` appends to per-key lists under a lock (about a microsecond a
point); the buffer is sent as one :class:`~mlbook.experiments.contract.Metrics`
event every :data:`FLUSH_POINTS` points, and a background thread sends whatever
is waiting every :data:`FLUSH_SECONDS`, so a quiet loop loses at most that much
to a ``kill -9``. :meth:`Outbox.flush` sends, then waits until the runner has
committed the points (the flush acknowledgement). When the runner is slower
than the loop, the pipe fills and sending blocks: the loop slows down instead
of the runner's memory growing.

A value that is not a number (a string, ``None``, an array) or a step that is
not an integer is refused with one warning naming the key; NaN and ±inf are
values like any other.

Points read from output lines (:meth:`Outbox.log_output`) take the same way,
except for keys the script logs itself: those are not read from lines twice.
"""

from __future__ import annotations

import operator
import os
import sys
import threading
import time
import warnings
from array import array
from typing import Any

from mlbook.experiments.contract import (
    Artifact,
    Channel,
    End,
    Files,
    Flush,
    Metrics,
    Params,
    Progress,
    Series,
    ViewUsed,
    Warn,
)

__all__ = ["FLUSH_POINTS", "FLUSH_SECONDS", "MAX_KEY_LENGTH", "Outbox"]

FLUSH_POINTS = 4096
FLUSH_SECONDS = 0.2
MAX_KEY_LENGTH = 250

_INT64 = (-(1 << 63), (1 << 63) - 1)
_SWAP = sys.byteorder != "little"


def _packed(code: str, items: list[Any]) -> bytes:
    packed = array(code, items)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


class Outbox:
    """Everything a child sends the runner, in order, each event with its sequence number."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._send_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._series: dict[str, tuple[list[int], list[float], list[float]]] = {}
        self._count = 0
        self._seq = 0
        self._refused: set[str] = set()
        self._direct: set[str] = set()  # keys the script logged itself
        #: the last value sent of each key (a plain script's final metrics)
        self.last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.step = -1
        if channel.connected:
            os.register_at_fork(after_in_child=self._forked)

    # -- the hot path ----------------------------------------------------------------

    def log(self, step: Any, values: dict[str, Any]) -> None:
        """Buffer one point per value at ``step`` (default: the previous step + 1)."""
        if step is None:
            step = self.step + 1
        elif step.__class__ is not int:
            try:
                step = operator.index(step)
            except TypeError:
                self._refuse(
                    "step", f"run.log(step={step!r}): the step must be an integer; point dropped"
                )
                return
        if not _INT64[0] <= step <= _INT64[1]:
            self._refuse("step", f"run.log(step={step}): the step must fit in 64 bits")
            return
        self.step = step
        now = time.time()
        with self._buffer_lock:
            series = self._series
            for key, value in values.items():
                lists = series.get(key)
                if lists is None:
                    if not self._new_key(key):
                        continue
                    lists = series[key] = ([], [], [])
                if value.__class__ is not float:
                    if isinstance(value, (str, bytes)) or value is None:
                        self._refuse(key, f"run.log: {key}={value!r} is not a number; ignored")
                        continue
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        self._refuse(
                            key,
                            f"run.log: {key} got a {type(value).__name__}, not a number; ignored",
                        )
                        continue
                lists[0].append(step)
                lists[1].append(value)
                lists[2].append(now)
                self._count += 1
            full = self._count >= FLUSH_POINTS
        if full:
            self._send_points()
        elif self._thread is None and self._channel.connected:
            self._start_thread()

    def log_output(self, step: int, values: dict[str, float]) -> None:
        """Buffer points read from an output line (keys the script logs itself are skipped).

        The step is the line's own: it does not move the step ``log`` counts from.
        """
        if not _INT64[0] <= step <= _INT64[1]:
            return
        now = time.time()
        with self._buffer_lock:
            series = self._series
            for key, value in values.items():
                if key in self._direct or len(key) > MAX_KEY_LENGTH:
                    continue
                lists = series.get(key)
                if lists is None:
                    lists = series[key] = ([], [], [])
                lists[0].append(step)
                lists[1].append(value)
                lists[2].append(now)
                self._count += 1
            full = self._count >= FLUSH_POINTS
        if full:
            self._send_points()
        elif self._thread is None and self._channel.connected:
            self._start_thread()

    def _new_key(self, key: str) -> bool:
        self._direct.add(key)
        if not key or len(key) > MAX_KEY_LENGTH:
            shown = key if len(key) <= 40 else key[:40] + "..."
            self._refuse(
                key,
                f"run.log: metric name {shown!r} ({len(key)} characters) must have "
                f"1 to {MAX_KEY_LENGTH} characters; ignored",
            )
            return False
        return True

    def _refuse(self, key: str, message: str) -> None:
        """Warn once per key (in the child's output, and to the runner)."""
        if key in self._refused:
            return
        self._refused.add(key)
        from mlbook.errors import MlbookWarning

        warnings.warn(message, MlbookWarning, stacklevel=3)
        self.send(Warn, message)

    # -- sending ---------------------------------------------------------------------

    def send(self, kind: type[Any], *fields: Any) -> int:
        """Send one event ``kind(seq, *fields)``; returns its sequence number."""
        with self._send_lock:
            self._seq += 1
            self._channel.send(kind(self._seq, *fields))
            return self._seq

    def _send_points(self) -> None:
        with self._buffer_lock:
            if not self._count:
                return
            series, self._series, self._count = self._series, {}, 0
        batch = [
            Series(key, _packed("q", steps), _packed("d", values), _packed("d", times))
            for key, (steps, values, times) in series.items()
            if steps
        ]
        for key, (_steps, values, _times) in series.items():
            if values:
                self.last[key] = values[-1]
        self.send(Metrics, batch)

    def flush(self) -> None:
        """Send buffered points and wait until the runner has committed them."""
        self._send_points()
        if self._channel.ack_fd is not None:
            self._channel.wait_ack(self.send(Flush))

    def params(self, params: dict[str, Any]) -> None:
        """Report params the script logged (merged into the run's params)."""
        self.send(Params, params)

    def view(self, dataset: str, record: dict[str, Any]) -> None:
        """Report a saved view the run read its data through (``ViewUse.to_record()``)."""
        self._send_points()
        self.send(
            ViewUsed,
            dataset,
            record["view"],
            record["query"],
            record["boxes"],
            record["records_hash"],
            record["ids_hash"],
            record["count"],
        )

    def progress(self, step: int, total: int | None) -> None:
        """Report where ``run.iterate`` is."""
        self.send(Progress, step, total)

    def artifact(self, path: str, size: int, sha256: str, kind: str) -> None:
        """Report a file the run wrote."""
        self._send_points()  # the points logged before it come first
        self.send(Artifact, path, size, sha256, kind)

    def finish(
        self,
        files: list[str],
        modules: list[str],
        status: str,
        metrics: dict[str, Any],
        error: str | None,
    ) -> None:
        """The run's last events: remaining points, the files it used, its end."""
        self._stop.set()
        self._send_points()
        self.send(Files, files, modules)
        self.send(End, status, metrics, error)

    # -- the time-based flush ------------------------------------------------------------

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._flush_loop, name="mlbook-flush", daemon=True)
        self._thread.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self._send_points()
            except OSError:  # the runner is gone; the main thread will find out
                return

    def _forked(self) -> None:
        """In a process forked by the run (a data-loader worker): send nothing."""
        self._channel = Channel(None)
        self._send_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._thread = None
