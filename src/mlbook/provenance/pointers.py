"""Pointer files: a large file kept in a snapshot by its path, sha256 and size.

Like git-lfs and DVC pointers, a snapshot (:mod:`mlbook.provenance.git`) stores
a file over ``[git] max_file_size`` as a small pointer at the file's own path;
the bytes stay where they are (a run's weights in ``Models/outputs/``), out of
git's objects. A pointer is one line of JSON::

    {"mlbook-pointer": 1, "path": "Models/outputs/E001/wide/<run>/weights/model.pt",
     "sha256": "9f86d0...", "size": 5242880}

``path`` is relative to the project root. :func:`restore_pointers` puts the
bytes back into a checked-out tree when the project still has them (same path,
same size and sha256) and names the pointers whose bytes are gone.

Hashing a large file costs about a second a gigabyte; :class:`HashCache` keeps
the sha256 of files that did not change (size, mtime and inode) in
``.mlbook/cache/pointers.json``, so a big untracked file is not read again by
every snapshot.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbook._fs import atomic_write_text, sha256_file

__all__ = [
    "MAX_POINTER_BYTES",
    "HashCache",
    "Pointer",
    "Restored",
    "find_pointers",
    "parse_pointer",
    "restore_pointers",
]

#: a pointer is never larger than this (longer paths are not pointed at)
MAX_POINTER_BYTES = 1024
_KEY = "mlbook-pointer"
_PREFIX = b'{"' + _KEY.encode() + b'":'
_CACHE_FILE = ("cache", "pointers.json")
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class Pointer:
    """A file recorded by reference: project-relative ``path``, ``sha256`` and ``size``."""

    path: str
    sha256: str
    size: int

    def to_bytes(self) -> bytes:
        """The pointer file's content (one line of JSON)."""
        data = {_KEY: 1, "path": self.path, "sha256": self.sha256, "size": self.size}
        return json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n"


def parse_pointer(data: bytes) -> Pointer | None:
    """The pointer ``data`` holds, or ``None`` when it is not a pointer file."""
    if len(data) > MAX_POINTER_BYTES or not data.startswith(_PREFIX):
        return None
    try:
        raw: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get(_KEY) != 1:
        return None
    path, digest, size = raw.get("path"), raw.get("sha256"), raw.get("size")
    if not (isinstance(path, str) and isinstance(digest, str) and isinstance(size, int)):
        return None
    if len(digest) != 64 or isinstance(size, bool) or size < 0:
        return None
    return Pointer(path, digest, size)


class HashCache:
    """sha256 of large files, reused while size, mtime and inode are unchanged.

    ``state_dir`` is the project's ``.mlbook/`` (``None``: no cache on disk).
    Several processes may share the file: each writes it whole and atomically.
    """

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir.joinpath(*_CACHE_FILE) if state_dir is not None else None
        self.entries: dict[str, list[Any]] = {}
        self.changed = False
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self.entries = loaded

    def pointer(self, root: Path, rel: str) -> Pointer | None:
        """The pointer of ``root / rel`` (``None`` when it vanished meanwhile)."""
        path = root / rel
        try:
            stat = path.stat()
            key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
            known = self.entries.get(rel)
            if isinstance(known, list) and len(known) == 4 and known[:3] == key:
                return Pointer(rel, str(known[3]), stat.st_size)
            digest = sha256_file(path)
        except OSError:
            return None
        self.entries[rel] = [*key, digest]
        self.changed = True
        return Pointer(rel, digest, stat.st_size)

    def save(self) -> None:
        """Write the cache back (a failure only costs hashing again next time)."""
        if self.path is None or not self.changed:
            return
        entries = dict(list(self.entries.items())[-_CACHE_LIMIT:])
        with contextlib.suppress(OSError):
            atomic_write_text(self.path, json.dumps(entries))
        self.changed = False


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_pointers` did: files put back, and pointers whose bytes are gone."""

    restored: tuple[str, ...]
    missing: tuple[Pointer, ...]


def find_pointers(tree: Path) -> list[tuple[str, Pointer]]:
    """Pointer files in a checked-out ``tree``: (path inside the tree, pointer)."""
    found: list[tuple[str, Pointer]] = []
    for directory, _dirs, files in os.walk(tree):
        for name in files:
            path = Path(directory) / name
            try:
                if path.is_symlink() or path.stat().st_size > MAX_POINTER_BYTES:
                    continue
                with open(path, "rb") as handle:
                    if handle.read(len(_PREFIX)) != _PREFIX:
                        continue
                pointer = parse_pointer(path.read_bytes())
            except OSError:
                continue
            if pointer is not None:
                found.append((path.relative_to(tree).as_posix(), pointer))
    return sorted(found, key=lambda item: item[0])


def restore_pointers(
    tree: Path, project_root: Path, pointers: Iterable[tuple[str, Pointer]] | None = None
) -> Restored:
    """Replace each pointer file in ``tree`` by its bytes from ``project_root``.

    The bytes are taken from the pointer's ``path`` in the project when that
    file still has the recorded size and sha256; otherwise the pointer stays and
    is listed in :attr:`Restored.missing`. A path that would leave the project
    counts as gone.
    """
    root = project_root.resolve()
    restored: list[str] = []
    missing: list[Pointer] = []
    for where, pointer in find_pointers(tree) if pointers is None else pointers:
        source = (root / pointer.path).resolve()
        usable = source.is_relative_to(root) and _matches(source, pointer)
        if not usable:
            missing.append(pointer)
            continue
        target = tree / where
        tmp = target.with_name(f".{target.name}.restoring")
        try:
            _copy(source, tmp)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            missing.append(pointer)
            continue
        restored.append(where)
    return Restored(tuple(restored), tuple(missing))


def _matches(path: Path, pointer: Pointer) -> bool:
    try:
        return (
            path.is_file()
            and path.stat().st_size == pointer.size
            and (sha256_file(path) == pointer.sha256)
        )
    except OSError:
        return False


def _copy(source: Path, target: Path) -> None:
    """A copy, never a hard link: editing the checkout must not change the run's outputs."""
    import shutil

    shutil.copyfile(source, target)
