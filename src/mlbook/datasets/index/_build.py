"""Build the derived SQLite index of a dataset and tell whether it is still true.

The index is built into a temporary file beside its final place, in one transaction,
with the indexes created after the bulk load; the completion marker (``meta.complete``)
is written last, the file is synced, then renamed into place. An index without the
marker, of another schema, that SQLite cannot read, or whose records hash differs from
``records.jsonl``'s is never used: :func:`ensure_index` rebuilds it.

Freshness costs one ``stat`` while ``records.jsonl`` keeps its size, mtime and inode;
otherwise the file is hashed (sha256) and compared with the hash the index was built
from, so a touched but unchanged file does not rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from mlbook.datasets.metadata import Record, decode_record, no_gc, records_path
from mlbook.errors import DatasetError, QueryError
from mlbook.progress import NullReporter, Reporter

__all__ = [
    "INDEX_SCHEMA",
    "SUMMARY_COLUMNS",
    "IndexState",
    "build_index",
    "ensure_index",
    "index_path",
    "index_state",
    "label_count",
    "records_hash",
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
    crowd INTEGER NOT NULL, attrs TEXT
);
CREATE TABLE record_labels (lid INTEGER NOT NULL, n INTEGER NOT NULL, rid INTEGER NOT NULL);
"""

# created after the bulk load, in the same transaction. Boxes need no index: a record's
# boxes are the rows box0 .. box0 + nboxes - 1; a box condition scans them.
_INDEXES = """
CREATE INDEX record_labels_lid ON record_labels (lid, n, rid);
"""


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


def index_path(dataset: Path) -> Path:
    """Where the index of ``dataset`` lives: ``.mlbook/index/`` of the project holding it
    (git-ignored machine state), else the user's cache directory."""
    root = dataset.resolve()
    for directory in (root, *root.parents):
        if (directory / "mlbook.toml").is_file():
            relative = root.relative_to(directory).as_posix() or "."
            name = relative.replace("/", "__").replace(".", "_") or "_"
            return directory / ".mlbook" / "index" / f"{name}.sqlite"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return cache / "mlbook" / "index" / f"{root.name}-{digest}.sqlite"


def records_hash(path: Path) -> str:
    """sha256 of the records file's bytes."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _signature(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


@dataclass(frozen=True)
class IndexState:
    """What the index of a dataset is worth now.

    ``state``: ``fresh`` (built from the records as they are), ``stale`` (the records
    changed), ``missing``, or ``broken`` (half-built, another schema, or unreadable;
    ``why`` says which).
    """

    state: str
    path: Path
    records: Path
    hash: str | None = None
    why: str = ""

    @property
    def fresh(self) -> bool:
        """True when the index can be trusted."""
        return self.state == "fresh"


def _read_meta(path: Path) -> dict[str, str]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        rows = db.execute("SELECT key, value FROM meta").fetchall()
        version = db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()
    meta = dict(rows)
    meta["user_version"] = str(version)
    return meta


def index_state(dataset: Path, path: Path | None = None) -> IndexState:
    """Whether the index of ``dataset`` is fresh, stale, missing or broken (one ``stat``
    and one small read while the records file is unchanged)."""
    records = records_path(dataset)
    path = path or index_path(dataset)
    try:
        stat = records.stat()
    except FileNotFoundError:
        what = "no records file" if dataset.is_dir() else "not a dataset directory"
        raise DatasetError(f"{dataset}: {what}; expected {records.name} in it") from None
    except OSError as exc:
        raise DatasetError(f"{records}: cannot read the records: {exc.strerror}") from exc
    if not path.exists():
        return IndexState("missing", path, records)
    try:
        meta = _read_meta(path)
    except sqlite3.Error as exc:
        return IndexState("broken", path, records, why=f"unreadable or half-built ({exc})")
    if meta.get("complete") != "1":
        return IndexState("broken", path, records, why="half-built: its build did not finish")
    if meta.get("user_version") != str(INDEX_SCHEMA):
        return IndexState("broken", path, records, why="made by another version of mlbook")
    if meta.get("signature") == _signature(stat):
        return IndexState("fresh", path, records, meta.get("hash"))
    digest = records_hash(records)
    if digest != meta.get("hash"):
        return IndexState("stale", path, records, digest, why=f"{records.name} changed")
    with contextlib.suppress(sqlite3.Error, OSError):  # same bytes, new mtime: remember it
        db = sqlite3.connect(path)
        with db:
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'signature'", (_signature(records.stat()),)
            )
        db.close()
    return IndexState("fresh", path, records, digest)


def ensure_index(
    dataset: Path, *, rebuild: bool = True, reporter: Reporter | None = None
) -> IndexState:
    """A fresh index of ``dataset``: built when missing, rebuilt when stale or broken.

    Raises:
        QueryError: the index is not fresh and ``rebuild`` is False.
        RecordError: a record cannot be read (file, line, field).
    """
    state = index_state(dataset)
    if state.fresh:
        return state
    if not rebuild:
        what = {"missing": "not built yet", "stale": "stale"}.get(state.state, "broken")
        why = f" ({state.why})" if state.why else ""
        raise QueryError(
            f"the index of {dataset} is {what}{why}; run without --no-rebuild to build it"
        )
    return build_index(dataset, state.path, reporter=reporter)


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


def _blocks(handle: BinaryIO, sha: Any) -> Iterator[tuple[int, int, bytes]]:
    """(first line number, offset, block of whole lines) read from ``handle``, every
    byte fed to ``sha`` on the way (memory: one block)."""
    offset = 0
    line = 1
    rest = b""
    while True:
        chunk = handle.read(_BLOCK)
        if chunk:
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


def _decode_block(
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


class _Loader:
    """Turns records into rows; label ids and summary columns are assigned as met."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.lids: dict[str, int] = {}
        self.cols: dict[str, int] = {}
        self.label_records: dict[int, int] = {}
        self.label_boxes: dict[int, int] = {}
        self.rid = 0
        self.bid = 0

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
        for record in sample:
            for name in _label_counts(record):
                seen[name] = seen.get(name, 0) + 1
        ranked = sorted(seen, key=lambda n: (-seen[n], n))[:SUMMARY_COLUMNS]
        for col, name in enumerate(ranked):
            self.lid(name)
            self.cols[name] = col

    def load(self, records: list[_Rec | Record], spans: list[tuple[int, int]]) -> None:
        record_rows: list[tuple[Any, ...]] = []
        info_rows: list[tuple[Any, ...]] = []
        box_rows: list[tuple[Any, ...]] = []
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
                    box_rows.append(
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
        self.db.executemany("INSERT INTO boxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", box_rows)
        self.db.executemany("INSERT INTO record_labels VALUES (?, ?, ?)", label_rows)

    def finish(self) -> None:
        self.db.executemany(
            "INSERT INTO labels (lid, name, col, records, boxes) VALUES (?, ?, ?, ?, ?)",
            [
                (lid, name, self.cols.get(name), self.label_records[lid], self.label_boxes[lid])
                for name, lid in self.lids.items()
            ],
        )


def _remove_leftovers(path: Path) -> None:
    """Delete the temporary files of builds whose process is gone (killed mid-build)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        pid = leftover.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except OSError:  # alive, but another user's
            continue


def build_index(
    dataset: Path, path: Path | None = None, *, reporter: Reporter | None = None
) -> IndexState:
    """Build the index of ``dataset`` (into a temporary file, then renamed into place).

    Raises:
        DatasetError: the records cannot be read, the index cannot be written;
        RecordError: a bad record (file, line, field).
    """
    reporter = reporter or NullReporter()
    records = records_path(dataset)
    path = path or index_path(dataset)
    if records.suffix == ".json":
        raise DatasetError(
            f"{records}: the index reads JSON Lines; rewrite it as records.jsonl "
            "(`mlbook data convert` writes it)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(path)
        handle, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        os.close(handle)
    except OSError as exc:
        raise DatasetError(f"{path.parent}: cannot write the index: {exc.strerror}") from exc
    temp = Path(temp_name)
    try:
        digest = _fill(temp, records, reporter)
        with temp.open("rb+") as synced:
            os.fsync(synced.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error | OSError):
            raise DatasetError(f"{path}: cannot write the index: {exc}") from exc
        raise
    return IndexState("fresh", path, records, digest)


def _fill(temp: Path, records: Path, reporter: Reporter) -> str:
    """Fill the new index at ``temp``; returns the hash of the records it read."""
    try:
        handle = records.open("rb")
        stat = os.fstat(handle.fileno())
    except OSError as exc:
        raise DatasetError(f"{records}: cannot read the records: {exc.strerror}") from exc
    sha = hashlib.sha256()
    db = sqlite3.connect(temp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -65536")
        db.execute("BEGIN")
        for statement in _TABLES.split(";"):
            if statement.strip():
                db.execute(statement)
        loader = _Loader(db)
        with no_gc(), reporter.task(f"indexing {records.name}", total=stat.st_size) as task:
            for first_line, offset, block in _blocks(handle, sha):
                decoded, spans = _decode_block(first_line, offset, block, records)
                if loader.rid == 0:
                    loader.choose_columns(decoded[:_SAMPLE])
                loader.load(decoded, spans)
                task.advance(len(block))
        loader.finish()
        digest = sha.hexdigest()
        for statement in _INDEXES.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("PRAGMA analysis_limit = 1000")
        db.execute("ANALYZE")
        meta = {
            "hash": digest,
            "signature": _signature(stat),
            "records_file": records.name,
            "count": str(loader.rid),
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        db.execute(f"PRAGMA user_version = {INDEX_SCHEMA}")
        db.execute("INSERT INTO meta VALUES ('complete', '1')")  # the completion marker, last
        db.execute("COMMIT")
    finally:
        db.close()
        handle.close()
    if _signature(records.stat()) != _signature(stat):
        raise DatasetError(f"{records}: changed while it was being indexed; run the query again")
    return digest
