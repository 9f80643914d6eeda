"""``mlbook data sql``: ad-hoc analysis of a dataset's index with DuckDB (extra ``duckdb``).

DuckDB is never required: the index, queries and views are plain SQLite. When DuckDB's
``sqlite`` extension can be loaded, the index is attached read-only; otherwise (no
network to fetch the extension) the tables a statement names are copied into an
in-memory DuckDB through Arrow, read from SQLite opened read-only. Either way the index
file is never written, and only read statements are accepted.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from mlbook.datasets.index._build import ensure_index
from mlbook.datasets.index._query import _WRITES, SqlResult
from mlbook.errors import QueryError

__all__ = ["duckdb_sql"]

_TABLES = ("records", "boxes", "labels", "record_labels")
_BATCH = 200_000


def _connect() -> Any:
    try:
        import duckdb
    except ImportError:
        raise QueryError(
            "mlbook data sql needs DuckDB: pip install 'mlbook[duckdb]' "
            "(or use `mlbook data query PATH --sql ...`, plain SQLite)"
        ) from None
    return duckdb.connect()


def _copy_table(duck: Any, db: sqlite3.Connection, table: str) -> None:
    import pyarrow as pa

    cursor = db.execute(f"SELECT * FROM {table}")  # table: one of _TABLES
    columns = [d[0] for d in cursor.description]
    batches = []
    while rows := cursor.fetchmany(_BATCH):
        batches.append(pa.table(dict(zip(columns, zip(*rows, strict=True), strict=True))))
    data = pa.concat_tables(batches) if batches else pa.table({c: [] for c in columns})
    duck.register(f"_{table}", data)
    duck.execute(f"CREATE TABLE idx.{table} AS SELECT * FROM _{table}")
    duck.unregister(f"_{table}")


def duckdb_sql(root: Path | str, statement: str) -> SqlResult:
    """Run one read statement with DuckDB over the index of the dataset ``root``.

    Raises:
        QueryError: DuckDB is not installed, a statement that writes, or one DuckDB
        refuses.
    """
    if not _WRITES.match(statement):
        raise QueryError("mlbook data sql runs read statements only (SELECT, WITH, ...)")
    state = ensure_index(Path(root))
    duck = _connect()
    try:
        try:
            duck.execute("LOAD sqlite")
            quoted = str(state.path).replace("'", "''")
            duck.execute(f"ATTACH '{quoted}' AS idx (TYPE sqlite, READ_ONLY)")
        except Exception:  # no extension here (it is downloaded): copy the tables instead
            duck.execute("CREATE SCHEMA idx")
            uri = f"{state.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True)
            try:
                for table in _TABLES:
                    if re.search(rf"\b{table}\b", statement, re.IGNORECASE):
                        _copy_table(duck, db, table)
            finally:
                db.close()
        duck.execute("SET search_path = 'idx,main'")
        try:
            cursor = duck.execute(statement)
            rows = cursor.fetchall()
        except Exception as exc:  # duckdb.Error: the module is optional, so caught broadly
            raise QueryError(f"DuckDB refused the statement: {exc}") from exc
        return SqlResult([d[0] for d in cursor.description or ()], [tuple(r) for r in rows])
    finally:
        duck.close()
