"""DVC's md5 of a file or a directory, computed natively, and a cache of what was hashed.

:func:`content_hash` gives what ``dvc add`` would write for a path: a file's md5,
or for a directory ``md5(json.dumps(sorted [{"md5", "relpath"}], sort_keys=True))``
followed by ``.dir``, with the size and file count. Scheme ``md5`` (DVC 3) hashes
the bytes as they are; ``md5-dos2unix`` (DVC 2) first turns CRLF into LF in every
1 MiB block whose first 512 bytes look like text, exactly as DVC does.

Nothing is hashed twice while it is unchanged. :class:`HashCache`
(``.mlbook/cache/datahash.sqlite``) remembers, per path and scheme, the md5 of each
file (by inode, mtime and size) and of each directory (by a digest of its listing:
every file's name, inode, mtime and size). A file mlbook has not seen is looked up
in DVC's own state (:class:`~mlbook.provenance.dvc.DvcState`) before it is read.
A file modified within the last two seconds is not remembered (its mtime may not
change on the next write), so an edit is never missed. The cache is derived: it
can be deleted at any time, and a cache that cannot be written is only slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbook.provenance.dvc import DvcState, walk_files

__all__ = ["CACHE_FILE", "ContentHash", "HashCache", "content_hash", "file_md5", "tree_md5"]

CACHE_FILE = "datahash.sqlite"
_CHUNK = 1 << 20
_TEXT_BLOCK = 512
_TEXT_CHARS = bytes(range(32, 127)) + b"\n\r\t\f\b"
#: files modified this recently are hashed but not remembered
RACY_SECONDS = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT NOT NULL, scheme TEXT NOT NULL, ino INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL, md5 TEXT NOT NULL, PRIMARY KEY (path, scheme)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (
    path TEXT NOT NULL, scheme TEXT NOT NULL, listing TEXT NOT NULL, md5 TEXT NOT NULL,
    size INTEGER NOT NULL, nfiles INTEGER NOT NULL, PRIMARY KEY (path, scheme)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parsed (
    path TEXT PRIMARY KEY, signature TEXT NOT NULL, data TEXT NOT NULL
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class ContentHash:
    """DVC's hash of a path: ``md5`` (``<hex>`` or ``<hex>.dir``), size, file count, scheme.

    ``hashed`` counts the files that had to be read (0: everything came from a cache).
    """

    md5: str
    size: int
    nfiles: int
    scheme: str
    hashed: int = 0


def _is_text(block: bytes) -> bool:
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, _TEXT_CHARS)) / len(block) <= 0.30


def file_md5(path: Path | str, scheme: str = "md5") -> str:
    """DVC's md5 of one file under ``scheme`` (``md5`` or ``md5-dos2unix``)."""
    digest = hashlib.md5(usedforsecurity=False)
    dos2unix = scheme == "md5-dos2unix"
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if dos2unix and _is_text(chunk[:_TEXT_BLOCK]):
                chunk = chunk.replace(b"\r\n", b"\n")
            digest.update(chunk)
    return digest.hexdigest()


def tree_md5(entries: Iterable[tuple[str, str]]) -> str:
    """DVC's ``.dir`` hash of ``(relpath, md5)`` entries (POSIX relative paths)."""
    listing = sorted(({"md5": md5, "relpath": rel} for rel, md5 in entries), key=_relpath)
    text = json.dumps(listing, sort_keys=True).encode("utf-8")
    return hashlib.md5(text, usedforsecurity=False).hexdigest() + ".dir"


def _relpath(entry: dict[str, str]) -> str:
    return entry["relpath"]


class HashCache:
    """The cache of hashes and parsed DVC files (see the module docstring).

    ``HashCache(None)`` keeps everything in memory (nothing is remembered across calls).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.db = self._connect(path)
        self._trees: dict[tuple[str, str], tuple[str, str, int, int]] | None = None
        self._parsed: dict[str, tuple[str, str]] | None = None
        self._pending_files: list[tuple[str, str, int, int, int, str]] = []
        self._pending_trees: list[tuple[str, str, str, str, int, int]] = []
        self._pending_parsed: list[tuple[str, str, str]] = []

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> HashCache:
        """The cache of a project (``.mlbook/cache/datahash.sqlite``)."""
        return cls(state_dir / "cache" / CACHE_FILE)

    @staticmethod
    def _connect(path: Path | None) -> sqlite3.Connection:
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, timeout=2.0, isolation_level=None)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                db.executescript(_SCHEMA)
                return db
            except (sqlite3.Error, OSError):
                pass  # unreadable or read-only: work in memory
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        """Write what was learnt, then close."""
        self.flush()
        self.db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write the pending entries in one transaction (a failure only loses the cache)."""
        if not (self._pending_files or self._pending_trees or self._pending_parsed):
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", self._pending_files
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO trees VALUES (?, ?, ?, ?, ?, ?)", self._pending_trees
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO parsed VALUES (?, ?, ?)", self._pending_parsed
            )
            self.db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
        self._pending_files.clear()
        self._pending_trees.clear()
        self._pending_parsed.clear()

    def _select(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error:
            return []

    # -- parsed DVC files, keyed by the file's stat -------------------------------------

    def parsed(self, path: str, signature: str) -> Any | None:
        """What was parsed from ``path`` when its stat was ``signature``, else ``None``."""
        if self._parsed is None:
            rows = self._select("SELECT path, signature, data FROM parsed")
            self._parsed = {row[0]: (row[1], row[2]) for row in rows}
        found = self._parsed.get(path)
        if found is None or found[0] != signature:
            return None
        return json.loads(found[1])

    def remember_parsed(self, path: str, signature: str, data: Any) -> None:
        """Remember what was parsed from ``path``."""
        text = json.dumps(data)
        if self._parsed is not None:
            self._parsed[path] = (signature, text)
        self._pending_parsed.append((path, signature, text))

    # -- trees and files ------------------------------------------------------------------

    def tree(self, path: str, scheme: str, listing: str) -> ContentHash | None:
        """The hash of directory ``path`` when its listing digest is still ``listing``."""
        if self._trees is None:
            rows = self._select("SELECT path, scheme, listing, md5, size, nfiles FROM trees")
            self._trees = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}
        found = self._trees.get((path, scheme))
        if found is None or found[0] != listing:
            return None
        return ContentHash(found[1], found[2], found[3], scheme)

    def remember_tree(self, path: str, listing: str, result: ContentHash) -> None:
        """Remember a directory's hash under its listing digest."""
        row = (path, result.scheme, listing, result.md5, result.size, result.nfiles)
        if self._trees is not None:
            self._trees[(path, result.scheme)] = row[2:]
        self._pending_trees.append(row)

    def files(self, stats: dict[str, os.stat_result], scheme: str) -> dict[str, str]:
        """md5 of each path whose inode, mtime and size are what was remembered."""
        found: dict[str, str] = {}
        paths = list(stats)
        for start in range(0, len(paths), 900):
            chunk = paths[start : start + 900]
            rows = self._select(
                "SELECT path, ino, mtime_ns, size, md5 FROM files WHERE scheme = ? AND path IN "
                f"({', '.join('?' * len(chunk))})",
                (scheme, *chunk),
            )
            for path, ino, mtime_ns, size, md5 in rows:
                stat = stats[path]
                if (stat.st_ino, stat.st_mtime_ns, stat.st_size) == (ino, mtime_ns, size):
                    found[path] = md5
        return found

    def remember_file(self, path: str, stat: os.stat_result, scheme: str, md5: str) -> None:
        """Remember a file's md5 under its inode, mtime and size."""
        self._pending_files.append((path, scheme, stat.st_ino, stat.st_mtime_ns, stat.st_size, md5))


def _racy(stat: os.stat_result, now: float) -> bool:
    return stat.st_mtime_ns >= (now - RACY_SECONDS) * 1e9


def content_hash(
    path: Path,
    scheme: str = "md5",
    cache: HashCache | None = None,
    state: DvcState | None = None,
) -> ContentHash | None:
    """DVC's hash of the file or directory at ``path`` now; ``None`` when it does not exist.

    Args:
        path: an absolute path.
        scheme: ``md5`` or ``md5-dos2unix``.
        cache: what mlbook hashed before (default: nothing).
        state: DVC's own hash state, asked for files the cache does not know.
    """
    cache = cache if cache is not None else HashCache(None)
    now = time.time()
    try:
        top = os.stat(path)
    except OSError:
        return None
    key = str(path)
    if not os.path.isdir(path):
        listing = f"{top.st_ino}:{top.st_mtime_ns}:{top.st_size}"
        known = cache.tree(key, scheme, listing)
        if known is not None:
            return known
        md5s = _file_hashes({key: top}, scheme, cache, state, now)
        result = ContentHash(md5s[key][0], top.st_size, 1, scheme, md5s[key][1])
        if not _racy(top, now):
            cache.remember_tree(key, listing, result)
        return result
    files = sorted(walk_files(path))
    text = "".join(f"{r}\0{s.st_ino}\0{s.st_mtime_ns}\0{s.st_size}\n" for r, s in files)
    listing = hashlib.md5(
        text.encode("utf-8", "surrogateescape"), usedforsecurity=False
    ).hexdigest()
    known = cache.tree(key, scheme, listing)
    if known is not None:
        return known
    absolute = {os.path.join(key, rel): stat for rel, stat in files}
    names = {os.path.join(key, rel): rel for rel, _ in files}
    md5s = _file_hashes(absolute, scheme, cache, state, now)
    result = ContentHash(
        tree_md5((names[full], md5s[full][0]) for full in absolute),
        sum(stat.st_size for _, stat in files),
        len(files),
        scheme,
        sum(hashed for _, hashed in md5s.values()),
    )
    if not any(_racy(stat, now) for _, stat in files):
        cache.remember_tree(key, listing, result)
    return result


def _file_hashes(
    stats: dict[str, os.stat_result],
    scheme: str,
    cache: HashCache,
    state: DvcState | None,
    now: float,
) -> dict[str, tuple[str, int]]:
    """md5 per absolute path, with 1 when it was read (0 when a cache knew it)."""
    known = cache.files(stats, scheme)
    missing = {path: stat for path, stat in stats.items() if path not in known}
    if missing and state is not None:
        from_state = state.lookup(missing.items(), scheme)
        for path, md5 in from_state.items():
            cache.remember_file(path, missing[path], scheme, md5)
        known.update(from_state)
    result = {path: (md5, 0) for path, md5 in known.items()}
    for path, stat in stats.items():
        if path in result:
            continue
        md5 = file_md5(path, scheme)
        result[path] = (md5, 1)
        if not _racy(stat, now):
            cache.remember_file(path, stat, scheme, md5)
    return result
