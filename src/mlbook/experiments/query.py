"""Reading the run store: :func:`runs`, :func:`get_run`, metric series, filters.

Filters are small expressions, ``acc>0.9``, ``loss<=0.1``, ``params.lr=0.001``,
``status=failed``: a bare name is a run column when there is one (id,
experiment, version, mode, status, host) and otherwise a final metric;
``params.NAME`` and ``metrics.NAME`` are explicit. They compile to SQL, so
filtering 100,000 runs takes milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mlbook.errors import ExperimentError, StoreError

if TYPE_CHECKING:
    from mlbook.experiments.store import Store
    from mlbook.project import Project

__all__ = [
    "Filter",
    "RunList",
    "RunRecord",
    "get_run",
    "metric_series",
    "parse_filter",
    "run_artifacts",
    "run_files",
    "runs",
]

_COLUMNS = ("id", "experiment", "version", "mode", "status", "host")
_TIME_COLUMNS = ("created", "started", "ended")
_SELECT = (
    "SELECT pk, id, experiment, version, mode, status, created, started, ended, host, pid,"
    " params, metrics, error, outputs, weights, resumed_from, commit_before, commit_after,"
    " commit_reason, data_version, python, packages FROM runs"
)
_FILTER = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(<=|>=|!=|==|=|<|>)\s*(.*?)\s*$")
_NAME = re.compile(r"^[A-Za-z_][\w\-]*$")


@dataclass(frozen=True)
class Filter:
    """One parsed filter expression: ``field op value``."""

    field: str
    op: str
    value: float | str

    def sql(self) -> tuple[str, Any]:
        """The SQL condition (with one ``?``) and its argument."""
        op = "=" if self.op == "==" else self.op
        if self.field in _COLUMNS or self.field in _TIME_COLUMNS:
            column = self.field
        else:
            source, _, name = self.field.partition(".")
            if not name:
                source, name = "metrics", self.field
            column = f"json_extract({source}, '$.\"{name}\"')"
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


class RunRecord:
    """One run as stored; built straight from a row, JSON columns parsed on first use.

    Times are Unix seconds. Paths are relative to the project root.
    """

    __slots__ = ("_metrics", "_packages", "_params", "_row")

    def __init__(self, row: tuple[Any, ...]) -> None:
        self._row = row
        self._params: dict[str, Any] | None = None
        self._metrics: dict[str, Any] | None = None
        self._packages: dict[str, str] | None = None

    @property
    def pk(self) -> int:
        """Internal row number (metric rows refer to it)."""
        value: int = self._row[0]
        return value

    @property
    def id(self) -> str:
        """The run ID."""
        value: str = self._row[1]
        return value

    @property
    def experiment(self) -> str:
        """Experiment ID (``E012``)."""
        value: str = self._row[2]
        return value

    @property
    def version(self) -> str:
        """Version name."""
        value: str = self._row[3]
        return value

    @property
    def mode(self) -> str:
        """``run`` or ``export``."""
        value: str = self._row[4]
        return value

    @property
    def status(self) -> str:
        """``running``, ``completed``, ``failed``, ``interrupted`` or ``crashed``."""
        value: str = self._row[5]
        return value

    @property
    def created(self) -> float:
        """When the run was created (Unix seconds)."""
        value: float = self._row[6]
        return value

    @property
    def started(self) -> float | None:
        """When it started (Unix seconds)."""
        value: float | None = self._row[7]
        return value

    @property
    def ended(self) -> float | None:
        """When it ended (Unix seconds), ``None`` while running."""
        value: float | None = self._row[8]
        return value

    @property
    def host(self) -> str:
        """Host name of the runner."""
        value: str = self._row[9]
        return value

    @property
    def pid(self) -> int | None:
        """Process ID of the child that ran it."""
        value: int | None = self._row[10]
        return value

    @property
    def error(self) -> str | None:
        """Traceback, signal or reason when the run did not complete."""
        value: str | None = self._row[13]
        return value

    @property
    def outputs(self) -> str:
        """Output directory, relative to the project root."""
        value: str = self._row[14]
        return value

    @property
    def weights(self) -> str | None:
        """Weights saved with ``run.save_weights``, relative to the root."""
        value: str | None = self._row[15]
        return value

    @property
    def resumed_from(self) -> str | None:
        """The run this one resumed."""
        value: str | None = self._row[16]
        return value

    @property
    def commit_before(self) -> str | None:
        """Commit of the code before the run (provenance)."""
        value: str | None = self._row[17]
        return value

    @property
    def commit_after(self) -> str | None:
        """Commit after the run, results included (provenance)."""
        value: str | None = self._row[18]
        return value

    @property
    def commit_reason(self) -> str | None:
        """Why there is no commit, when there is none."""
        value: str | None = self._row[19]
        return value

    @property
    def data_version(self) -> str | None:
        """Hash (or DVC hash) of the dataset used."""
        value: str | None = self._row[20]
        return value

    @property
    def python(self) -> str | None:
        """Python version of the run."""
        value: str | None = self._row[21]
        return value

    @property
    def params(self) -> dict[str, Any]:
        """The version's hyper-parameters."""
        if self._params is None:
            self._params = orjson.loads(self._row[11])
        return self._params

    @property
    def metrics(self) -> dict[str, Any]:
        """Final metrics (what the hooks returned)."""
        if self._metrics is None:
            self._metrics = orjson.loads(self._row[12])
        return self._metrics

    @property
    def packages(self) -> dict[str, str] | None:
        """Package versions recorded by provenance."""
        if self._packages is None and self._row[22]:
            self._packages = orjson.loads(self._row[22])
        return self._packages

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (``None`` while running)."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON output)."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["duration"] = self.duration
        return data

    def __repr__(self) -> str:
        return f"RunRecord({self.id} {self.experiment}/{self.version} {self.status})"


_FIELDS = (
    "id",
    "experiment",
    "version",
    "mode",
    "status",
    "created",
    "started",
    "ended",
    "host",
    "pid",
    "params",
    "metrics",
    "error",
    "outputs",
    "weights",
    "resumed_from",
    "commit_before",
    "commit_after",
    "commit_reason",
    "data_version",
    "python",
    "packages",
)


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


def _open(where: Project | Store | Path | str | None) -> tuple[Store, bool]:
    from mlbook.experiments.store import STORE_FILE, Store
    from mlbook.project import Project

    if isinstance(where, Store):
        return where, False
    if where is None:
        where = Project.find()
    if isinstance(where, Project):
        path = where.state_dir / STORE_FILE
    else:
        path = Path(where)
        if path.is_dir():
            path = Project.find(path).state_dir / STORE_FILE
    return Store.open(path), True


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
    store, owned = _open(where)
    try:
        rows = store.db.execute(sql, args).fetchall()
    except Exception as exc:
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"{store.path}: query failed ({exc})") from exc
        raise
    finally:
        if owned:
            store.close()
    return RunList(map(RunRecord, rows))


def _order(sort: str | None) -> str:
    if not sort:
        return "created DESC, pk DESC"
    descending = sort.startswith("-")
    name = sort.lstrip("-+")
    if name in _COLUMNS or name in _TIME_COLUMNS:
        column = name
    else:
        condition, _ = parse_filter(f"{name}=0").sql()
        column = condition.rsplit(" = ?", 1)[0]
    return f"{column} {'DESC' if descending else 'ASC'}, pk DESC"


def get_run(where: Project | Store | Path | str | None, run_id: str) -> RunRecord:
    """The run ``run_id``; a unique prefix of the ID is enough.

    Raises:
        ExperimentError: no such run, or the prefix matches several runs.
    """
    store, owned = _open(where)
    try:
        rows = store.db.execute(
            _SELECT + " WHERE id = ? OR id LIKE ? ORDER BY id LIMIT 3",
            (run_id, run_id.replace("%", "").replace("_", "") + "%"),
        ).fetchall()
    finally:
        if owned:
            store.close()
    exact = [r for r in rows if r[1] == run_id]
    if exact:
        return RunRecord(exact[0])
    if not rows:
        raise ExperimentError(f"no run {run_id!r}; list runs with `mlbook runs`")
    if len(rows) > 1:
        raise ExperimentError(f"run ID prefix {run_id!r} is ambiguous; give more characters")
    return RunRecord(rows[0])


def metric_series(store: Store, run: RunRecord) -> dict[str, list[tuple[int, float]]]:
    """Every metric series of ``run``: key -> [(step, value), ...] in logging order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for key, step, value in store.db.execute(
        "SELECT key, step, value FROM metrics WHERE run = ? ORDER BY rowid", (run.pk,)
    ):
        series.setdefault(key, []).append((step, value))
    return series


def run_artifacts(store: Store, run_id: str) -> list[tuple[str, int, str, str]]:
    """Files a run wrote: ``(path, size, sha256, kind)``."""
    return store.db.execute(
        "SELECT path, size, sha256, kind FROM artifacts WHERE run_id = ? ORDER BY path", (run_id,)
    ).fetchall()


def run_files(store: Store, run_id: str) -> list[tuple[str, int, str]]:
    """Project files a run imported: ``(path, size, sha256)``."""
    return store.db.execute(
        "SELECT path, size, sha256 FROM run_files WHERE run_id = ? ORDER BY path", (run_id,)
    ).fetchall()
