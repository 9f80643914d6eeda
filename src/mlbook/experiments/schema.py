"""The run store's schema: each migration takes a store from version i to i + 1.

Never edit a released migration; append a new one. A migration is SQL (split on
``;``) or a function of the connection, and runs inside the ``BEGIN IMMEDIATE``
transaction that :meth:`~mlbook.experiments.store.Store.open` holds, so two
processes opening an old store at once cannot both apply it.

Version 3 stores metric series in chunks (``metric_chunks``, see
:mod:`mlbook.experiments.series`), keeps a per-run, per-key summary
(``metric_summary``) and records each attempt at a run (``attempts``: host,
pid and the last event sequence number written, so a repeated event is dropped).

Version 4 records the datasets each run used (``run_datasets``: path, hash and
scheme, size, file count, state and dirty flag, the hash DVC recorded, the
``.dvc``/``dvc.lock`` file and stage) and data-processing steps (``data_steps``,
their input and output datasets in ``step_datasets``), see
:mod:`mlbook.provenance.datasets` and :mod:`mlbook.provenance.lineage`.

Version 5 records the saved views a run trained on (``run_views``: dataset path,
view name, its query and box filter, the records hash, a hash of the ids read and
their number), see :mod:`mlbook.datasets.index`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from mlbook.experiments.series import Chunk, chunk_of

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

Migration = str | Callable[[sqlite3.Connection], None]

_CHUNKS = """
    CREATE TABLE metric_chunks (
        run INTEGER NOT NULL,
        key TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        count INTEGER NOT NULL,
        first_step INTEGER NOT NULL,
        last_step INTEGER NOT NULL,
        stride INTEGER,
        steps BLOB,
        vals BLOB NOT NULL,
        first_time REAL NOT NULL,
        times BLOB NOT NULL,
        min REAL,
        max REAL,
        last REAL
    );
    CREATE INDEX metric_chunks_run ON metric_chunks (run, key);
    CREATE TABLE metric_summary (
        run INTEGER NOT NULL,
        key TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_step INTEGER NOT NULL,
        last_step INTEGER NOT NULL,
        min REAL,
        max REAL,
        last REAL,
        last_time REAL NOT NULL,
        PRIMARY KEY (run, key)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        host TEXT NOT NULL DEFAULT '',
        pid INTEGER,
        started REAL NOT NULL,
        ended REAL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run, attempt)
    ) WITHOUT ROWID
"""

#: Points per chunk when old rows are converted.
_MIGRATED_CHUNK = 4096

INSERT_CHUNK = (
    "INSERT INTO metric_chunks (run, key, attempt, count, first_step, last_step, stride, steps,"
    " vals, first_time, times, min, max, last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_SUMMARY = (
    "INSERT INTO metric_summary (run, key, count, first_step, last_step, min, max, last,"
    " last_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, key) DO UPDATE SET"
    " count = count + excluded.count, last_step = excluded.last_step,"
    " min = min(coalesce(min, excluded.min), coalesce(excluded.min, min)),"
    " max = max(coalesce(max, excluded.max), coalesce(excluded.max, max)),"
    " last = excluded.last, last_time = excluded.last_time"
)


def chunk_rows(run: int, attempt: int, chunk: Chunk) -> tuple[tuple[object, ...], ...]:
    """The ``metric_chunks`` row and the ``metric_summary`` upsert row of one chunk."""
    return (
        (
            run,
            chunk.key,
            attempt,
            chunk.count,
            chunk.first_step,
            chunk.last_step,
            chunk.stride,
            chunk.steps,
            chunk.values,
            chunk.first_time,
            chunk.times,
            chunk.min,
            chunk.max,
            chunk.last,
        ),
        (
            run,
            chunk.key,
            chunk.count,
            chunk.first_step,
            chunk.last_step,
            chunk.min,
            chunk.max,
            chunk.last,
            chunk.last_time,
        ),
    )


def _chunk_old_metrics(db: sqlite3.Connection) -> None:
    """Version 3: move every row of ``metrics`` into chunks, then drop the table."""
    for statement in _CHUNKS.split(";"):
        if statement.strip():
            db.execute(statement)
    pending: dict[tuple[int, str], list[tuple[int, float, float]]] = {}

    def write(run: int, key: str, points: list[tuple[int, float, float]]) -> None:
        steps, values, times = zip(*points, strict=True)
        chunk = chunk_of(key, steps, values, times)
        if chunk is not None:
            row, summary = chunk_rows(run, 1, chunk)
            db.execute(INSERT_CHUNK, row)
            db.execute(UPSERT_SUMMARY, summary)

    cursor = db.execute("SELECT run, key, step, value, time FROM metrics ORDER BY run, rowid")
    for run, key, step, value, when in cursor:
        points = pending.setdefault((run, key), [])
        points.append((step, float("nan") if value is None else value, when))
        if len(points) >= _MIGRATED_CHUNK:
            write(run, key, points)
            pending[(run, key)] = []
    for (run, key), points in pending.items():
        if points:
            write(run, key, points)
    db.execute("DROP TABLE metrics")


MIGRATIONS: tuple[Migration, ...] = (
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
    # 3: metric series in chunks, per-run metric summaries, attempts
    _chunk_old_metrics,
    # 4: the datasets each run used (DVC-aware) and data-processing steps with their datasets
    """
    CREATE TABLE run_datasets (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        hash TEXT NOT NULL,
        scheme TEXT NOT NULL,
        size INTEGER,
        nfiles INTEGER,
        state TEXT NOT NULL,
        dirty INTEGER NOT NULL DEFAULT 0,
        recorded TEXT,
        source TEXT,
        stage TEXT,
        PRIMARY KEY (run_id, path)
    );
    CREATE INDEX run_datasets_hash ON run_datasets (path, hash);
    CREATE TABLE data_steps (
        id TEXT PRIMARY KEY,
        script TEXT NOT NULL,
        target TEXT NOT NULL,
        script_sha256 TEXT NOT NULL,
        commit_before TEXT,
        commit_reason TEXT,
        params TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        returncode INTEGER,
        output TEXT NOT NULL DEFAULT '',
        host TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE step_datasets (
        step_id TEXT NOT NULL,
        role TEXT NOT NULL,
        path TEXT NOT NULL,
        hash TEXT NOT NULL,
        scheme TEXT NOT NULL,
        size INTEGER,
        nfiles INTEGER,
        PRIMARY KEY (step_id, role, path, scheme)
    );
    CREATE INDEX step_datasets_hash ON step_datasets (path, hash);
    """,
    # 5: the saved views (of the dataset index) each run read its data through
    """
    CREATE TABLE run_views (
        run_id TEXT NOT NULL,
        dataset TEXT NOT NULL,
        view TEXT NOT NULL,
        query TEXT NOT NULL,
        boxes TEXT,
        records_hash TEXT NOT NULL,
        ids_hash TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run_id, dataset, view)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
