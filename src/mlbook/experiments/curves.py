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
from collections.abc import Sequence
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
    # x, y, low, high when every point came from decoded chunks (no merging needed)
    direct: tuple[list[Any], list[float | None], list[Any], list[Any]] | None = None


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
        grid = _Grid(low_step, span, buckets)

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
        # chunks that straddle buckets (or have irregular steps): decoded below
        straddling: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
        for row in db.execute(
            "SELECT rowid, run, key, count, first_step, stride, steps, vals, first_time, times"
            f" FROM metric_chunks WHERE {scope} AND NOT ({inside}) ORDER BY rowid",
            [*scope_args, *inside_args],
        ):
            if (row[1], row[2]) not in whole:
                straddling.setdefault((row[1], row[2]), []).append(row)
        whole_rows = []
        if whole:
            pairs = ", ".join("(?, ?)" for _ in whole)
            whole_rows = db.execute(
                "SELECT rowid, run, key, count, first_step, stride, steps, vals, first_time, times"
                f" FROM metric_chunks WHERE (run, key) IN (VALUES {pairs}) ORDER BY rowid",
                [item for pair in whole for item in pair],
            ).fetchall()
    for pair, rows in straddling.items():
        _fold_decoded(series[pair], rows, grid, x)
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
            if one.direct is not None:
                result.append(Curve(id_of[pk], key, *one.direct, one.count))
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


def _fold_decoded(series: _Series, rows: list[tuple[Any, ...]], grid: _Grid, x: XAxis) -> None:
    """Decode chunks (in logging order) and fold their points into the series' buckets.

    numpy does the per-bucket work: points sorted by bucket (stably, so logging
    order holds inside one), ``fmin``/``fmax.reduceat`` (NaN left out) and the
    last point of each bucket.
    """
    import numpy as np

    steps, values, times, where = [], [], [], []
    for rowid, _, _, count, first_step, stride, packed, vals, first_time, offsets in rows:
        if stride is not None:
            steps.append(first_step + stride * np.arange(count, dtype=np.int64))
        else:
            steps.append(np.frombuffer(packed, dtype="<i8").astype(np.int64))
        values.append(np.frombuffer(vals, dtype="<f8"))
        if x == "time":
            times.append(first_time + np.frombuffer(offsets, dtype="<f4").astype(np.float64))
        where.append(np.stack([np.full(count, rowid), np.arange(count)], axis=1))
    step = np.concatenate(steps)
    value = np.concatenate(values)
    position = np.concatenate(where)
    # the same arithmetic as _Grid.of and the SQL: (step - low) * n / span, truncated
    bucket = np.clip(((step - grid.low) * grid.n / grid.span).astype(np.int64), 0, grid.buckets - 1)
    order = np.argsort(bucket, kind="stable")
    sorted_buckets = bucket[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
    ends = np.r_[starts[1:], len(order)]
    with np.errstate(invalid="ignore"):
        lows = np.fmin.reduceat(value[order], starts)
        highs = np.fmax.reduceat(value[order], starts)
    last = order[ends - 1]
    xs = step[last] if x == "step" else np.concatenate(times)[last] - series.origin
    last_values = value[last]
    if not series.buckets:  # nothing from SQL to merge with: the arrays are the curve
        by_x = np.argsort(xs, kind="stable")
        series.direct = (
            xs[by_x].tolist(),
            [v if math.isfinite(v) else None for v in last_values[by_x].tolist()],
            [None if v != v else v for v in lows[by_x].tolist()],
            [None if v != v else v for v in highs[by_x].tolist()],
        )
        return
    cells = zip(
        sorted_buckets[starts].tolist(),
        lows.tolist(),
        highs.tolist(),
        map(tuple, position[last].tolist()),
        last_values.tolist(),
        xs.tolist(),
        strict=True,
    )
    for b, low, high, at, last_value, x_value in cells:
        cell = series.buckets.get(b)
        if cell is None:
            cell = series.buckets[b] = _Bucket()
        cell.add(None if low != low else low, None if high != high else high)
        cell.offer_last(at, last_value, x_value)


class _Grid:
    """``buckets`` equal buckets over the steps ``low .. low + span - 1``."""

    def __init__(self, low: int, span: float, buckets: int) -> None:
        self.low, self.span, self.buckets, self.n = low, span, buckets, float(buckets)

    def of(self, step: int) -> int:
        """The bucket of a step (steps outside the range go to the first or last bucket)."""
        return min(max(int((step - self.low) * self.n / self.span), 0), self.buckets - 1)

    def start(self, bucket: int) -> int:
        """The smallest step in ``bucket`` (the computed guess, corrected for rounding)."""
        step = self.low + math.ceil(bucket * self.span / self.n)
        while self.of(step - 1) >= bucket:
            step -= 1
        while self.of(step) < bucket:
            step += 1
        return step
