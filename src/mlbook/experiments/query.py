"""Reading the run store: :func:`runs`, :func:`get_run`, metric series, filters.

Every reader of the store goes through this module (the CLI, export, the
journal, the UI), on a read-only connection (:func:`reading`); the writes are
all in :mod:`mlbook.experiments.store`.

Filters are small expressions, ``acc>0.9``, ``loss<=0.1``, ``params.lr=0.001``,
``status=failed``: a bare name is a run column when there is one (id,
experiment, version, mode, status, host) and otherwise a final metric;
``params.NAME`` and ``metrics.NAME`` are explicit. They compile to SQL, so
filtering 100,000 runs takes milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat, starmap
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import orjson

from mlbook.errors import ExperimentError, StoreError

if TYPE_CHECKING:
    from mlbook.experiments.store import Store
    from mlbook.project import Project

__all__ = [
    "SUMMARY_STATS",
    "TABLE_FIELDS",
    "Artifact",
    "DataStep",
    "ExperimentRow",
    "Filter",
    "Point",
    "RunDataset",
    "RunList",
    "RunRecord",
    "RunView",
    "StepDataset",
    "StoredAttempt",
    "StoredChunk",
    "StoredRun",
    "StoredSummary",
    "Summary",
    "TableChoices",
    "TableColumn",
    "TablePage",
    "TableRow",
    "UsedFile",
    "data_steps",
    "dataset_runs",
    "experiment_ids",
    "experiment_rows",
    "get_run",
    "known_run_ids",
    "latest_weights",
    "metric_keys",
    "metric_series",
    "metric_summaries",
    "parse_filter",
    "reading",
    "run_artifacts",
    "run_attempts",
    "run_datasets",
    "run_files",
    "run_table",
    "run_views",
    "run_with_artifact",
    "runs",
    "stored_runs",
    "table_choices",
    "table_column",
]

_COLUMNS = ("id", "experiment", "version", "mode", "status", "host")
_TIME_COLUMNS = ("created", "started", "ended")
_FILTER = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")
_NAME = re.compile(r"^[A-Za-z_][\w\-]*$")


@dataclass(frozen=True)
class Filter:
    """One parsed filter expression: ``field op value``."""

    field: str
    op: str
    value: float | str

    def column(self) -> str:
        """The SQL expression of the field (a column, or a JSON path into params/metrics)."""
        if self.field in _COLUMNS or self.field in _TIME_COLUMNS:
            return self.field
        source, _, name = self.field.partition(".")
        if not name:
            source, name = "metrics", self.field
        return f"json_extract({source}, '$.\"{name}\"')"

    def sql(self) -> tuple[str, Any]:
        """The SQL condition (with one ``?``) and its argument.

        A number compares with numbers only: a NaN metric (stored as ``"nan"``)
        matches no ``acc>0.9``. (SQLite orders every number before every string,
        so ``< ''`` keeps the numbers; ``<``, ``=`` never match a string anyway.)
        """
        op = "=" if self.op == "==" else self.op
        column = self.column()
        numeric = isinstance(self.value, float) and column.startswith("json_extract")
        if numeric and op in (">", ">="):
            return f"({column} {op} ? AND {column} < '')", self.value
        return f"{column} {op} ?", self.value


def parse_filter(text: str) -> Filter:
    """Parse ``acc>0.9``, ``params.lr=1e-3``, ``status!=failed``.

    Raises:
        ExperimentError: not of the form NAME OP VALUE (OP one of = != < <= > >=).
    """
    match = _FILTER.match(text)
    if not match or not match[3] or match[3][0] in "<>=!":
        raise ExperimentError(
            f"filter {text!r}: expected NAME OP VALUE with OP one of = != < <= > >= "
            "(e.g. acc>0.9, params.lr=0.001, status=failed)"
        )
    name, op, raw = match[1], match[2], match[3]
    source, _, rest = name.partition(".")
    if "." in name and (source not in ("params", "metrics") or not _NAME.match(rest)):
        raise ExperimentError(
            f"filter {text!r}: {name!r} is not a field; use a metric name, "
            "params.NAME or metrics.NAME"
        )
    value: float | str
    try:
        value = float(raw)
    except ValueError:
        value = raw.strip("'\"")
    return Filter(name, op, value)


class RunRecord(msgspec.Struct, frozen=True, dict=True):
    """One run as stored, decoded from the ``runs`` columns of the same names.

    Times are Unix seconds; paths are relative to the project root. The JSON
    columns (``params``, ``metrics``, ``packages``) are parsed on first use.
    """

    pk: int
    id: str
    experiment: str
    version: str
    mode: str
    status: str
    created: float
    started: float | None
    ended: float | None
    host: str
    pid: int | None
    runner_pid: int | None
    params_json: str
    metrics_json: str
    error: str | None
    outputs: str
    weights: str | None
    resumed_from: str | None
    commit_before: str | None
    commit_after: str | None
    commit_reason: str | None
    data_version: str | None
    python: str | None
    packages_json: str | None

    @functools.cached_property
    def params(self) -> dict[str, Any]:
        """The version's hyper-parameters."""
        value: dict[str, Any] = orjson.loads(self.params_json)
        return value

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        """Final metrics (what the hooks returned; NaN and ±inf as floats)."""
        from mlbook.experiments.store import NON_FINITE

        value: dict[str, Any] = orjson.loads(self.metrics_json)
        for key, item in value.items():
            if isinstance(item, str) and item in NON_FINITE:
                value[key] = NON_FINITE[item]
        return value

    @functools.cached_property
    def packages(self) -> dict[str, str] | None:
        """Package versions the run used (provenance)."""
        if not self.packages_json:
            return None
        value: dict[str, str] = orjson.loads(self.packages_json)
        return value

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (``None`` while running)."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON output): the columns, JSON ones parsed, and the duration."""
        data = {
            name: getattr(self, name)
            for name in (field.removesuffix("_json") for field in self.__struct_fields__)
            if name not in ("pk", "runner_pid")
        }
        data["duration"] = self.duration
        return data

    def __repr__(self) -> str:
        return f"RunRecord({self.id} {self.experiment}/{self.version} {self.status})"


# The SELECT list is the struct's own field list: a column and its field share a name.
_SELECT = (
    "SELECT "
    + ", ".join(
        f"{name.removesuffix('_json')} AS {name}" if name.endswith("_json") else name
        for name in RunRecord.__struct_fields__
    )
    + " FROM runs"
)
_HOST = socket.gethostname()


def _record(row: tuple[Any, ...]) -> RunRecord:
    return _checked(RunRecord(*row))


def _checked(record: RunRecord) -> RunRecord:
    """A ``running`` record whose runner is gone (this host) reads as ``crashed``."""
    if record.status == "running" and record.runner_pid and record.host == _HOST:
        from mlbook.experiments.store import crashed_error, runner_alive

        if not runner_alive(record.runner_pid):  # read-only: the next writer records it
            record = msgspec.structs.replace(
                record, status="crashed", error=crashed_error(record.runner_pid)
            )
    return record


class RunList(list[RunRecord]):
    """A list of runs with a :meth:`to_pandas` view."""

    def to_pandas(self) -> Any:
        """A pandas DataFrame: run columns plus ``params.*`` and ``metrics.*`` columns.

        Raises:
            ExperimentError: pandas is not installed.
        """
        import importlib

        try:
            pd: Any = importlib.import_module("pandas")
        except ImportError as exc:
            raise ExperimentError(
                "RunList.to_pandas() needs pandas; install it with `pip install pandas`"
            ) from exc
        rows = []
        for run in self:
            row = {k: v for k, v in run.to_dict().items() if k not in ("params", "metrics")}
            row.update({f"params.{k}": v for k, v in run.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)


@contextlib.contextmanager
def reading(where: Project | Store | Path | str | None = None) -> Iterator[Store]:
    """A read-only store for ``where`` (a project, store, store file or project directory).

    An open :class:`Store` is used as it is and left open; anything else is
    opened read-only (default: the project around the current directory) and
    closed at the end. Query errors become one :class:`StoreError` line.
    """
    from mlbook.experiments.store import STORE_FILE, Store
    from mlbook.project import Project

    if isinstance(where, Store):
        store, owned = where, False
    else:
        if where is None:
            where = Project.find()
        if isinstance(where, Project):
            path = where.state_dir / STORE_FILE
        else:
            path = Path(where)
            if path.is_dir():
                path = Project.find(path).state_dir / STORE_FILE
        store, owned = Store.open(path, readonly=True), True
    try:
        yield store
    except sqlite3.Error as exc:
        raise StoreError(f"{store.path}: query failed ({exc})") from exc
    finally:
        if owned:
            store.close()


def runs(
    where: Project | Store | Path | str | None = None,
    *,
    experiment: str | list[str] | None = None,
    version: str | list[str] | None = None,
    status: str | list[str] | None = None,
    mode: str | None = None,
    filters: list[str] | tuple[str, ...] = (),
    sort: str | None = None,
    limit: int | None = None,
) -> RunList:
    """Runs from the store, newest first.

    Args:
        where: a project, an open store, a store file or a project directory
            (default: the project around the current directory).
        experiment, version, status: keep runs matching (one value or a list).
        mode: ``run`` or ``export`` (test runs are never stored).
        filters: expressions like ``acc>0.9`` (see :func:`parse_filter`); all must hold.
        sort: a field to sort by (``acc``, ``created``, ``params.lr``); ``-acc`` sorts
            descending. Default: newest first.
        limit: at most this many runs.

    Raises:
        ExperimentError: a bad filter or sort field.
    """
    conditions: list[str] = []
    args: list[Any] = []
    for column, wanted in (("experiment", experiment), ("version", version), ("status", status)):
        if wanted:
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            conditions.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    if mode:
        conditions.append("mode = ?")
        args.append(mode)
    for text in filters:
        condition, value = parse_filter(text).sql()
        conditions.append(condition)
        args.append(value)
    sql = _SELECT
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += " ORDER BY " + _order(sort)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with reading(where) as store:
        rows = store.db.execute(sql, args).fetchall()
    found = RunList(starmap(RunRecord, rows))
    for index, record in enumerate(found):
        if record.status == "running":  # rare: check whether its runner is still alive
            found[index] = _checked(record)
    return found


def _order(sort: str | None) -> str:
    if not sort:
        return "created DESC, pk DESC"
    descending = sort.startswith("-")
    name = sort.lstrip("-+")
    column = parse_filter(f"{name}=0").column()
    return f"{column} {'DESC' if descending else 'ASC'}, pk DESC"


def get_run(where: Project | Store | Path | str | None, run_id: str) -> RunRecord:
    """The run ``run_id``; a unique prefix of the ID is enough.

    Raises:
        ExperimentError: no such run, or the prefix matches several runs.
    """
    with reading(where) as store:
        rows = store.db.execute(
            _SELECT + " WHERE id = ? OR id LIKE ? ORDER BY id LIMIT 3",
            (run_id, run_id.replace("%", "").replace("_", "") + "%"),
        ).fetchall()
    records = [_record(row) for row in rows]
    exact = [r for r in records if r.id == run_id]
    if exact:
        return exact[0]
    if not records:
        raise ExperimentError(f"no run {run_id!r}; list runs with `mlbook runs`")
    if len(records) > 1:
        raise ExperimentError(f"run ID prefix {run_id!r} is ambiguous; give more characters")
    return records[0]


class Point(NamedTuple):
    """One metric point: step, value (NaN and ±inf kept) and time (Unix seconds)."""

    step: int
    value: float
    time: float


class Summary(msgspec.Struct, frozen=True):
    """A metric of one run at a glance: points logged, step range, min, max, last value.

    ``min``/``max`` leave NaN out (``None`` when every value was NaN); ``last``
    is NaN when the last value logged was.
    """

    count: int
    first_step: int
    last_step: int
    min: float | None
    max: float | None
    last: float
    last_time: float


def metric_series(
    where: Project | Store | Path | str | None,
    run: RunRecord | str,
    keys: Sequence[str] | None = None,
    *,
    start: int | None = None,
    end: int | None = None,
) -> dict[str, list[Point]]:
    """Metric series of a run: key -> points in logging order.

    Args:
        where: where the store is (see :func:`reading`).
        run: a run or a run ID.
        keys: only these metrics (default: all).
        start, end: only points with ``start <= step <= end``.
    """
    from mlbook.experiments.series import decode_points

    sql = (
        "SELECT key, count, first_step, stride, steps, vals, first_time, times FROM metric_chunks"
        " WHERE run = ?"
    )
    with reading(where) as store:
        record = run if isinstance(run, RunRecord) else get_run(store, run)
        args: list[Any] = [record.pk]
        if keys is not None:
            sql += f" AND key IN ({', '.join('?' * len(keys))})"
            args.extend(keys)
        if start is not None:
            sql += " AND last_step >= ? "
            args.append(start)
        if end is not None:
            sql += " AND first_step <= ?"
            args.append(end)
        rows = store.db.execute(sql + " ORDER BY rowid", args).fetchall()
    series: dict[str, list[Point]] = {}
    low = -(1 << 63) if start is None else start
    high = (1 << 63) if end is None else end
    for key, count, first_step, stride, steps, values, first_time, times in rows:
        columns = decode_points(count, first_step, stride, steps, values, first_time, times)
        rows_of_chunk: Iterable[tuple[int, float, float]] = zip(*columns, strict=True)
        if not (low <= min(columns[0]) and max(columns[0]) <= high):  # partly in range
            rows_of_chunk = filter(lambda row: low <= row[0] <= high, rows_of_chunk)
        # tuple.__new__ builds the named tuples without a Python-level call each
        series.setdefault(key, []).extend(map(_new_tuple, repeat(Point), rows_of_chunk))
    return series


_new_tuple = tuple.__new__


def metric_summaries(
    where: Project | Store | Path | str | None, run: RunRecord | str
) -> dict[str, Summary]:
    """Every metric of a run at a glance (no series is read): key -> :class:`Summary`."""
    with reading(where) as store:
        record = run if isinstance(run, RunRecord) else get_run(store, run)
        rows = store.db.execute(
            "SELECT key, count, first_step, last_step, min, max, last, last_time"
            " FROM metric_summary WHERE run = ? ORDER BY key",
            (record.pk,),
        ).fetchall()
    return {
        key: Summary(count, first, last_step, low, high, float("nan") if last is None else last, t)
        for key, count, first, last_step, low, high, last, t in rows
    }


class Artifact(NamedTuple):
    """A file a run wrote: path (root-relative), size, sha256 and kind."""

    path: str
    size: int
    sha256: str
    kind: str


class UsedFile(NamedTuple):
    """A project file a run imported: path (root-relative), size and sha256."""

    path: str
    size: int
    sha256: str


def run_artifacts(where: Project | Store | Path | str | None, run_id: str) -> list[Artifact]:
    """Files a run wrote, by path."""
    with reading(where) as store:
        rows = store.db.execute(
            "SELECT path, size, sha256, kind FROM artifacts WHERE run_id = ? ORDER BY path",
            (run_id,),
        ).fetchall()
    return [Artifact(*row) for row in rows]


def run_files(where: Project | Store | Path | str | None, run_id: str) -> list[UsedFile]:
    """Project files a run imported, by path."""
    with reading(where) as store:
        rows = store.db.execute(
            "SELECT path, size, sha256 FROM run_files WHERE run_id = ? ORDER BY path", (run_id,)
        ).fetchall()
    return [UsedFile(*row) for row in rows]


def run_attempts(where: Project | Store | Path | str | None, run_id: str) -> list[StoredAttempt]:
    """A run's attempts, first to last: each one's host and process (a remote backend retries)."""
    with reading(where) as store:
        rows = store.db.execute(
            "SELECT a.attempt, a.host, a.pid, a.started, a.ended, a.last_seq FROM attempts a"
            " JOIN runs r ON r.pk = a.run WHERE r.id = ? ORDER BY a.attempt",
            (run_id,),
        ).fetchall()
    return [StoredAttempt(*row) for row in rows]


def latest_weights(
    where: Project | Store | Path | str | None, experiment: str, version: str
) -> str | None:
    """Weights (root-relative) of the newest completed run of a version, if any."""
    with reading(where) as store:
        row = store.db.execute(
            "SELECT weights FROM runs WHERE experiment = ? AND version = ? AND mode = 'run'"
            " AND status = 'completed' AND weights IS NOT NULL ORDER BY created DESC LIMIT 1",
            (experiment, version),
        ).fetchone()
    return None if row is None else str(row[0])


def run_with_artifact(
    where: Project | Store | Path | str | None, sha256: str, kinds: Sequence[str]
) -> str | None:
    """The newest run that recorded a file with this sha256 (of one of ``kinds``)."""
    with reading(where) as store:
        row = store.db.execute(
            "SELECT a.run_id FROM artifacts a JOIN runs r ON r.id = a.run_id"
            f" WHERE a.sha256 = ? AND a.kind IN ({', '.join('?' * len(kinds))})"
            " ORDER BY r.created DESC LIMIT 1",
            (sha256, *kinds),
        ).fetchone()
    return None if row is None else str(row[0])


# ---------------------------------------------------------------- the runs table (mlbook ui)

#: Run fields a table column may show, by name -> SQL expression.
TABLE_FIELDS: dict[str, str] = {
    "id": "id",
    "experiment": "experiment",
    "version": "version",
    "mode": "mode",
    "status": "status",
    "host": "host",
    "created": "created",
    "started": "started",
    "ended": "ended",
    "duration": "(ended - started)",
    "commit_before": "commit_before",
    "commit_after": "commit_after",
    "data_version": "data_version",
    "error": "error",
}
#: Per-series summary statistics a column may show (``last.loss``, ``min.loss``, ``max.loss``).
SUMMARY_STATS = ("last", "min", "max")


@dataclass(frozen=True)
class TableColumn:
    """One column of the runs table, named as in URLs.

    ``status`` (a run field, see :data:`TABLE_FIELDS`), ``params.lr`` (a
    hyper-parameter), ``metrics.acc`` or ``acc`` (a final metric), or ``last.loss``,
    ``min.loss``, ``max.loss`` (from the metric summary, no series is read).
    """

    name: str
    expression: str
    args: tuple[Any, ...] = ()


def table_column(name: str) -> TableColumn:
    """Parse a column name (see :class:`TableColumn`).

    Raises:
        ExperimentError: an unknown field or a malformed name.
    """
    if name in TABLE_FIELDS:
        return TableColumn(name, TABLE_FIELDS[name])
    if _NAME.match(name):  # a bare name is a final metric, as in filters
        name = f"metrics.{name}"
    source, _, key = name.partition(".")
    if source in ("params", "metrics") and _NAME.match(key):
        return TableColumn(name, f"json_extract({source}, '$.\"{key}\"')")
    if source in SUMMARY_STATS and key:
        return TableColumn(
            name,
            f"(SELECT {source} FROM metric_summary WHERE run = runs.pk AND key = ?)",
            (key,),
        )
    raise ExperimentError(
        f"column {name!r}: not a run field ({', '.join(TABLE_FIELDS)}), params.NAME, "
        "metrics.NAME, last.KEY, min.KEY or max.KEY"
    )


class TableRow(msgspec.Struct, frozen=True):
    """One run in a table page: its ID, status and the chosen columns' values."""

    pk: int
    id: str
    status: str
    values: dict[str, Any]


class TablePage(msgspec.Struct, frozen=True):
    """One page of the runs table.

    ``total`` counts every run the filters match; ``next`` is the cursor of the
    following page (``None`` on the last one), passed back as ``after``.
    """

    columns: list[str]
    rows: list[TableRow]
    total: int
    sort: str
    next: str | None


_CURSOR = msgspec.json.Decoder(tuple[float | int | str | None, int])


def _encode_cursor(value: Any, pk: int) -> str:
    import base64

    return base64.urlsafe_b64encode(orjson.dumps([value, pk])).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[Any, int]:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _CURSOR.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise ExperimentError(
            f"page cursor {text[:40]!r} is not valid; start again from the first page"
        ) from exc


def _keyset(order: TableColumn, descending: bool, value: Any, pk: int) -> tuple[str, list[Any]]:
    """The condition for rows after ``(value, pk)`` in ``ORDER BY key, pk`` (NULLs sort lowest)."""
    key, key_args = order.expression, list(order.args)
    if descending:
        if value is None:
            return f"({key} IS NULL AND pk < ?)", [*key_args, pk]
        return (
            f"({key} < ? OR ({key} = ? AND pk < ?) OR {key} IS NULL)",
            [*key_args, value, *key_args, value, pk, *key_args],
        )
    if value is None:
        return f"({key} IS NOT NULL OR pk > ?)", [*key_args, pk]
    return f"({key} > ? OR ({key} = ? AND pk > ?))", [*key_args, value, *key_args, value, pk]


def run_table(
    where: Project | Store | Path | str | None = None,
    *,
    columns: Sequence[str] = ("experiment", "version", "status", "created", "duration"),
    filters: Sequence[str] = (),
    sort: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> TablePage:
    """One page of runs with the chosen columns, filtered and sorted in SQL (keyset paging).

    Args:
        where: where the store is (see :func:`reading`).
        columns: column names (see :class:`TableColumn`); ``id`` and ``status`` always come.
        filters: expressions as in :func:`runs` (``acc>0.9``, ``params.lr=0.001``).
        sort: a column name, ``-`` in front for descending (default ``-created``).
        after: the ``next`` cursor of the previous page.
        limit: rows per page (1 to 1,000).

    Raises:
        ExperimentError: a bad column, filter, sort field or cursor.
    """
    chosen = [table_column(name) for name in dict.fromkeys(columns)]
    sort = sort or "-created"
    descending = sort.startswith("-")
    order = table_column(sort.lstrip("-+"))
    conditions: list[str] = []
    args: list[Any] = []
    for text in filters:
        condition, value = parse_filter(text).sql()
        conditions.append(condition)
        args.append(value)
    count_sql = "SELECT count(*) FROM runs" + (
        " WHERE " + " AND ".join(conditions) if conditions else ""
    )
    count_args = list(args)
    if after:
        condition, keyset_args = _keyset(order, descending, *_decode_cursor(after))
        conditions.append(condition)
        args.extend(keyset_args)
    select = ", ".join(
        ["pk", "id", "status", "host", "runner_pid", order.expression]
        + [c.expression for c in chosen]
    )
    select_args = [*order.args, *(a for c in chosen for a in c.args)]
    direction = "DESC" if descending else "ASC"
    sql = f"SELECT {select} FROM runs"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += f" ORDER BY {order.expression} {direction}, pk {direction} LIMIT ?"
    limit = max(1, min(int(limit), 1000))
    with reading(where) as store:
        found = store.db.execute(sql, [*select_args, *args, *order.args, limit + 1]).fetchall()
        total = store.db.execute(count_sql, count_args).fetchone()[0]
    rows = []
    for pk, run_id, status, host, runner_pid, _, *values in found[:limit]:
        if status == "running" and runner_pid and host == _HOST:
            from mlbook.experiments.store import runner_alive

            if not runner_alive(runner_pid):
                status = "crashed"
        row = dict(zip((c.name for c in chosen), values, strict=True))
        if "status" in row:
            row["status"] = status
        rows.append(TableRow(pk, run_id, status, row))
    following = None
    if len(found) > limit:
        last = found[limit - 1]
        following = _encode_cursor(last[5], last[0])
    return TablePage([c.name for c in chosen], rows, total, sort, following)


class TableChoices(msgspec.Struct, frozen=True):
    """What the runs table can show: param names, final metric names, series keys."""

    params: list[str]
    metrics: list[str]
    series: list[str]

    def columns(self) -> list[str]:
        """Every column name, run fields first."""
        return [
            *TABLE_FIELDS,
            *(f"params.{name}" for name in self.params),
            *(f"metrics.{name}" for name in self.metrics),
            *(f"{stat}.{key}" for key in self.series for stat in SUMMARY_STATS),
        ]


def table_choices(where: Project | Store | Path | str | None = None) -> TableChoices:
    """The param names, final metric names and series keys found in the store, sorted."""
    with reading(where) as store:
        names = [
            [
                row[0]
                for row in store.db.execute(
                    f"SELECT DISTINCT j.key FROM runs, json_each(runs.{source}) j ORDER BY 1"
                )
            ]
            for source in ("params", "metrics")
        ]
        series = [r[0] for r in store.db.execute("SELECT DISTINCT key FROM metric_summary")]
    return TableChoices(names[0], names[1], sorted(series))


def metric_keys(where: Project | Store | Path | str | None, run_ids: Sequence[str]) -> list[str]:
    """The metric series keys any of ``run_ids`` logged, sorted."""
    if not run_ids:
        return []
    with reading(where) as store:
        rows = store.db.execute(
            "SELECT DISTINCT s.key FROM metric_summary s JOIN runs r ON r.pk = s.run"
            f" WHERE r.id IN ({', '.join('?' * len(run_ids))}) ORDER BY s.key",
            list(run_ids),
        ).fetchall()
    return [row[0] for row in rows]


# -- whole runs, as they travel between stores (mlbook.transfer) ---------------------------


class StoredChunk(msgspec.Struct, frozen=True):
    """One ``metric_chunks`` row as stored, blobs as they are (the run left out)."""

    key: str
    attempt: int
    count: int
    first_step: int
    last_step: int
    stride: int | None
    steps: bytes | None
    vals: bytes
    first_time: float
    times: bytes
    min: float | None
    max: float | None
    last: float | None


class StoredSummary(msgspec.Struct, frozen=True):
    """One ``metric_summary`` row as stored (the run left out)."""

    key: str
    count: int
    first_step: int
    last_step: int
    min: float | None
    max: float | None
    last: float | None
    last_time: float


class StoredAttempt(msgspec.Struct, frozen=True):
    """One ``attempts`` row as stored (the run left out)."""

    attempt: int
    host: str
    pid: int | None
    started: float
    ended: float | None
    last_seq: int


class ExperimentRow(NamedTuple):
    """One ``experiments`` row: id, script (root-relative), title."""

    id: str
    script: str
    title: str


class StoredRun(msgspec.Struct, frozen=True):
    """A run with every row the store holds about it, to copy it into another store.

    ``record.pk`` is the source store's own key: the run ID is what identifies a
    run across stores. :meth:`content_hash` covers what a user sees of the run
    (its row, metric chunks, artifacts and used files), not the bookkeeping
    (``pk``, attempts, summaries), so the same run has the same hash in every store.
    """

    record: RunRecord
    chunks: list[StoredChunk] = msgspec.field(default_factory=list)
    summaries: list[StoredSummary] = msgspec.field(default_factory=list)
    attempts: list[StoredAttempt] = msgspec.field(default_factory=list)
    artifacts: list[Artifact] = msgspec.field(default_factory=list)
    files: list[UsedFile] = msgspec.field(default_factory=list)

    @property
    def id(self) -> str:
        """The run ID."""
        return self.record.id

    def content_hash(self) -> str:
        """The sha256 (hex) of the run's content, the same in every store that holds it."""
        import hashlib

        columns = msgspec.structs.astuple(self.record)[1:]  # without pk
        data = msgspec.msgpack.encode((columns, self.chunks, self.artifacts, self.files))
        return hashlib.sha256(data).hexdigest()


_BATCH = 500


def stored_runs(
    where: Project | Store | Path | str | None, run_ids: Sequence[str]
) -> list[StoredRun]:
    """The runs ``run_ids`` (full IDs) with all their rows, in the order given.

    IDs the store does not hold are left out. A run still ``running`` is read as
    it is stored (no crash detection: callers copy only finished runs).
    """
    found: dict[str, StoredRun] = {}
    with reading(where) as store:
        db = store.db
        for start in range(0, len(run_ids), _BATCH):
            ids = list(run_ids[start : start + _BATCH])
            marks = ", ".join("?" * len(ids))
            rows = db.execute(f"{_SELECT} WHERE id IN ({marks})", ids).fetchall()
            records = {row[1]: RunRecord(*row) for row in rows}  # row[1]: the id
            if not records:
                continue
            pks = {record.pk: record.id for record in records.values()}
            pk_marks = ", ".join("?" * len(pks))
            parts: dict[str, dict[str, list[Any]]] = {
                run_id: {
                    "chunks": [],
                    "summaries": [],
                    "attempts": [],
                    "artifacts": [],
                    "files": [],
                }
                for run_id in records
            }
            for run, *rest in db.execute(
                "SELECT run, key, attempt, count, first_step, last_step, stride, steps, vals,"
                f" first_time, times, min, max, last FROM metric_chunks WHERE run IN ({pk_marks})"
                " ORDER BY run, rowid",
                list(pks),
            ):
                parts[pks[run]]["chunks"].append(StoredChunk(*rest))
            for run, *rest in db.execute(
                "SELECT run, key, count, first_step, last_step, min, max, last, last_time"
                f" FROM metric_summary WHERE run IN ({pk_marks}) ORDER BY run, key",
                list(pks),
            ):
                parts[pks[run]]["summaries"].append(StoredSummary(*rest))
            for run, *rest in db.execute(
                "SELECT run, attempt, host, pid, started, ended, last_seq FROM attempts"
                f" WHERE run IN ({pk_marks}) ORDER BY run, attempt",
                list(pks),
            ):
                parts[pks[run]]["attempts"].append(StoredAttempt(*rest))
            for run_id, *rest in db.execute(
                "SELECT run_id, path, size, sha256, kind FROM artifacts"
                f" WHERE run_id IN ({marks}) ORDER BY run_id, path",
                ids,
            ):
                parts[run_id]["artifacts"].append(Artifact(*rest))
            for run_id, *rest in db.execute(
                f"SELECT run_id, path, size, sha256 FROM run_files WHERE run_id IN ({marks})"
                " ORDER BY run_id, path",
                ids,
            ):
                parts[run_id]["files"].append(UsedFile(*rest))
            for run_id, record in records.items():
                found[run_id] = StoredRun(record, **parts[run_id])
    return [found[run_id] for run_id in run_ids if run_id in found]


def experiment_rows(
    where: Project | Store | Path | str | None, ids: Iterable[str]
) -> list[ExperimentRow]:
    """The ``experiments`` rows of these experiment IDs (unknown IDs left out), by ID."""
    wanted = sorted(set(ids))
    rows: list[ExperimentRow] = []
    with reading(where) as store:
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            rows.extend(
                ExperimentRow(*row)
                for row in store.db.execute(
                    "SELECT id, script, title FROM experiments"
                    f" WHERE id IN ({', '.join('?' * len(batch))}) ORDER BY id",
                    batch,
                )
            )
    return rows


def experiment_ids(where: Project | Store | Path | str | None) -> list[str]:
    """Every experiment ID the store knows (from ``experiments`` and from runs), sorted."""
    with reading(where) as store:
        rows = store.db.execute(
            "SELECT id FROM experiments UNION SELECT DISTINCT experiment FROM runs ORDER BY 1"
        ).fetchall()
    return [str(row[0]) for row in rows]


def known_run_ids(where: Project | Store | Path | str | None, run_ids: Iterable[str]) -> set[str]:
    """Which of ``run_ids`` (full IDs) the store holds."""
    wanted = list(dict.fromkeys(run_ids))
    found: set[str] = set()
    with reading(where) as store:
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            found.update(
                row[0]
                for row in store.db.execute(
                    f"SELECT id FROM runs WHERE id IN ({', '.join('?' * len(batch))})", batch
                )
            )
    return found


# ---------------------------------------------------------------- datasets and data steps


class RunDataset(msgspec.Struct, frozen=True):
    """A dataset a run used, as recorded (see :mod:`mlbook.provenance.datasets`)."""

    run_id: str
    path: str
    hash: str
    scheme: str
    size: int | None
    nfiles: int | None
    state: str
    dirty: bool
    recorded: str | None
    source: str | None
    stage: str | None

    @property
    def short(self) -> str:
        """``md5:1a2b3c4d5e6f``: the hash's kind and first 12 digits."""
        kind, _, value = self.hash.partition(":")
        return f"{kind}:{value[:12]}"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return msgspec.structs.asdict(self)


class RunView(msgspec.Struct, frozen=True):
    """A saved view a run read its data through (see :mod:`mlbook.datasets.index`)."""

    run_id: str
    dataset: str
    view: str
    query: str
    boxes: str | None
    records_hash: str
    ids_hash: str
    count: int

    @property
    def key(self) -> str:
        """``<dataset>@<view>``: how the view is named in ``show`` and ``diff``."""
        return f"{self.dataset}@{self.view}"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return msgspec.structs.asdict(self)


def run_views(where: Project | Store | Path | str | None, run_id: str) -> list[RunView]:
    """The saved views a run read its data through, by dataset and name."""
    with reading(where) as store:
        if not store.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'run_views'"
        ).fetchone():
            return []  # a store older than version 5, opened read-only
        rows = store.db.execute(
            "SELECT run_id, dataset, view, query, boxes, records_hash, ids_hash, count"
            " FROM run_views WHERE run_id = ? ORDER BY dataset, view",
            (run_id,),
        ).fetchall()
    return [RunView(*row) for row in rows]


class StepDataset(msgspec.Struct, frozen=True):
    """An input or output dataset of a data step: path, hash, scheme, size, file count."""

    path: str
    hash: str
    scheme: str
    size: int | None
    nfiles: int | None


class DataStep(msgspec.Struct, frozen=True):
    """A data-processing step as recorded (``mlbook data process``)."""

    id: str
    script: str
    target: str
    script_sha256: str
    commit_before: str | None
    commit_reason: str | None
    params: list[Any]
    status: str
    started: float
    ended: float | None
    returncode: int | None
    output: str
    host: str
    inputs: list[StepDataset] = []
    outputs: list[StepDataset] = []

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (``None`` while running)."""
        return None if self.ended is None else self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output), the duration included."""
        return {**msgspec.to_builtins(self), "duration": self.duration}


def _run_dataset(row: Sequence[Any]) -> RunDataset:
    fields = dict(zip(RunDataset.__struct_fields__, row, strict=True))
    fields["dirty"] = bool(fields["dirty"])
    return RunDataset(**fields)


_RUN_DATASET_COLUMNS = (
    "run_id, path, hash, scheme, size, nfiles, state, dirty, recorded, source, stage"
)


def run_datasets(where: Project | Store | Path | str | None, run_id: str) -> list[RunDataset]:
    """The datasets a run used, by path."""
    with reading(where) as store:
        rows = store.db.execute(
            f"SELECT {_RUN_DATASET_COLUMNS} FROM run_datasets WHERE run_id = ? ORDER BY path",
            (run_id,),
        ).fetchall()
    return [_run_dataset(row) for row in rows]


def dataset_runs(where: Project | Store | Path | str | None, path: str) -> list[RunDataset]:
    """Every run's record of dataset ``path`` (root-relative), oldest run first."""
    with reading(where) as store:
        rows = store.db.execute(
            f"SELECT {', '.join('d.' + c.strip() for c in _RUN_DATASET_COLUMNS.split(','))}"
            " FROM run_datasets d JOIN runs r ON r.id = d.run_id WHERE d.path = ?"
            " ORDER BY r.created, r.pk",
            (path,),
        ).fetchall()
    return [_run_dataset(row) for row in rows]


def data_steps(
    where: Project | Store | Path | str | None,
    *,
    output: str | None = None,
    step_id: str | None = None,
) -> list[DataStep]:
    """Data steps, oldest first: all, those asked to write ``output``, or one by id prefix."""
    sql = (
        "SELECT id, script, target, script_sha256, commit_before, commit_reason, params, status,"
        " started, ended, returncode, output, host FROM data_steps"
    )
    args: list[Any] = []
    if output is not None:
        sql += " WHERE target = ?"
        args.append(output)
    elif step_id is not None:
        sql += " WHERE id = ? OR id LIKE ?"
        args += [step_id, step_id.replace("%", "").replace("_", "") + "%"]
    sql += " ORDER BY started, id"
    with reading(where) as store:
        rows = store.db.execute(sql, args).fetchall()
        ids = [row[0] for row in rows]
        found: dict[str, dict[str, list[StepDataset]]] = {i: {"in": [], "out": []} for i in ids}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            for step, role, *rest in store.db.execute(
                "SELECT step_id, role, path, hash, scheme, size, nfiles FROM step_datasets"
                f" WHERE step_id IN ({', '.join('?' * len(chunk))}) ORDER BY path",
                chunk,
            ):
                found[step][role].append(StepDataset(*rest))
    steps = []
    for row in rows:
        fields = dict(zip(DataStep.__struct_fields__, row, strict=False))
        fields["params"] = orjson.loads(fields["params"] or "[]")
        steps.append(DataStep(**fields, inputs=found[row[0]]["in"], outputs=found[row[0]]["out"]))
    return steps
