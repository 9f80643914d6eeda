"""The run store, ``.mlbook/runs.sqlite``: opening, migrations, every write, crash detection.

This module is the only one that writes SQL; :mod:`mlbook.experiments.query`
beside it reads. One process writes a run: the runner (children send it
events). Several runners may share one store: WAL mode, a busy timeout and
short transactions let them, and migrations (:mod:`~mlbook.experiments.schema`)
run inside ``BEGIN IMMEDIATE`` so two processes that open an old store at once
cannot both apply them.

Read-only commands (``mlbook runs``, ``show``, ``log``, ``exports``, ``ui``) open
with ``readonly=True``: nothing is written, so they work on a full disk and
never wait on a writer.

A run whose runner died (``kill -9``, power loss) stays ``running`` in the
file; a writing :meth:`Store.open` finds such runs (runner pid gone on this
host) and marks them ``crashed``, keeping every metric that was committed.

Every ``sqlite3`` and ``OSError`` failure leaves this module as a
:class:`~mlbook.errors.StoreError` naming the file and what was being done
(one place: :meth:`Store._errors`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import platform
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from msgspec.structs import astuple

from mlbook.errors import StoreError
from mlbook.experiments.schema import (
    INSERT_CHUNK,
    MIGRATIONS,
    SCHEMA_VERSION,
    UPSERT_SUMMARY,
    chunk_rows,
)

if TYPE_CHECKING:
    from mlbook.experiments.query import ExperimentRow, StoredRun
    from mlbook.experiments.series import Chunk
    from mlbook.project import Project

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "STORE_FILE",
    "Conflict",
    "ImportOutcome",
    "Store",
    "add_run_datasets",
    "add_run_view",
    "finish_data_step",
    "new_run_id",
    "start_data_step",
]

STORE_FILE = "runs.sqlite"
STATUSES = ("running", "completed", "failed", "interrupted", "crashed")
FINAL_STATUSES = frozenset(STATUSES) - {"running"}
BUSY_TIMEOUT_MS = 30_000
#: Bytes kept free beside a writable store (``runs.sqlite.reserve``): on a full disk
#: the file is deleted so that how a run ended can still be recorded.
RESERVE_BYTES = 2 << 20

# Columns provenance may fill with Store.set_provenance (commit_*, data, versions).
PROVENANCE_COLUMNS = frozenset(
    {"commit_before", "commit_after", "commit_reason", "data_version", "python", "packages"}
)


def new_run_id() -> str:
    """A new run ID: UTC time plus 6 random hex digits (``20261125-110000-3fa2c1``)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


def _json(value: Any) -> str:
    return orjson.dumps(
        value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str
    ).decode()


#: Final metrics that JSON cannot hold are stored as these strings (read back as floats).
NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _metrics_json(metrics: dict[str, Any]) -> str:
    """Final metrics as JSON, NaN and ±inf kept as ``"nan"``, ``"inf"``, ``"-inf"``."""
    return _json(
        {
            key: str(value) if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in metrics.items()
        }
    )


class Store:
    """A connection to a run store. Use :meth:`open` or :meth:`for_project`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, readonly: bool = False) -> None:
        self.path = path
        self.db = connection
        self.readonly = readonly

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, recover: bool = True, readonly: bool = False) -> Store:
        """Open the store at ``path``.

        Writing (the default) creates and migrates the file as needed and, with
        ``recover``, marks runs left ``running`` by a dead runner on this host
        ``crashed``. With ``readonly`` nothing is written: a missing store reads
        as an empty one, and runs of a dead runner read as ``crashed``.

        Raises:
            StoreError: the file is not a run store, is newer than this mlbook, or
                cannot be opened.
        """
        path = Path(path)
        if readonly:
            return cls._open_readonly(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = _retry_when_locked(lambda: cls._connect(path))
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path}: cannot open the run store ({_reason(exc)}); "
                "move the file away to start a new one"
                if not _disk_full(exc)
                else f"{path}: cannot open the run store: {_reason(exc)}"
            ) from exc
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the run store ({_reason(exc)})") from exc
        store._keep_reserve()
        if recover:
            store.recover_crashed()
        return store

    @property
    def reserve_path(self) -> Path:
        """The reserve file beside the store (see :data:`RESERVE_BYTES`)."""
        return self.path.with_name(self.path.name + ".reserve")

    def _keep_reserve(self) -> None:
        """Make sure the reserve file exists (quietly skipped when there is no room)."""
        target = self.reserve_path
        if target.exists():
            return
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            os.replace(temporary, target)
        except (OSError, AttributeError):
            with contextlib.suppress(OSError):
                temporary.unlink()

    def _release_reserve(self) -> bool:
        """Delete the reserve file to make room; False when there was none."""
        try:
            self.reserve_path.unlink()
        except OSError:
            return False
        return True

    @classmethod
    def _connect(cls, path: Path) -> Store:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # switching to WAL takes an exclusive lock without waiting on the busy
            # handler: two processes creating the store at once may see "locked"
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            if mode != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            store = cls(path, db)
            store._migrate()
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def _open_readonly(cls, path: Path) -> Store:
        if not path.exists():
            db = sqlite3.connect(":memory:", isolation_level=None)
            empty = cls(path, db, readonly=True)
            empty._migrate()
            return empty
        try:
            db = _connect_readonly(path)
            (version,) = db.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: cannot read the run store ({_reason(exc)})") from exc
        if version < SCHEMA_VERSION:  # an older store: migrate it once, then read
            db.close()
            cls.open(path, recover=False).close()
            return cls._open_readonly(path)
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{path}: schema version {version} is newer than this mlbook knows "
                f"({SCHEMA_VERSION}); upgrade mlbook"
            )
        return cls(path, db, readonly=True)

    @classmethod
    def for_project(
        cls, project: Project, *, recover: bool = True, readonly: bool = False
    ) -> Store:
        """Open the store of ``project`` (``.mlbook/runs.sqlite``)."""
        return cls.open(project.state_dir / STORE_FILE, recover=recover, readonly=readonly)

    def _migrate(self) -> None:
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this mlbook knows "
                f"({SCHEMA_VERSION}); upgrade mlbook"
            )
        self.db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = self.db.execute("PRAGMA user_version").fetchone()
            for index in range(version, SCHEMA_VERSION):
                migration = MIGRATIONS[index]
                if callable(migration):
                    migration(self.db)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {index + 1}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the one place errors are mapped ----------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn ``sqlite3`` and OS errors into one :class:`StoreError` line."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: {action} failed ({_reason(exc)})") from exc

    @contextlib.contextmanager
    def transaction(self, action: str = "writing") -> Iterator[sqlite3.Connection]:
        """One short write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only: {action} is not allowed")
        with self._errors(action):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _write(self, action: str, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only: {action} is not allowed")
        with self._errors(action):
            return self.db.execute(sql, args)

    # -- runs ------------------------------------------------------------------------

    def ensure_experiment(self, ident: str, script: str = "", title: str = "") -> None:
        """Record experiment ``ident`` (first sight only; later calls update script/title)."""
        self._write(
            f"recording experiment {ident}",
            "INSERT INTO experiments (id, script, title, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET script = excluded.script, "
            "title = CASE WHEN excluded.title != '' THEN excluded.title ELSE title END",
            (ident, script, title, time.time()),
        )

    def create_run(
        self,
        *,
        experiment: str,
        version: str,
        mode: str,
        params: dict[str, Any],
        outputs: str = "",
        run_id: str | None = None,
        resumed_from: str | None = None,
    ) -> tuple[int, str]:
        """Insert a run in state ``running`` owned by this process; returns ``(pk, id)``."""
        run_id = run_id or new_run_id()
        now = time.time()
        cursor = self._write(
            f"creating run {run_id}",
            "INSERT INTO runs (id, experiment, version, mode, status, created, started, host,"
            " runner_pid, params, outputs, resumed_from, python)"
            " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                experiment,
                version,
                mode,
                now,
                now,
                platform.node(),
                os.getpid(),
                _json(params),
                outputs,
                resumed_from,
                platform.python_version(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, run_id

    def start_attempt(self, run_pk: int, attempt: int, *, host: str = "", pid: int = 0) -> int:
        """Record attempt ``attempt`` at a run; returns the last event sequence it wrote.

        A later attempt (a retried task) replaces the metrics of earlier ones, so
        a run's series are those of its final attempt, never a mix.
        """
        with self.transaction(f"starting attempt {attempt}") as db:
            row = db.execute(
                "SELECT last_seq FROM attempts WHERE run = ? AND attempt = ?", (run_pk, attempt)
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE attempts SET host = ?, pid = ? WHERE run = ? AND attempt = ?",
                    (host, pid or None, run_pk, attempt),
                )
                return int(row[0])
            earlier = db.execute(
                "SELECT count(*) FROM attempts WHERE run = ? AND attempt < ?", (run_pk, attempt)
            ).fetchone()[0]
            if earlier:
                db.execute(
                    "DELETE FROM metric_chunks WHERE run = ? AND attempt < ?", (run_pk, attempt)
                )
                db.execute("DELETE FROM metric_summary WHERE run = ?", (run_pk,))
                _rebuild_summary(db, run_pk)
            db.execute(
                "INSERT INTO attempts (run, attempt, host, pid, started) VALUES (?, ?, ?, ?, ?)",
                (run_pk, attempt, host, pid or None, time.time()),
            )
            db.execute("UPDATE runs SET pid = ? WHERE pk = ?", (pid or None, run_pk))
            return 0

    def add_metrics(
        self, run_pk: int, chunks: Iterable[Chunk], *, attempt: int = 1, seq: int = 0
    ) -> None:
        """Write metric chunks (and their summaries) in one transaction.

        With ``seq``, also record it as the attempt's last written event, in the
        same transaction: a caller that drops events at or below the recorded
        sequence number writes each point exactly once.
        """
        with self.transaction("writing metrics") as db:
            for chunk in chunks:
                row, summary = chunk_rows(run_pk, attempt, chunk)
                db.execute(INSERT_CHUNK, row)
                db.execute(UPSERT_SUMMARY, summary)
            if seq:
                db.execute(
                    "UPDATE attempts SET last_seq = max(last_seq, ?) WHERE run = ? AND attempt = ?",
                    (seq, run_pk, attempt),
                )

    def add_artifact(self, run_id: str, path: str, size: int, sha256: str, kind: str) -> None:
        """Record a file a run wrote (``path`` relative to the project root)."""
        with self.transaction(f"recording an artifact of run {run_id}") as db:
            db.execute(
                "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
                (run_id, path, size, sha256, kind),
            )
            if kind == "weights":
                db.execute("UPDATE runs SET weights = ? WHERE id = ?", (path, run_id))

    def add_files(self, run_id: str, files: Iterable[tuple[str, int, str]]) -> None:
        """Record the project files a run used: ``(path, size, sha256)``, paths root-relative."""
        with self.transaction(f"recording the files of run {run_id}") as db:
            db.executemany(
                "INSERT OR REPLACE INTO run_files VALUES (?, ?, ?, ?)",
                [(run_id, *row) for row in files],
            )

    def update_params(self, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` into a run's params (a script's ``mlbook.log_params``); the result."""
        with self.transaction(f"recording the params of run {run_id}") as db:
            row = db.execute("SELECT params FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no run {run_id}")
            merged = {**orjson.loads(row[0] or "{}"), **params}
            db.execute("UPDATE runs SET params = ? WHERE id = ?", (_json(merged), run_id))
        return merged

    def set_provenance(self, run_id: str, **fields: Any) -> None:
        """Set provenance columns of a run.

        Accepted fields: ``commit_before``, ``commit_after``, ``commit_reason``
        (why there is no commit), ``data_version``, ``python``, ``packages``
        (a dict, stored as JSON).
        """
        unknown = set(fields) - PROVENANCE_COLUMNS
        if unknown:
            raise StoreError(f"set_provenance: unknown field(s) {', '.join(sorted(unknown))}")
        if not fields:
            return
        values = [_json(v) if k == "packages" else v for k, v in fields.items()]
        assignments = ", ".join(f"{key} = ?" for key in fields)
        self._write(
            f"recording the provenance of run {run_id}",
            f"UPDATE runs SET {assignments} WHERE id = ?",
            (*values, run_id),
        )

    def finish_run(
        self,
        run_id: str,
        status: str,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Set a run's final status, final metrics and error text.

        On a full disk the reserve file beside the store is given up so that this
        write still succeeds.
        """
        if status not in FINAL_STATUSES:
            raise StoreError(f"finish_run: {status!r} is not a final status")
        try:
            self._finish(run_id, status, metrics, error)
        except StoreError as exc:
            # a full disk: how the run ended matters most, so spend the reserve on it
            if not (exc.__cause__ and _disk_full(exc.__cause__) and self._release_reserve()):
                raise
            self._finish(run_id, status, metrics, error)

    def _finish(
        self, run_id: str, status: str, metrics: dict[str, Any] | None, error: str | None
    ) -> None:
        now = time.time()
        with self.transaction(f"finishing run {run_id}") as db:
            db.execute(
                "UPDATE runs SET status = ?, ended = ?, metrics = ?, error = ? WHERE id = ?",
                (status, now, _metrics_json(metrics or {}), error, run_id),
            )
            db.execute(
                "UPDATE attempts SET ended = ? WHERE ended IS NULL AND run = "
                "(SELECT pk FROM runs WHERE id = ?)",
                (now, run_id),
            )

    def recover_crashed(self) -> list[str]:
        """Mark ``running`` runs whose runner process is gone (on this host) ``crashed``."""
        with self._errors("reading running runs"):
            rows = self.db.execute(
                "SELECT id, runner_pid FROM runs WHERE status = 'running' AND host = ?",
                (platform.node(),),
            ).fetchall()
        crashed = {run_id: pid for run_id, pid in rows if pid is None or not runner_alive(pid)}
        for run_id, pid in crashed.items():
            self._write(
                f"marking run {run_id} crashed",
                "UPDATE runs SET status = 'crashed', ended = ?, error = ? "
                "WHERE id = ? AND status = 'running'",
                (time.time(), crashed_error(pid), run_id),
            )
        return list(crashed)

    def import_runs(
        self, runs: Sequence[StoredRun], experiments: Iterable[ExperimentRow] = ()
    ) -> ImportOutcome:
        """Insert runs made elsewhere (another store, an import) in one transaction.

        Idempotent by run ID: a run already here with the same content hash
        (:meth:`~mlbook.experiments.query.StoredRun.content_hash`) is left as it is;
        one with a different hash is a conflict, and then nothing at all is
        written. Experiment rows are added when missing (existing ones are kept).
        Metric chunks are copied as they are; the source's ``pk`` is not used.
        """
        from mlbook.experiments.query import RunRecord, stored_runs

        columns = [name.removesuffix("_json") for name in RunRecord.__struct_fields__]
        insert_run = (
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        outcome = ImportOutcome()
        with self.transaction(f"importing {len(runs)} run(s)") as db:
            here = {run.id: run for run in stored_runs(self, [run.id for run in runs])}
            fresh: list[StoredRun] = []
            for run in runs:
                if run.id not in here:
                    fresh.append(run)
                    continue
                ours, theirs = here[run.id].content_hash(), run.content_hash()
                if ours == theirs:
                    outcome.present.append(run.id)
                else:
                    outcome.conflicts.append(Conflict(run.id, ours, theirs))
            if outcome.conflicts:
                return outcome
            db.executemany(
                "INSERT INTO experiments (id, script, title, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                [(row.id, row.script, row.title, time.time()) for row in experiments],
            )
            # new runs take the keys after the last one: this transaction holds the write lock
            (last,) = db.execute("SELECT coalesce(max(pk), 0) FROM runs").fetchone()
            keyed = [(last + 1 + n, run) for n, run in enumerate(fresh)]
            db.executemany(
                insert_run,
                [(pk, *astuple(run.record)[1:]) for pk, run in keyed],
            )
            db.executemany(INSERT_CHUNK, [(pk, *astuple(c)) for pk, r in keyed for c in r.chunks])
            db.executemany(
                "INSERT INTO metric_summary (run, key, count, first_step, last_step, min, max,"
                " last, last_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(pk, *astuple(s)) for pk, r in keyed for s in r.summaries],
            )
            db.executemany(
                "INSERT INTO attempts (run, attempt, host, pid, started, ended, last_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(pk, *astuple(a)) for pk, r in keyed for a in r.attempts],
            )
            db.executemany(
                "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
                [(r.id, *a) for r in fresh for a in r.artifacts],
            )
            db.executemany(
                "INSERT OR REPLACE INTO run_files VALUES (?, ?, ?, ?)",
                [(r.id, *f) for r in fresh for f in r.files],
            )
            outcome.added.extend(r.id for r in fresh)
        return outcome


@dataclass(frozen=True)
class Conflict:
    """A run in both stores with different content: its ID and both content hashes."""

    run_id: str
    ours: str
    theirs: str


@dataclass
class ImportOutcome:
    """What :meth:`Store.import_runs` did: runs added, runs already here, conflicts.

    With any conflict nothing was written (``added`` is empty).
    """

    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def crashed_error(pid: int | None) -> str:
    """The error text of a run whose runner died."""
    return (
        f"the runner (pid {pid}) died while this run was running; "
        "metrics committed until then are kept"
    )


def _rebuild_summary(db: sqlite3.Connection, run_pk: int) -> None:
    db.execute(
        "INSERT INTO metric_summary (run, key, count, first_step, last_step, min, max, last,"
        " last_time) SELECT run, key, sum(count), min(first_step), max(last_step), min(min),"
        " max(max), NULL, max(first_time) FROM metric_chunks WHERE run = ? GROUP BY run, key",
        (run_pk,),
    )
    db.execute(
        "UPDATE metric_summary SET last = (SELECT c.last FROM metric_chunks c WHERE"
        " c.run = metric_summary.run AND c.key = metric_summary.key ORDER BY c.rowid DESC"
        " LIMIT 1) WHERE run = ?",
        (run_pk,),
    )


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection; on a full disk (no room for the WAL index) an immutable one."""
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size:
            raise
    # no write-ahead log to read: the main file is the whole store
    db = sqlite3.connect(f"{uri}?immutable=1", uri=True)
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return db


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)


def _reason(exc: BaseException) -> str:
    """What went wrong, with what to do for the usual cases."""
    if _disk_full(exc):
        return f"{exc}: the disk is full; free some space and run again"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def runner_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this host and is not a zombie."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def _retry_when_locked(open_store: Callable[[], Store]) -> Store:
    """Call ``open_store`` again while another process holds a lock SQLite will not wait on."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            return open_store()
        except sqlite3.OperationalError as exc:
            locked = "locked" in str(exc) or "busy" in str(exc)
            if not locked or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


# ---------------------------------------------------------------- datasets and data steps

#: the ``run_datasets`` / ``step_datasets`` columns a dataset record fills, in order
DATASET_FIELDS = ("path", "hash", "scheme", "size", "nfiles")


def _dataset_row(record: Any) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in DATASET_FIELDS)


def add_run_datasets(store: Store, run_id: str, records: Iterable[Any]) -> None:
    """Record the datasets a run used (:class:`~mlbook.provenance.datasets.DatasetRecord`)."""
    rows = [
        (
            run_id,
            *_dataset_row(r),
            r.state,
            int(r.dirty),
            r.recorded,
            r.source,
            r.stage,
        )
        for r in records
    ]
    with store.transaction(f"recording the datasets of run {run_id}") as db:
        db.executemany(
            "INSERT OR REPLACE INTO run_datasets (run_id, path, hash, scheme, size, nfiles,"
            " state, dirty, recorded, source, stage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def add_run_view(
    store: Store,
    run_id: str,
    *,
    dataset: str,
    view: str,
    query: str,
    boxes: str | None,
    records_hash: str,
    ids_hash: str,
    count: int,
) -> None:
    """Record a saved view a run read its data through (``dataset``: root-relative path)."""
    with store.transaction(f"recording the view {view!r} of run {run_id}") as db:
        db.execute(
            "INSERT OR REPLACE INTO run_views (run_id, dataset, view, query, boxes,"
            " records_hash, ids_hash, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, dataset, view, query, boxes, records_hash, ids_hash, count),
        )


def start_data_step(
    store: Store,
    step_id: str,
    *,
    script: str,
    target: str,
    script_sha256: str,
    commit: str | None,
    commit_reason: str | None,
    params: Sequence[str],
    inputs: Iterable[Any],
) -> None:
    """Record a data-processing step as ``running``, with its input datasets.

    ``target`` is the output dataset asked for (root-relative), kept even when the step fails.
    """
    with store.transaction(f"recording data step {step_id}") as db:
        db.execute(
            "INSERT INTO data_steps (id, script, target, script_sha256, commit_before,"
            " commit_reason, params, status, started, host)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
            (
                step_id,
                script,
                target,
                script_sha256,
                commit,
                commit_reason,
                _json(list(params)),
                time.time(),
                platform.node(),
            ),
        )
        db.executemany(
            "INSERT OR REPLACE INTO step_datasets VALUES (?, 'in', ?, ?, ?, ?, ?)",
            [(step_id, *_dataset_row(r)) for r in inputs],
        )


def finish_data_step(
    store: Store,
    step_id: str,
    *,
    status: str,
    returncode: int | None,
    output: str,
    outputs: Iterable[Any] = (),
) -> None:
    """Set a data step's final status, exit code and output log, and its output datasets."""
    if status not in FINAL_STATUSES:
        raise StoreError(f"finish_data_step: {status!r} is not a final status")
    with store.transaction(f"finishing data step {step_id}") as db:
        db.execute(
            "UPDATE data_steps SET status = ?, ended = ?, returncode = ?, output = ? WHERE id = ?",
            (status, time.time(), returncode, output, step_id),
        )
        db.executemany(
            "INSERT OR REPLACE INTO step_datasets VALUES (?, 'out', ?, ?, ?, ?, ?)",
            [(step_id, *_dataset_row(r)) for r in outputs],
        )
