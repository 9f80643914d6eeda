"""Small filesystem helpers: atomic writes, where temporary files go, hashing.

A file written through :func:`atomic_write_bytes` is either the old file or the
whole new one, never half of it: the bytes go to a temporary file, are flushed
to disk, and the temporary file is renamed over the target.

Inside an mlbook project the temporary file goes to ``.mlbook/tmp/`` (git-ignored
state, on the same filesystem), never beside the target: a run snapshot taken by
another process at that moment must not see it, or see it vanish half-way
(:func:`temp_dir_for`). Elsewhere, or when ``.mlbook/`` is on another filesystem,
it sits beside the target, named ``.<name>.<random>.mlbook.tmp`` (snapshots
exclude that suffix explicitly).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "sha256_file",
    "temp_dir_for",
]

#: the suffix of every temporary file mlbook writes (snapshots leave such files out)
TEMP_SUFFIX = ".mlbook.tmp"
# the project marker and state directory, as in mlbook.config / mlbook.project
# (not imported from there: this module stays free of the config's dependencies)
_PROJECT_MARKER = "mlbook.toml"
_STATE_TMP = (".mlbook", "tmp")


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def temp_dir_for(target: Path | str) -> Path:
    """Where to build a temporary file or directory that will be renamed to ``target``.

    ``<root>/.mlbook/tmp/`` when ``target`` lies in an mlbook project (the nearest
    directory above it holding ``mlbook.toml``) and that directory is on the same
    filesystem as ``target``'s parent, so ``os.replace`` stays atomic; else the
    parent of ``target``. The parent must exist.
    """
    parent = Path(os.path.abspath(target)).parent
    try:
        device = parent.stat().st_dev
    except OSError:
        return parent
    for directory in (parent, *parent.parents):
        if not (directory / _PROJECT_MARKER).is_file():
            continue
        state = directory.joinpath(*_STATE_TMP)
        try:
            state.mkdir(parents=True, exist_ok=True)
            if state.stat().st_dev == device:
                return state
        except OSError:
            pass
        return parent
    return parent


@contextlib.contextmanager
def atomic_writer(path: Path | str) -> Iterator[BinaryIO]:
    """Yield a binary file handle whose content replaces ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=temp_dir_for(target))
    except OSError:  # .mlbook/tmp/ not writable: beside the target, as outside a project
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, target.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
