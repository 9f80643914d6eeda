"""Queries over a dataset's index: the Python builder, their results, raw read-only SQL.

``Query`` holds a record condition and an optional box filter (both trees of
:mod:`._lang`); the text language and the builder make the same trees, compiled by
:mod:`._compile` into one parameterized statement. Matching records are read back
from ``records.jsonl`` at the offsets the index keeps, so a query over a million
records loads only what it returns.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mlbook.datasets.index._build import IndexState, ensure_index
from mlbook.datasets.index._compile import LabelInfo, compile_box, compile_where
from mlbook.datasets.index._lang import (
    BOX_FIELDS,
    OPERATORS,
    RECORD_FIELDS,
    And,
    Box,
    Compare,
    Count,
    Node,
    Not,
    Value,
    parse,
    suggest,
    to_text,
)
from mlbook.datasets.metadata import Record, decode_record, load_info
from mlbook.errors import QueryError

if TYPE_CHECKING:
    from mlbook.datasets.dataset import Dataset
    from mlbook.progress import Reporter

__all__ = ["DatasetIndex", "IndexRow", "Query", "SqlResult"]

_RECORD = msgspec.json.Decoder(Record)
_WRITES = re.compile(r"^\s*(?:--[^\n]*\n\s*)*(select|with|explain|values)\b", re.IGNORECASE)


@dataclass(frozen=True)
class IndexRow:
    """One matching record as the index knows it (no need to read ``records.jsonl``)."""

    id: str
    file: str | None
    split: str | None
    width: int | None
    height: int | None
    boxes: int
    labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON and CSV output)."""
        return {
            "id": self.id,
            "file": self.file,
            "split": self.split,
            "width": self.width,
            "height": self.height,
            "boxes": self.boxes,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class SqlResult:
    """Rows of a raw SQL statement and their column names."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


#: the most of an index a connection maps (SQLite caps it at its own maximum)
_MMAP_SIZE = 1 << 31


class DatasetIndex:
    """The index of one dataset, open read-only (``PRAGMA query_only``).

    Use :meth:`open`; close it (or use ``with``) when done.
    """

    def __init__(self, root: Path, state: IndexState) -> None:
        self.root = root
        self.state = state
        uri = f"{state.path.resolve().as_uri()}?mode=ro"
        try:
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.db.execute("PRAGMA query_only = ON")
            self.db.execute("PRAGMA cache_size = -65536")
            # pages read straight from the OS's cache: a new connection (each CLI command)
            # scans as fast as a warm one (count 76 ms against 127-142 ms at 1M records).
            # Safe here: an index is replaced by a rename, never rewritten in place
            self.db.execute(f"PRAGMA mmap_size = {_MMAP_SIZE}")
            rows = self.db.execute("SELECT name, lid, col FROM labels").fetchall()
        except sqlite3.Error as exc:
            raise QueryError(f"{state.path}: the index cannot be read ({exc}); delete it") from exc
        self.labels = {name: LabelInfo(lid, col) for name, lid, col in rows}
        self.names = {lid: name for name, lid, _ in rows}
        info = load_info(root)
        self.name = info.name if info is not None else root.resolve().name

    @classmethod
    def open(
        cls, root: Path | str, *, rebuild: bool = True, reporter: Reporter | None = None
    ) -> DatasetIndex:
        """The index of the dataset at ``root``, built or rebuilt first when it has to be.

        Raises:
            QueryError: not fresh and ``rebuild`` is False; RecordError: a bad record.
        """
        root = Path(root)
        return cls(root, ensure_index(root, rebuild=rebuild, reporter=reporter))

    def __enter__(self) -> DatasetIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # -- compiling -------------------------------------------------------------------

    def statement(self, query: Query, columns: str = "r.rid") -> tuple[str, list[Any]]:
        """The SQL of ``query`` selecting ``columns`` of ``records r``, and its parameters."""
        where, params, info = compile_where(query.effective, self.labels, self.name)
        joined = " JOIN record_info i ON i.rid = r.rid" if info or "i." in columns else ""
        return f"SELECT {columns} FROM records r{joined} WHERE {where}", params

    def _run(self, sql: str, params: list[Any]) -> list[Any]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise QueryError(f"the query could not run: {exc}") from exc

    # -- results ---------------------------------------------------------------------

    def count(self, query: Query) -> int:
        """How many records match."""
        sql, params = self.statement(query, "count(*)")
        return int(self._run(sql, params)[0][0])

    def rids(self, query: Query, limit: int | None = None, offset: int = 0) -> list[int]:
        """Row numbers (0-based order in ``records.jsonl``) of the matching records."""
        sql, params = self.statement(query)
        sql += " ORDER BY r.rid"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return [row[0] for row in self._run(sql, params)]

    def ids(self, query: Query, limit: int | None = None) -> list[str]:
        """Ids of the matching records, in file order."""
        sql, params = self.statement(query, "r.id")
        sql += " ORDER BY r.rid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [row[0] for row in self._run(sql, params)]

    def rows(self, query: Query, limit: int | None = 50, offset: int = 0) -> list[IndexRow]:
        """The matching records as the index holds them (a page: ``limit``, ``offset``)."""
        sql, params = self.statement(
            query, "r.id, i.file, r.split, r.width, r.height, r.nboxes, i.counts"
        )
        sql += " ORDER BY r.rid"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        rows = []
        for ident, file, split, width, height, nboxes, counts in self._run(sql, params):
            labels: dict[str, int] = msgspec.json.decode(counts) if counts else {}
            ranked = dict(sorted(labels.items(), key=lambda item: (-item[1], item[0])))
            rows.append(IndexRow(ident, file, split, width, height, nboxes, ranked))
        return rows

    def records(self, query: Query, limit: int | None = None) -> list[Record]:
        """The matching records, read from ``records.jsonl``; with a box filter, only the
        boxes that pass it are kept (labels and counts follow the kept boxes)."""
        sql, params = self.statement(query, "r.rid, i.offset, i.length")
        sql += " ORDER BY r.rid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        found = self._run(sql, params)
        kept = self._kept_boxes(query, [row[0] for row in found])
        records: list[Record] = []
        path = self.state.records
        with path.open("rb") as handle:
            for rid, offset, length in found:
                handle.seek(offset)
                line = handle.read(length)
                try:
                    record = _RECORD.decode(line)
                except msgspec.DecodeError:  # a loose form (or an error): the full reader
                    record = decode_record(line, path, rid + 1)
                if kept is not None:
                    record = _keep_boxes(record, kept.get(rid, set()))
                records.append(record)
        return records

    def _kept_boxes(self, query: Query, rids: list[int]) -> dict[int, set[int]] | None:
        if query.box_filter is None:
            return None
        cond, params = compile_box(query.box_filter, self.labels, self.name)
        kept: dict[int, set[int]] = {}
        for start in range(0, len(rids), 900):
            chunk = rids[start : start + 900]
            marks = ", ".join("?" * len(chunk))
            rows = self._run(
                "SELECT r.rid, b.bid - i.box0 FROM records r JOIN record_info i ON i.rid = r.rid"
                " JOIN boxes b ON b.bid BETWEEN i.box0 AND i.box0 + r.nboxes - 1"
                f" WHERE r.rid IN ({marks}) AND {cond}",
                [*chunk, *params],
            )
            for rid, k in rows:
                kept.setdefault(rid, set()).add(k)
        return kept

    def sql(self, statement: str, params: Iterable[Any] = ()) -> SqlResult:
        """Run one read-only statement (SELECT, WITH, EXPLAIN, VALUES) on the index.

        Tables: ``records`` (rid, id, split, width, height, nboxes, nlabels, min_side,
        max_side, c0...c15: counts of the labels with a summary column), ``record_info``
        (rid, file, attrs, offset, length, box0: the first box's bid, counts), ``boxes``
        (bid, rid, lid, x, y, w, h, crowd, attrs), ``labels`` (lid, name, col: the label's
        summary column, records, boxes), ``record_labels`` (lid, n,
        rid: labels without a summary column).

        Raises:
            QueryError: a statement that writes, or one SQLite refuses.
        """
        if not _WRITES.match(statement):
            raise QueryError(
                "--sql runs read-only statements (SELECT, WITH, EXPLAIN, VALUES); "
                "the index is derived from records.jsonl: change that file instead"
            )
        try:
            cursor = self.db.execute(statement, list(params))
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise QueryError(f"SQL refused: {exc}") from exc
        columns = [d[0] for d in cursor.description or ()]
        return SqlResult(columns, rows)


def _keep_boxes(record: Record, keep: set[int]) -> Record:
    boxes = [box for k, box in enumerate(record.boxes) if k in keep]
    counts: dict[str, int] = {}
    for box in boxes:
        counts[box.name] = counts.get(box.name, 0) + 1
    return msgspec.structs.replace(
        record,
        boxes=boxes,
        labels=sorted(counts),
        counts=counts if record.counts else {},
    )


_SUFFIXES = {
    "eq": "=",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "lte": "<=",
    "gt": ">",
    "ge": ">=",
    "gte": ">=",
    "glob": "~",
    "in": "in",
}


def _keyword(key: str, value: Any, fields: dict[str, str]) -> Compare:
    """``max_side__lt=32`` -> ``max_side < 32``; ``label="car"`` -> ``label = car``."""
    name, _, suffix = key.partition("__")
    op = _SUFFIXES.get(suffix or "eq")
    if op is None:
        raise QueryError(f"{key}: unknown comparison {suffix!r}; use one of {', '.join(_SUFFIXES)}")
    if name.startswith("attr_"):
        name = "attr." + name[5:]
    elif name not in fields:
        raise QueryError(suggest(name, list(fields), "field"))
    return _compare(name, op, value, fields)


def _compare(name: str, op: str, value: Any, fields: dict[str, str]) -> Compare:
    if op not in (*OPERATORS, "in"):
        raise QueryError(f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}, in")
    if name.startswith("attr."):
        if not re.fullmatch(r"[\w\-]+", name[5:]):
            raise QueryError(f"attribute names are letters, digits, _ and -; got {name[5:]!r}")
        kind = "any"
    elif name in fields:
        kind = fields[name]
    else:
        raise QueryError(suggest(name, list(fields), "field"))
    values = tuple(value) if op == "in" else (value,)
    for item in values:
        if kind == "number" and (isinstance(item, bool) or not isinstance(item, int | float)):
            raise QueryError(f"{name} {op}: expected a number, got {item!r}")
        if kind == "text" and not isinstance(item, str):
            raise QueryError(f"{name} {op}: expected text, got {item!r}")
        if not isinstance(item, str | int | float | bool):
            raise QueryError(f"{name} {op}: expected a number, text or true/false, got {item!r}")
    if op == "~" and kind == "number":
        raise QueryError(f"'~' (glob) compares text; {name} is a number")
    checked: tuple[Value, ...] = values
    return Compare(name, op, checked if op == "in" else checked[0])


def _and(left: Node | None, right: Node) -> Node:
    if left is None:
        return right
    if isinstance(left, And):
        return And((*left.items, right))
    return And((left, right))


class Query:
    """A query over a dataset: a record condition and an optional box filter.

    Built from text (``Query(root, "split = train and count(car) >= 2")``) or with the
    builder methods, each of which returns a new query::

        ds.query().split("train").count("car", ">=", 2).none("person").boxes(max_side__lt=32)

    The result is used like a dataset: ``len``, iteration, :meth:`records`,
    :meth:`samples`, :meth:`torch`, or :meth:`dataset` for a :class:`Dataset` of the
    matching records.

    Raises:
        QueryError: a syntax error (column, what was expected), an unknown field.
    """

    def __init__(
        self,
        root: Path | str,
        text: str | Node | None = None,
        boxes: str | Node | None = None,
        *,
        source: Dataset | None = None,
        rebuild: bool = True,
        reporter: Reporter | None = None,
    ) -> None:
        self.root = Path(root)
        self.where: Node | None = (
            parse(text)
            if isinstance(text, str) and text.strip()
            else (None if isinstance(text, str) else text)
        )
        self.box_filter: Node | None = (
            parse(boxes, "box")
            if isinstance(boxes, str) and boxes.strip()
            else (None if isinstance(boxes, str) else boxes)
        )
        self.source = source
        self.rebuild = rebuild
        self.reporter = reporter
        self._dataset: Dataset | None = None

    def _with(self, where: Node | None, box_filter: Node | None) -> Query:
        return Query(
            self.root,
            where,
            box_filter,
            source=self.source,
            rebuild=self.rebuild,
            reporter=self.reporter,
        )

    def __repr__(self) -> str:
        return f"Query({str(self.root)!r}, {self.text!r}, boxes={self.boxes_text!r})"

    # -- text ------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The record condition as query text (``""``: every record)."""
        return to_text(self.where) if self.where is not None else ""

    @property
    def boxes_text(self) -> str | None:
        """The box filter as text (``None``: boxes are kept as they are)."""
        return to_text(self.box_filter) if self.box_filter is not None else None

    @property
    def effective(self) -> Node | None:
        """The record condition, with "has a box that passes the filter" when there is one."""
        if self.box_filter is None:
            return self.where
        return _and(self.where, Box(self.box_filter))

    # -- builder ---------------------------------------------------------------------

    def match(self, text: str) -> Query:
        """And a condition in the query language."""
        return self._with(_and(self.where, parse(text)), self.box_filter)

    def filter(self, field_name: str, op: str, value: Any) -> Query:
        """And ``field op value`` (``attr.NAME`` for attributes; ``op`` ``in``: a list)."""
        return self._with(
            _and(self.where, _compare(field_name, op, value, RECORD_FIELDS)), self.box_filter
        )

    def split(self, *names: str) -> Query:
        """Records of one split, or of any of several."""
        if len(names) == 1:
            return self.filter("split", "=", names[0])
        return self.filter("split", "in", list(names))

    def count(self, label: str, op: str, n: int) -> Query:
        """Records with ``count(label) op n``."""
        if op not in OPERATORS or op == "~":
            raise QueryError(f"count(): unknown operator {op!r}; use = != < <= > >=")
        if isinstance(n, bool) or not isinstance(n, int):
            raise QueryError(f"count({label}) {op}: expected a whole number, got {n!r}")
        return self._with(_and(self.where, Count(label, op, n)), self.box_filter)

    def has(self, label: str) -> Query:
        """Records with at least one ``label``."""
        return self.count(label, ">=", 1)

    def none(self, label: str) -> Query:
        """Records without ``label``."""
        return self._with(_and(self.where, Not(Count(label, ">=", 1))), self.box_filter)

    def file(self, glob: str) -> Query:
        """Records whose ``file`` matches a glob (``images/2017*``)."""
        return self.filter("file", "~", glob)

    def size(self, **bounds: float) -> Query:
        """Image size bounds: ``width__ge=640``, ``height__lt=480``, ``aspect__gt=1.5``."""
        query = self
        for key, value in bounds.items():
            query = query._with(
                _and(query.where, _keyword(key, value, RECORD_FIELDS)), query.box_filter
            )
        return query

    def attr(self, name: str, op: str, value: Value) -> Query:
        """Records whose attribute ``name`` compares so with ``value``."""
        return self.filter(f"attr.{name}", op, value)

    def boxes(self, text: str | None = None, **conditions: Any) -> Query:
        """Keep only the boxes that pass (and only records with at least one), like
        FiftyOne's ``filter_labels``: ``boxes(label="car", max_side__lt=32)`` or
        ``boxes("label = car and max_side < 32")``."""
        node: Node | None = parse(text, "box") if text else None
        for key, value in conditions.items():
            node = _and(node, _keyword(key, value, BOX_FIELDS))
        if node is None:
            raise QueryError("boxes(): give a condition, e.g. boxes(max_side__lt=32)")
        return self._with(self.where, _and(self.box_filter, node))

    # -- results ---------------------------------------------------------------------

    def index(self) -> DatasetIndex:
        """The dataset's index, open (built first when needed); close it when done."""
        return DatasetIndex.open(self.root, rebuild=self.rebuild, reporter=self.reporter)

    def count_records(self) -> int:
        """How many records match."""
        with self.index() as index:
            return index.count(self)

    def ids(self) -> list[str]:
        """Ids of the matching records, in file order."""
        with self.index() as index:
            return index.ids(self)

    def records(
        self,
        split: str | Iterable[str] | None = None,
        classes: Any = None,
        keep_empty: bool = False,
    ) -> list[Record]:
        """The matching records (see :meth:`Dataset.records`)."""
        return self.dataset().records(split=split, classes=classes, keep_empty=keep_empty)

    def dataset(self) -> Dataset:
        """A :class:`Dataset` of the matching records (same description and directory)."""
        if self._dataset is None:
            from mlbook.datasets.dataset import Dataset, _classes_from_records

            with self.index() as index:
                found = index.records(self)
            info = load_info(self.root)
            if self.source is not None:
                info = self.source.info
            elif info is None:
                from mlbook.datasets.metadata import DatasetInfo

                info = DatasetInfo(
                    name=self.root.resolve().name, classes=_classes_from_records(found)
                )
            self._dataset = Dataset(info, found, self.root)
        return self._dataset

    def samples(
        self, split: str | Iterable[str] | None = None, classes: Any = None, images: bool = False
    ) -> Any:
        """Samples of the matching records (see :meth:`Dataset.samples`)."""
        return self.dataset().samples(split=split, classes=classes, images=images)

    def torch(
        self, split: str | Iterable[str] | None = None, classes: Any = None, **options: Any
    ) -> Any:
        """A torch dataset of the matching records (see :meth:`Dataset.torch`)."""
        return self.dataset().torch(split=split, classes=classes, **options)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.dataset())

    def __len__(self) -> int:
        return len(self.dataset())
