"""Build the derived SQLite index of a dataset and tell whether it is still true.

The index is built into a temporary file beside its final place, in one transaction,
with the indexes created after the bulk load; the completion marker (``meta.complete``)
is written last, the file is synced, then renamed into place. An index without the
marker, of another schema, that SQLite cannot read, or whose records hash differs from
``records.jsonl``'s is never used: :func:`ensure_index` rebuilds it.

A file of :data:`PARALLEL_MIN` bytes or more is indexed by two processes when there
are two CPUs: this one indexes the first part while a worker (:mod:`._worker`)
indexes the rest into a scratch file, whose rows are then copied in (ids shifted,
labels mapped by name). The summary columns are chosen from the first block before
the worker starts, so both parts use the same ones.

Freshness costs one ``stat`` while ``records.jsonl`` keeps its size, mtime and inode;
otherwise the file is hashed (sha256) and compared with the hash the index was built
from, so a touched but unchanged file does not rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mlbook.datasets.index._parallel import Failed, Start, Worker, merge
from mlbook.datasets.index._rows import (
    INDEX_SCHEMA,
    INDEXES,
    SUMMARY_COLUMNS,
    Loader,
    blocks,
    decode_block,
    label_count,
    open_build,
)
from mlbook.datasets.metadata import no_gc, records_path
from mlbook.errors import DatasetError, QueryError, RecordError
from mlbook.progress import NullReporter, ProgressTask, Reporter

__all__ = [
    "INDEX_SCHEMA",
    "PARALLEL_MIN",
    "SUMMARY_COLUMNS",
    "IndexState",
    "build_index",
    "ensure_index",
    "index_path",
    "index_state",
    "label_count",
    "records_hash",
]
#: records files of at least this many bytes are indexed by two processes (see
#: :func:`build_index`); below it, starting a second process costs more than it saves
PARALLEL_MIN = 32 << 20
#: the builder's share of the file in a two-process build: it also hashes the whole
#: file and copies the worker's rows in
_SHARE = 0.48
_CHUNK = 8 << 20


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
    dataset: Path,
    path: Path | None = None,
    *,
    reporter: Reporter | None = None,
    processes: int | None = None,
) -> IndexState:
    """Build the index of ``dataset`` (into a temporary file, then renamed into place).

    Args:
        dataset: the dataset directory.
        path: where the index goes (default: :func:`index_path`).
        reporter: shows the progress (bytes of ``records.jsonl`` indexed).
        processes: 1 (this process only) or 2 (a worker process indexes the second
            half of the file); ``None`` picks 2 when the file has at least
            :data:`PARALLEL_MIN` bytes and there are two CPUs.

    Raises:
        DatasetError: the records cannot be read, the index cannot be written, the
            worker process stopped;
        RecordError: a bad record (file, line, field).
    """
    if processes not in (None, 1, 2):
        raise ValueError(f"processes must be 1, 2 or None, not {processes!r}")
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
        digest = _fill(temp, records, reporter, processes)
        with temp.open("rb+") as synced:
            os.fsync(synced.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error | OSError):
            raise DatasetError(f"{path}: cannot write the index: {exc}") from exc
        raise
    return IndexState("fresh", path, records, digest)


def _split(handle: BinaryIO, size: int, processes: int | None) -> int | None:
    """Where the worker's part begins (a line's start), or None for a one-process
    build."""
    if processes is None:
        processes = 2 if size >= PARALLEL_MIN and (os.cpu_count() or 1) >= 2 else 1
    if processes == 1 or size < 2:
        return None
    handle.seek(max(int(size * _SHARE) - 1, 0))
    handle.readline()
    split = handle.tell()
    return split if 0 < split < size else None


def _fill(temp: Path, records: Path, reporter: Reporter, processes: int | None) -> str:
    """Fill the new index at ``temp``; returns the hash of the records it read."""
    try:
        handle = records.open("rb")
        stat = os.fstat(handle.fileno())
    except OSError as exc:
        raise DatasetError(f"{records}: cannot read the records: {exc.strerror}") from exc
    sha = hashlib.sha256()
    worker: Worker | None = None
    scratch: Path | None = None
    db: sqlite3.Connection | None = None
    try:
        split = _split(handle, stat.st_size, processes)
        db = open_build(temp)
        loader = Loader(db)
        with no_gc(), reporter.task(f"indexing {records.name}", total=stat.st_size) as task:
            if split is not None:
                scratch = _scratch(temp)
                worker = Worker(records)  # it starts while the first block is read
            first = True
            for first_line, offset, block in blocks(handle, sha, 0, split):
                decoded, spans = decode_block(first_line, offset, block, records)
                if first:
                    loader.choose_columns(decoded)
                loader.load(decoded, spans)
                if first and worker is not None and scratch is not None and split is not None:
                    columns = sorted(loader.cols, key=loader.cols.__getitem__)
                    start = Start(
                        str(records), str(scratch), split, stat.st_size, columns, list(loader.lids)
                    )
                    worker.begin(start)
                first = False
                task.advance(len(block) + (worker.poll() if worker is not None else 0))
            if worker is not None and scratch is not None and split is not None:
                _hash_rest(handle, sha, split, stat.st_size, worker, task)
                answer = worker.wait(task)
                if isinstance(answer, Failed):
                    raise _worker_error(answer, records, handle, split)
                merge(db, loader, scratch, answer)
        loader.finish()
        digest = sha.hexdigest()
        for statement in INDEXES.split(";"):
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
    except BaseException:
        if worker is not None:
            worker.kill()
        raise
    finally:
        if db is not None:
            db.close()
        if worker is not None:
            worker.stop()
        if scratch is not None:
            scratch.unlink(missing_ok=True)
        handle.close()
    if _signature(records.stat()) != _signature(stat):
        raise DatasetError(f"{records}: changed while it was being indexed; run the query again")
    return digest


def _scratch(temp: Path) -> Path:
    """A new empty scratch file for the worker, named like ``temp`` (so a killed build's
    leftovers are removed by the next build)."""
    handle, name = tempfile.mkstemp(
        prefix=temp.name.removesuffix(".tmp") + ".", suffix=".worker.tmp", dir=temp.parent
    )
    os.close(handle)
    return Path(name)


def _hash_rest(
    handle: BinaryIO, sha: Any, start: int, end: int, worker: Worker, task: ProgressTask
) -> None:
    """Feed bytes ``[start, end)`` (the worker's part) to ``sha``."""
    handle.seek(start)
    left = end - start
    while left > 0:
        chunk = handle.read(min(_CHUNK, left))
        if not chunk:
            break
        sha.update(chunk)
        left -= len(chunk)
        task.advance(worker.poll())


def _worker_error(answer: Failed, records: Path, handle: BinaryIO, split: int) -> Exception:
    """The error the worker's failure is in this process: a bad record's line counted
    from the start of the file, as a one-process build says it."""
    if answer.bug:
        return RuntimeError(f"the index worker failed: {answer.message}")
    if not answer.record:
        return DatasetError(answer.message)
    line = answer.line
    if line is not None:
        handle.seek(0)
        left = split
        while left > 0:
            chunk = handle.read(min(_CHUNK, left))
            if not chunk:
                break
            line += chunk.count(b"\n")
            left -= len(chunk)
    return RecordError(records, line, answer.field, answer.problem)
