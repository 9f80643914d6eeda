"""Records to rows: the index's tables, the block reader and the loader.

Shared by the builder (:mod:`._build`) and the worker process (:mod:`._worker`),
so both halves of a two-process build write the same schema the same way.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from mlbook.datasets.metadata import Record, decode_record

__all__ = [
    "INDEXES",
    "INDEX_SCHEMA",
    "SUMMARY_COLUMNS",
    "Loader",
    "blocks",
    "decode_block",
    "label_count",
    "open_build",
]

#: bump when the tables change: an index of another schema is rebuilt
INDEX_SCHEMA = 3
#: per-record count columns (c0, c1...) for the most common labels of the first records
SUMMARY_COLUMNS = 16
_BLOCK = 8 << 20
_SAMPLE = 20_000

_TABLES = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE labels (
    lid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, col INTEGER,
    records INTEGER NOT NULL DEFAULT 0, boxes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE records (
    rid INTEGER PRIMARY KEY, id TEXT NOT NULL, split TEXT, width INTEGER, height INTEGER,
    nboxes INTEGER NOT NULL, nlabels INTEGER NOT NULL, min_side REAL, max_side REAL,
    {", ".join(f"c{i} INTEGER NOT NULL DEFAULT 0" for i in range(SUMMARY_COLUMNS))}
);
CREATE TABLE record_info (
    rid INTEGER PRIMARY KEY, file TEXT, attrs TEXT, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, box0 INTEGER, counts TEXT
);
CREATE TABLE boxes (
    bid INTEGER PRIMARY KEY, rid INTEGER NOT NULL, lid INTEGER NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,
    crowd INTEGER NOT NULL DEFAULT 0, attrs TEXT
);
CREATE TABLE record_labels (lid INTEGER NOT NULL, n INTEGER NOT NULL, rid INTEGER NOT NULL);
"""

# created after the bulk load, in the same transaction. Boxes need no index: a record's
# boxes are the rows box0 .. box0 + nboxes - 1; a box condition scans them.
INDEXES = """
CREATE INDEX record_labels_lid ON record_labels (lid, n, rid);
"""


def open_build(path: Path) -> sqlite3.Connection:
    """A connection to a new, empty index file at ``path``: the tables created, one
    transaction open, no journal (a failed build is deleted, never repaired)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -65536")
        db.execute("BEGIN")
        for statement in _TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
    except BaseException:
        db.close()
        raise
    return db


def label_count(record: Record, name: str) -> int:
    """How many ``name`` a record has: the most of its boxes of that class, its
    ``counts`` entry, and 1 when it is among its ``labels``."""
    boxes = sum(1 for box in record.boxes if box.name == name)
    return max(boxes, record.counts.get(name, 0), 1 if name in record.labels else 0)


def _label_counts(record: _Rec | Record) -> dict[str, int]:
    counts: dict[str, int] = {}
    for box in record.boxes:
        counts[box.name] = counts.get(box.name, 0) + 1
    for name, n in record.counts.items():
        if n > counts.get(name, 0):
            counts[name] = n
    for name in record.labels:
        if name not in counts:
            counts[name] = 1
    return {name: n for name, n in counts.items() if n > 0}


class _Box(msgspec.Struct, kw_only=True, gc=False):
    """The fields of a box the index keeps (others, like segmentation, are skipped)."""

    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    iscrowd: bool = False
    attributes: dict[str, Any] = {}


class _Rec(msgspec.Struct, kw_only=True, gc=False):
    """The fields of a canonical record the index keeps; loose forms fail this type and
    are read by :func:`decode_record` instead."""

    id: str
    file: str | None = None
    width: int | None = None
    height: int | None = None
    labels: list[str] = []
    counts: dict[str, int] = {}
    boxes: list[_Box] = []
    split: str | None = None
    attributes: dict[str, Any] = {}


_LINES = msgspec.json.Decoder(_Rec)
_NEWLINE = re.compile(b"\n")
_ENCODE = msgspec.json.encode


def blocks(
    handle: BinaryIO, sha: Any = None, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, bytes]]:
    """(first line number, offset, block of whole lines) read from ``handle`` between
    byte ``start`` (a line's start; its line is numbered 1) and ``end`` (default: the
    end of the file), every byte fed to ``sha`` on the way (memory: one block)."""
    handle.seek(start)
    offset = start
    line = 1
    rest = b""
    left = -1 if end is None else end - start
    while True:
        chunk = handle.read(_BLOCK if left < 0 else min(_BLOCK, left)) if left else b""
        if chunk:
            if left > 0:
                left -= len(chunk)
            if sha is not None:
                sha.update(chunk)
        data = rest + chunk
        if not chunk:
            if data:
                yield line, offset, data
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        block, rest = data[:cut], data[cut:]
        yield line, offset, block
        line += block.count(b"\n")
        offset += cut


def decode_block(
    first_line: int, offset: int, block: bytes, path: Path
) -> tuple[list[_Rec | Record], list[tuple[int, int]]]:
    """The records of a block of lines and the (offset, length) of each."""
    if b"\r" not in block and b"\n\n" not in block and not block.startswith(b"\n"):
        ends = [m.start() for m in _NEWLINE.finditer(block)]
        if not block.endswith(b"\n"):
            ends.append(len(block))
        starts = [0, *(end + 1 for end in ends[:-1])]
        fast = [(offset + start, end - start) for start, end in zip(starts, ends, strict=True)]
        try:
            decoded_fast: list[_Rec | Record] = list(_LINES.decode_lines(block))
            if len(decoded_fast) == len(fast):
                return decoded_fast, fast
        except (msgspec.DecodeError, RecursionError):
            pass
    spans: list[tuple[int, int]] = []
    lines: list[tuple[int, bytes]] = []
    position = offset
    for number, raw in enumerate(block.split(b"\n"), start=first_line):
        text = raw.rstrip(b"\r")
        if text.strip():
            spans.append((position, len(text)))
            lines.append((number, text))
        position += len(raw) + 1
    try:
        decoded: list[_Rec | Record] = list(_LINES.decode_lines(block))
        if len(decoded) == len(spans):
            return decoded, spans
    except (msgspec.DecodeError, RecursionError):
        pass
    return [decode_record(text, path, number) for number, text in lines], spans


class Loader:
    """Turns records into rows; label ids are assigned as met, in order.

    Args:
        db: the index being built (a transaction open).
        columns: the labels of the summary columns, when already chosen (a worker
            gets them from the builder); otherwise :meth:`choose_columns` picks them.
        labels: labels whose ids are already given, in id order (columns first).
    """

    def __init__(
        self, db: sqlite3.Connection, columns: Sequence[str] = (), labels: Sequence[str] = ()
    ) -> None:
        self.db = db
        self.lids: dict[str, int] = {}
        self.cols: dict[str, int] = {name: col for col, name in enumerate(columns)}
        self.label_records: dict[int, int] = {}
        self.label_boxes: dict[int, int] = {}
        self.rid = 0
        self.bid = 0
        for name in (*columns, *labels):
            self.lid(name)

    def lid(self, name: str) -> int:
        found = self.lids.get(name)
        if found is None:
            found = self.lids[name] = len(self.lids)
            self.label_records[found] = 0
            self.label_boxes[found] = 0
        return found

    def choose_columns(self, sample: list[_Rec | Record]) -> None:
        """Summary columns for the most common labels of the first records."""
        seen: dict[str, int] = {}
        for record in sample[:_SAMPLE]:
            for name in _label_counts(record):
                seen[name] = seen.get(name, 0) + 1
        ranked = sorted(seen, key=lambda n: (-seen[n], n))[:SUMMARY_COLUMNS]
        for col, name in enumerate(ranked):
            self.lid(name)
            self.cols[name] = col

    def load(self, records: list[_Rec | Record], spans: list[tuple[int, int]]) -> None:
        record_rows: list[tuple[Any, ...]] = []
        info_rows: list[tuple[Any, ...]] = []
        box_rows: list[tuple[Any, ...]] = []  # plain boxes: crowd and attrs take defaults
        full_box_rows: list[tuple[Any, ...]] = []
        label_rows: list[tuple[int, int, int]] = []
        cols = self.cols
        lids = self.lids
        label_records = self.label_records
        label_boxes = self.label_boxes
        encode = _ENCODE
        rid = self.rid
        bid = self.bid
        zeros = [0] * SUMMARY_COLUMNS
        for record, (offset, length) in zip(records, spans, strict=True):
            boxes = record.boxes
            counts: dict[str, int] = {}
            low = high = box0 = None
            if boxes:
                box0 = bid
                for box in boxes:
                    name = box.name
                    counts[name] = counts.get(name, 0) + 1
                    x1 = box.x1
                    y1 = box.y1
                    w = box.x2 - x1
                    h = box.y2 - y1
                    if w < h:
                        if low is None or w < low:
                            low = w
                        if high is None or h > high:
                            high = h
                    else:
                        if low is None or h < low:
                            low = h
                        if high is None or w > high:
                            high = w
                    lid = lids.get(name)
                    if lid is None:
                        lid = self.lid(name)
                    label_boxes[lid] += 1
                    attributes = box.attributes
                    if attributes or box.iscrowd:
                        full_box_rows.append(
                            (
                                bid,
                                rid,
                                lid,
                                x1,
                                y1,
                                w,
                                h,
                                1 if box.iscrowd else 0,
                                encode(attributes) if attributes else None,
                            )
                        )
                    else:
                        box_rows.append((bid, rid, lid, x1, y1, w, h))
                    bid += 1
            if record.counts:
                for name, n in record.counts.items():
                    if n > counts.get(name, 0):
                        counts[name] = n
                counts = {name: n for name, n in counts.items() if n > 0}
            for name in record.labels:
                if name not in counts:
                    counts[name] = 1
            summary = zeros.copy()
            for name, n in counts.items():
                lid = lids.get(name)
                if lid is None:
                    lid = self.lid(name)
                label_records[lid] += 1
                col = cols.get(name)
                if col is None:
                    label_rows.append((lid, n, rid))
                else:
                    summary[col] = n
            record_rows.append(
                (
                    rid,
                    record.id,
                    record.split,
                    record.width,
                    record.height,
                    len(boxes),
                    len(counts),
                    low,
                    high,
                    *summary,
                )
            )
            attrs = record.attributes
            info_rows.append(
                (
                    rid,
                    record.file,
                    encode(attrs) if attrs else None,
                    offset,
                    length,
                    box0,
                    encode(counts) if counts else None,
                )
            )
            rid += 1
        self.rid, self.bid = rid, bid
        marks = ", ".join("?" * (9 + SUMMARY_COLUMNS))
        self.db.executemany(f"INSERT INTO records VALUES ({marks})", record_rows)
        self.db.executemany("INSERT INTO record_info VALUES (?, ?, ?, ?, ?, ?, ?)", info_rows)
        self.db.executemany(
            "INSERT INTO boxes (bid, rid, lid, x, y, w, h) VALUES (?, ?, ?, ?, ?, ?, ?)", box_rows
        )
        if full_box_rows:
            self.db.executemany(
                "INSERT INTO boxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", full_box_rows
            )
        self.db.executemany("INSERT INTO record_labels VALUES (?, ?, ?)", label_rows)

    def finish(self) -> None:
        """Write the labels table (ids, summary columns, totals)."""
        self.db.executemany(
            "INSERT INTO labels (lid, name, col, records, boxes) VALUES (?, ?, ?, ?, ?)",
            [
                (lid, name, self.cols.get(name), self.label_records[lid], self.label_boxes[lid])
                for name, lid in self.lids.items()
            ],
        )
