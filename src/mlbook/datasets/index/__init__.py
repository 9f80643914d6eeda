"""The dataset as a database: a derived SQLite index over ``records.jsonl``, queries,
saved views.

``records.jsonl`` stays the source of truth. :func:`ensure_index` builds a git-ignored
SQLite file (``.mlbook/index/`` of the project) keyed by the records' sha256: records
as rows with summary columns, boxes and per-record label counts as real rows. A
changed file makes the index stale and the next query rebuilds it; a half-built or
unreadable index is never used. :class:`Query` (text or builder) compiles to one
parameterized statement; :func:`save_view` keeps a named query with the dataset
(``views/<name>.json``). The language is described in :mod:`._lang` and
docs/datasets-query.md.
"""

from __future__ import annotations

from mlbook.datasets.index._build import (
    IndexState,
    build_index,
    ensure_index,
    index_path,
    index_state,
    label_count,
)
from mlbook.datasets.index._lang import parse, to_text
from mlbook.datasets.index._query import DatasetIndex, IndexRow, Query, SqlResult
from mlbook.datasets.index._views import (
    SavedView,
    ViewUse,
    ids_hash,
    list_views,
    load_view,
    open_view,
    save_view,
)

__all__ = [
    "DatasetIndex",
    "IndexRow",
    "IndexState",
    "Query",
    "SavedView",
    "SqlResult",
    "ViewUse",
    "build_index",
    "ensure_index",
    "ids_hash",
    "index_path",
    "index_state",
    "label_count",
    "list_views",
    "load_view",
    "open_view",
    "parse",
    "save_view",
    "to_text",
]
