"""The child's side of the event channel, and the buffered metric logger.

A child process talks to the runner through one pipe: length-prefixed msgpack
frames, each an event ``[kind, ...]``. Metric points are buffered in the child
and sent in batches (every :data:`FLUSH_POINTS` points or :data:`FLUSH_SECONDS`
seconds, and at every status change), so ``run.log`` costs the training loop
about a microsecond. The parent writes each batch in one transaction.

Events (child -> parent):

- ``["metrics", [[run_pk, key, step, value, time], ...]]``
- ``["progress", step, total]``
- ``["artifact", path, size, sha256, kind]`` (``kind``: ``file``, ``weights``, ``checkpoint``)
- ``["files", [path, ...]]``: project files the run imported, absolute paths
- ``["end", status, metrics, error]``: the hooks returned (``completed``) or raised
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import msgspec

__all__ = [
    "FLUSH_POINTS",
    "FLUSH_SECONDS",
    "Channel",
    "FrameReader",
    "MetricBuffer",
]

FLUSH_POINTS = 2048
FLUSH_SECONDS = 0.2

_HEADER = struct.Struct("<I")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class Channel:
    """Write events to the runner over a file descriptor (blocking, whole frames)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, event: list[Any]) -> None:
        """Send one event; a closed channel (runner gone) raises ``BrokenPipeError``."""
        if self.fd is None:
            return
        payload = _encode(event)
        data = memoryview(_HEADER.pack(len(payload)) + payload)
        while data:
            written = os.write(self.fd, data)
            data = data[written:]

    def close(self) -> None:
        """Close the descriptor (the runner sees end of file)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class FrameReader:
    """Split a byte stream into decoded events (the runner's side)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        """Add bytes; yield every complete event they finish."""
        self._buffer += data
        buffer = self._buffer
        start = 0
        while len(buffer) - start >= 4:
            (size,) = _HEADER.unpack_from(buffer, start)
            end = start + 4 + size
            if end > len(buffer):
                break
            yield _decode(bytes(buffer[start + 4 : end]))
            start = end
        del buffer[:start]


class MetricBuffer:
    """Metric points waiting to be sent; :meth:`log` is the hot path."""

    __slots__ = ("_channel", "_last", "_points", "_run_pk", "step")

    def __init__(self, channel: Channel, run_pk: int) -> None:
        self._channel = channel
        self._run_pk = run_pk
        self._points: list[tuple[int, str, int, float, float]] = []
        self._last = time.monotonic()
        self.step = -1

    def log(self, step: int | None, values: dict[str, Any]) -> None:
        """Buffer one point per value at ``step`` (default: the previous step + 1)."""
        if step is None:
            step = self.step + 1
        self.step = step
        now = time.time()
        pk = self._run_pk
        append = self._points.append
        for key, value in values.items():
            append((pk, key, step, float(value), now))
        if len(self._points) >= FLUSH_POINTS or time.monotonic() - self._last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send buffered points now."""
        self._last = time.monotonic()
        if self._points:
            points, self._points = self._points, []
            self._channel.send(["metrics", points])
