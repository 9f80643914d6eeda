"""Metric series in chunks: how a batch of one key's points becomes one store row.

A chunk holds the points of one key from one batch: values as little-endian
float64, times as float32 seconds after the chunk's first time, and steps
either as ``first_step + i * stride`` (no bytes at all, the common case) or as
int64. That is 12 bytes a point for regular steps, 20 otherwise. Beside the
bytes sit the chunk's summary (count, first and last step, min, max, last), so
tables and downsampled curves rarely decode a chunk. NaN and ±inf are stored
as they are; ``min``/``max`` leave NaN out (``None`` when every value is NaN).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Chunk", "chunk_of", "decode_points", "pack_series"]

_SWAP = sys.byteorder != "little"
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _array(code: str, data: bytes) -> array:  # type: ignore[type-arg]
    values = array(code)
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values


def _bytes(values: array) -> bytes:  # type: ignore[type-arg]
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One key's points from one batch, packed for the store."""

    key: str
    count: int
    first_step: int
    last_step: int
    stride: int | None
    steps: bytes | None
    values: bytes
    first_time: float
    last_time: float
    times: bytes
    min: float | None
    max: float | None
    last: float


def pack_series(key: str, steps_le: bytes, values_le: bytes, times_le: bytes) -> Chunk | None:
    """Pack one key's points as sent by a child (int64/float64/float64 arrays).

    Returns ``None`` for an empty or malformed series (lengths that disagree).
    """
    steps = _array("q", steps_le)
    values = _array("d", values_le)
    times = _array("d", times_le)
    count = len(steps)
    if not count or len(values) != count or len(times) != count:
        return None
    first, last_step = steps[0], steps[-1]
    step: int = steps[1] - first if count > 1 else 1
    regular = (
        step != 0
        and _INT64_MIN <= step <= _INT64_MAX
        and _INT64_MIN <= first + (count - 1) * step <= _INT64_MAX
        and (count <= 2 or array("q", range(first, first + count * step, step)) == steps)
    )
    stride = step if regular else None
    t0 = times[0]
    offsets = array("f", [t - t0 for t in times])
    finite = [v for v in values if v == v]
    return Chunk(
        key=key,
        count=count,
        first_step=first,
        last_step=last_step,
        stride=stride,
        steps=None if stride is not None else _bytes(steps),
        values=values_le if not _SWAP else _bytes(values),
        first_time=t0,
        last_time=times[-1],
        times=_bytes(offsets),
        min=min(finite) if finite else None,
        max=max(finite) if finite else None,
        last=values[-1],
    )


def chunk_of(
    key: str, steps: Sequence[int], values: Sequence[float], times: Sequence[float]
) -> Chunk | None:
    """A chunk from plain lists (an import, a migration, a test)."""
    return pack_series(
        key, _bytes(array("q", steps)), _bytes(array("d", values)), _bytes(array("d", times))
    )


def decode_points(
    count: int,
    first_step: int,
    stride: int | None,
    steps: bytes | None,
    values: bytes,
    first_time: float,
    times: bytes,
) -> tuple[list[int], list[float], list[float]]:
    """A stored chunk back as lists of steps, values and times (Unix seconds)."""
    if stride is not None:
        step_list = list(range(first_step, first_step + count * stride, stride))
    else:
        step_list = _array("q", steps or b"").tolist()
    value_list = _array("d", values).tolist()
    time_list = list(map(first_time.__add__, _array("f", times).tolist()))
    return step_list, value_list, time_list
