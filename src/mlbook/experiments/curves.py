"""Metric curves of many runs, downsampled in SQL with every bucket's min and max kept.

A chart ``buckets`` pixels wide needs no more than one value a pixel, but a
spike must never vanish. So the step range of the chart is cut into
``buckets`` equal buckets, and for each series and bucket :func:`curves`
returns the last point (a real point: the line) and the minimum and maximum
(the band), i.e. at most twice the pixel width of numbers per series.

How it stays fast: a metric chunk (:mod:`mlbook.experiments.series`) already
carries its min, max and last value. Chunks with regular steps that fall inside
one bucket are aggregated by SQL (``GROUP BY`` bucket) without touching their
bytes; only chunks that straddle a bucket boundary, or have irregular steps,
are decoded, and then per bucket with C-level ``min``/``max`` over slices.
A series with at most ``2 * buckets`` points is returned as it is.

NaN and ±inf are values: they show as gaps (``None``) in ``y``, and min/max
leave NaN out, as the store's summaries do.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlbook.errors import ExperimentError
from mlbook.experiments.query import reading
from mlbook.experiments.series import decode_points

if TYPE_CHECKING:
    from mlbook.experiments.store import Store
    from mlbook.project import Project

__all__ = ["Curve", "curves"]

XAxis = Literal["step", "time"]
_MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Curve:
    """One metric of one run, ready to draw.

    Attributes:
        run: the run ID.
        key: the metric name.
        x: steps, or seconds since the run started (``x="time"``), ascending.
        y: the value at each x (the last point of each bucket); ``None`` for NaN/±inf.
        low, high: each bucket's min and max (``None`` when the series is not
            downsampled, so ``y`` holds every point).
        points: how many points the series has in the store.
    """

    run: str
    key: str
    x: list[float]
    y: list[float | None]
    low: list[float | None] | None
    high: list[float | None] | None
    points: int

    @property
    def downsampled(self) -> bool:
        """True when ``y`` holds one point a bucket rather than every point."""
        return self.low is not None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON)."""
        return {
            "run": self.run,
            "key": self.key,
            "x": self.x,
            "y": self.y,
            "low": self.low,
            "high": self.high,
            "points": self.points,
        }


@dataclass
class _Bucket:
    low: float | None = None
    high: float | None = None
    last_at: tuple[int, int] = (-1, -1)  # (chunk rowid, index in chunk) of the last point
    last: float = math.nan
    x: float = 0.0

    def add(self, low: float | None, high: float | None) -> None:
        if low is not None and (self.low is None or low < self.low):
            self.low = low
        if high is not None and (self.high is None or high > self.high):
            self.high = high

    def offer_last(self, at: tuple[int, int], value: float, x: float) -> None:
        if at > self.last_at:
            self.last_at, self.last, self.x = at, value, x


@dataclass
class _Series:
    run_pk: int
    key: str
    count: int
    origin: float  # the run's start time (x="time" is measured from it)
    buckets: dict[int, _Bucket] = field(default_factory=dict)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def curves(
    where: Project | Store | Path | str | None,
    runs: Sequence[str],
    keys: Sequence[str],
    *,
    buckets: int = 1000,
    x: XAxis = "step",
) -> list[Curve]:
    """Curves of ``keys`` for each of ``runs`` (run IDs), downsampled to ``buckets``.

    Args:
        where: where the store is (see :func:`~mlbook.experiments.query.reading`).
        runs: run IDs (full IDs).
        keys: metric names; a run without a key simply has no curve for it.
        buckets: at most this many buckets over the chart's step range (the
            chart's width in pixels); 1 to 10,000.
        x: ``step``, or ``time`` (seconds since each run started).

    Returns:
        One :class:`Curve` per (run, key) that has points, in the order asked.

    Raises:
        ExperimentError: an unknown run ID, or a bad ``x`` or ``buckets``.
    """
    if x not in ("step", "time"):
        raise ExperimentError(f"x axis {x!r}: use step or time")
    if not 1 <= buckets <= _MAX_BUCKETS:
        raise ExperimentError(f"buckets {buckets}: use 1 to {_MAX_BUCKETS}")
    runs, keys = list(dict.fromkeys(runs)), list(dict.fromkeys(keys))
    if not runs or not keys:
        return []
    with reading(where) as store:
        db = store.db
        run_marks, key_marks = ", ".join("?" * len(runs)), ", ".join("?" * len(keys))
        found = {
            run_id: (pk, started or created)
            for pk, run_id, started, created in db.execute(
                f"SELECT pk, id, started, created FROM runs WHERE id IN ({run_marks})", runs
            )
        }
        missing = [run_id for run_id in runs if run_id not in found]
        if missing:
            raise ExperimentError(f"no run {missing[0]!r}; list runs with `mlbook runs`")
        pks = [found[run_id][0] for run_id in runs]
        origin = dict(found.values())
        scope = f"run IN ({', '.join('?' * len(pks))}) AND key IN ({key_marks})"
        scope_args = [*pks, *keys]
        series = {
            (run, key): _Series(run, key, count, origin[run])
            for run, key, count in db.execute(
                f"SELECT run, key, count FROM metric_summary WHERE {scope}", scope_args
            )
        }
        low_step, high_step = db.execute(
            "SELECT min(min(first_step, last_step)), max(max(first_step, last_step))"
            f" FROM metric_chunks WHERE {scope}",
            scope_args,
        ).fetchone()
        if low_step is None:
            return []
        span = float(high_step - low_step + 1)
        n = float(buckets)

        def bucket_of(step: int) -> int:
            return min(max(int((step - low_step) * n / span), 0), buckets - 1)

        whole = {k for k, s in series.items() if s.count <= 2 * buckets}
        inside = (
            "stride IS NOT NULL AND CAST((first_step - ?) * ? / ? AS INTEGER)"
            " = CAST((last_step - ?) * ? / ? AS INTEGER)"
        )
        inside_args = [low_step, n, span, low_step, n, span]
        # chunks inside one bucket: SQL aggregates min/max; the bucket's last chunk gives
        # its last value (and, for x=time, the time of its last point: the last float32)
        for run, key, b, low, high, rowid, count, last, last_step, first_time, tail in db.execute(
            "WITH g AS (SELECT run, key, CAST((first_step - ?) * ? / ? AS INTEGER) AS b,"
            " min(min) AS low, max(max) AS high, max(rowid) AS lastrow FROM metric_chunks"
            f" WHERE {scope} AND {inside} GROUP BY run, key, b)"
            " SELECT g.run, g.key, g.b, g.low, g.high, c.rowid, c.count, c.last, c.last_step,"
            " c.first_time, substr(c.times, -4) FROM g JOIN metric_chunks c ON c.rowid = g.lastrow",
            [low_step, n, span, *scope_args, *inside_args],
        ):
            if (run, key) in whole:
                continue
            bucket = series[run, key].buckets.setdefault(b, _Bucket())
            bucket.add(low, high)
            when = first_time + struct.unpack("<f", tail)[0] - origin[run]
            bucket.offer_last(
                (rowid, count - 1),
                math.nan if last is None else last,
                last_step if x == "step" else when,
            )
        # chunks that straddle buckets (or have irregular steps), and whole small series
        for row in db.execute(
            "SELECT rowid, run, key, count, first_step, stride, steps, vals, first_time, times"
            f" FROM metric_chunks WHERE {scope} AND NOT ({inside}) ORDER BY rowid",
            [*scope_args, *inside_args],
        ):
            if (row[1], row[2]) not in whole:
                _add_chunk(series[row[1], row[2]], row, bucket_of, x)
        whole_rows = []
        if whole:
            pairs = ", ".join("(?, ?)" for _ in whole)
            whole_rows = db.execute(
                "SELECT rowid, run, key, count, first_step, stride, steps, vals, first_time, times"
                f" FROM metric_chunks WHERE (run, key) IN (VALUES {pairs}) ORDER BY rowid",
                [item for pair in whole for item in pair],
            ).fetchall()
    points: dict[tuple[int, str], list[tuple[float, float, int]]] = {}
    for rowid, run, key, count, first_step, stride, steps, vals, first_time, times in whole_rows:
        step_list, values, time_list = decode_points(
            count, first_step, stride, steps, vals, first_time, times
        )
        xs = step_list if x == "step" else [t - origin[run] for t in time_list]
        points.setdefault((run, key), []).extend(zip(xs, values, [rowid] * count, strict=True))
    result = []
    id_of = {pk: run_id for run_id, (pk, _) in found.items()}
    for pk in pks:
        for key in keys:
            one = series.get((pk, key))
            if one is None:
                continue
            if (pk, key) in whole:
                ordered = sorted(points.get((pk, key), []), key=lambda p: p[0])
                result.append(
                    Curve(
                        id_of[pk],
                        key,
                        [p[0] for p in ordered],
                        [_finite(p[1]) for p in ordered],
                        None,
                        None,
                        one.count,
                    )
                )
                continue
            cells = sorted(one.buckets.values(), key=lambda b: b.x)
            result.append(
                Curve(
                    id_of[pk],
                    key,
                    [b.x for b in cells],
                    [_finite(b.last) for b in cells],
                    [b.low for b in cells],
                    [b.high for b in cells],
                    one.count,
                )
            )
    return result


def _add_chunk(
    series: _Series, row: tuple[Any, ...], bucket_of: Callable[[int], int], x: XAxis
) -> None:
    """Fold a decoded chunk into its series' buckets, a slice per bucket."""
    rowid, _, _, count, first_step, stride, steps, vals, first_time, times = row
    step_list, values, time_list = decode_points(
        count, first_step, stride, steps, vals, first_time, times
    )
    segments = (
        _stride_segments(first_step, stride, count, bucket_of)
        if stride is not None
        else _point_segments(step_list, bucket_of)
    )
    for b, start, end in segments:
        part = values[start:end]
        total = sum(part)
        if total == total:  # no NaN (nor inf - inf): C-level min/max
            low: float | None = min(part)
            high: float | None = max(part)
        else:
            finite = [v for v in part if v == v]
            low, high = (min(finite), max(finite)) if finite else (None, None)
        bucket = series.buckets.setdefault(b, _Bucket())
        bucket.add(low, high)
        last = end - 1
        where = step_list[last] if x == "step" else time_list[last] - series.origin
        bucket.offer_last((rowid, last), values[last], where)


def _stride_segments(
    first: int, stride: int, count: int, bucket_of: Callable[[int], int]
) -> Iterator[tuple[int, int, int]]:
    """``(bucket, start, end)`` index ranges of a regular chunk (buckets are monotonic in i)."""
    start = 0
    while start < count:
        b = bucket_of(first + start * stride)
        low, high = start + 1, count
        while low < high:  # the first index past bucket b
            middle = (low + high) // 2
            if bucket_of(first + middle * stride) == b:
                low = middle + 1
            else:
                high = middle
        yield b, start, low
        start = low


def _point_segments(
    steps: list[int], bucket_of: Callable[[int], int]
) -> Iterator[tuple[int, int, int]]:
    """``(bucket, start, end)`` runs of consecutive points in one bucket (irregular steps)."""
    start = 0
    current = bucket_of(steps[0]) if steps else 0
    for index in range(1, len(steps)):
        b = bucket_of(steps[index])
        if b != current:
            yield current, start, index
            start, current = index, b
    if steps:
        yield current, start, len(steps)
