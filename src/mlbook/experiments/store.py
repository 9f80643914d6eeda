"""The run store, ``.mlbook/runs.sqlite``: schema, migrations, writes, crash detection.

One process writes a run: the runner (children send it events). Several
runners may share one store: WAL mode, a busy timeout and short transactions
let them, and migrations run inside ``BEGIN IMMEDIATE`` so two processes that
open a new store at once cannot both apply them.

A run whose runner died (``kill -9``, power loss) stays ``running`` in the
file; :meth:`Store.open` finds such runs (runner pid gone on this host) and
marks them ``crashed``, keeping every metric that was committed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from mlbook.errors import StoreError

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "STORE_FILE",
    "Store",
    "new_run_id",
]

STORE_FILE = "runs.sqlite"
STATUSES = ("running", "completed", "failed", "interrupted", "crashed")
FINAL_STATUSES = frozenset(STATUSES) - {"running"}
BUSY_TIMEOUT_MS = 30_000

# Each entry migrates from version i to i + 1; never edit a released entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE experiments (
        id TEXT PRIMARY KEY,
        script TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL
    );
    CREATE TABLE runs (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        experiment TEXT NOT NULL,
        version TEXT NOT NULL,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        host TEXT NOT NULL DEFAULT '',
        pid INTEGER,
        runner_pid INTEGER,
        params TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        error TEXT,
        outputs TEXT NOT NULL DEFAULT '',
        weights TEXT,
        resumed_from TEXT,
        commit_before TEXT,
        commit_after TEXT,
        commit_reason TEXT,
        data_version TEXT,
        python TEXT,
        packages TEXT
    );
    CREATE INDEX runs_experiment ON runs (experiment, version);
    CREATE INDEX runs_status ON runs (status);
    CREATE TABLE metrics (
        run INTEGER NOT NULL,
        key TEXT NOT NULL,
        step INTEGER NOT NULL,
        value REAL NOT NULL,
        time REAL NOT NULL
    );
    CREATE INDEX metrics_run ON metrics (run);
    CREATE TABLE artifacts (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'file',
        PRIMARY KEY (run_id, path)
    );
    CREATE TABLE run_files (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (run_id, path)
    );
    """,
    # 2: newest-first listings without a sort
    """
    CREATE INDEX runs_created ON runs (created);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

# Columns provenance may fill with Store.set_provenance (commit_*, data, versions).
PROVENANCE_COLUMNS = frozenset(
    {"commit_before", "commit_after", "commit_reason", "data_version", "python", "packages"}
)


def new_run_id() -> str:
    """A new run ID: UTC time plus 6 random hex digits (``20261125-110000-3fa2c1``)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class Store:
    """A connection to a run store. Use :meth:`open` or :meth:`for_project`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.db = connection

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, recover: bool = True) -> Store:
        """Open (creating and migrating as needed) the store at ``path``.

        With ``recover`` (the default) runs left ``running`` by a dead runner on
        this host are marked ``crashed``.

        Raises:
            StoreError: the file is not a run store, is newer than this mlbook, or
                cannot be opened.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = _retry_when_locked(lambda: cls._connect(path))
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path}: cannot open the run store ({exc}); move the file away to start a new one"
            ) from exc
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the run store ({exc})") from exc
        if recover:
            store.recover_crashed()
        return store

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
    def for_project(cls, project: Project, *, recover: bool = True) -> Store:
        """Open the store of ``project`` (``.mlbook/runs.sqlite``)."""
        return cls.open(project.state_dir / STORE_FILE, recover=recover)

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
                for statement in MIGRATIONS[index].split(";"):
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One short write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _write(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed ({exc})") from exc

    # -- runs ------------------------------------------------------------------------

    def ensure_experiment(self, ident: str, script: str = "", title: str = "") -> None:
        """Record experiment ``ident`` (first sight only; later calls update script/title)."""
        self._write(
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
                socket.gethostname(),
                os.getpid(),
                orjson.dumps(params, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                outputs,
                resumed_from,
                platform.python_version(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, run_id

    def set_pid(self, run_id: str, pid: int) -> None:
        """Record the child process that runs ``run_id``."""
        self._write("UPDATE runs SET pid = ? WHERE id = ?", (pid, run_id))

    def add_metrics(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert metric points ``(run_pk, key, step, value, time)`` in one transaction."""
        try:
            with self.transaction():
                self.db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: writing metrics failed ({exc})") from exc

    def add_artifact(self, run_id: str, path: str, size: int, sha256: str, kind: str) -> None:
        """Record a file a run wrote (``path`` relative to the project root)."""
        self._write(
            "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?)",
            (run_id, path, size, sha256, kind),
        )
        if kind == "weights":
            self._write("UPDATE runs SET weights = ? WHERE id = ?", (path, run_id))

    def add_files(self, run_id: str, files: Iterable[tuple[str, int, str]]) -> None:
        """Record the project files a run used: ``(path, size, sha256)``, paths root-relative."""
        try:
            with self.transaction():
                self.db.executemany(
                    "INSERT OR REPLACE INTO run_files VALUES (?, ?, ?, ?)",
                    [(run_id, *row) for row in files],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: writing run files failed ({exc})") from exc

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
        values = [orjson.dumps(v).decode() if k == "packages" else v for k, v in fields.items()]
        assignments = ", ".join(f"{key} = ?" for key in fields)
        self._write(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))

    def finish_run(
        self,
        run_id: str,
        status: str,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Set a run's final status, final metrics and error text."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"finish_run: {status!r} is not a final status")
        self._write(
            "UPDATE runs SET status = ?, ended = ?, metrics = ?, error = ? WHERE id = ?",
            (
                status,
                time.time(),
                orjson.dumps(metrics or {}, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                error,
                run_id,
            ),
        )

    def recover_crashed(self) -> list[str]:
        """Mark ``running`` runs whose runner process is gone (on this host) ``crashed``."""
        host = socket.gethostname()
        rows = self.db.execute(
            "SELECT id, runner_pid FROM runs WHERE status = 'running' AND host = ?", (host,)
        ).fetchall()
        crashed = [run_id for run_id, pid in rows if pid is None or not _alive(pid)]
        for run_id in crashed:
            pid = dict(rows)[run_id]
            self._write(
                "UPDATE runs SET status = 'crashed', ended = ?, error = ? "
                "WHERE id = ? AND status = 'running'",
                (
                    time.time(),
                    f"the runner (pid {pid}) died while this run was running; "
                    "metrics up to its death are kept",
                    run_id,
                ),
            )
        return crashed


def _alive(pid: int) -> bool:
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
