"""The version of a dataset: a content hash, or the DVC hash when DVC tracks it.

- ``kind="dvc"``: the dataset directory is a DVC output, found in ``<dir>.dvc``
  next to it or in a ``dvc.lock`` of the project; the hash is DVC's md5
  (``md5:<hex>.dir``). DVC itself is not imported: the files are read as text.
- ``kind="metadata"`` (the default, fast): sha256 over ``dataset.json``, the
  records files (``*.jsonl``, ``records*.json``) and any ``*.dvc`` files at the
  top of the dataset directory, not over the images.
- ``kind="files"`` (``hash_images=True``): sha256 over every file in the directory.

The hash covers names and contents, so renaming a file changes it too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlbook._fs import sha256_file
from mlbook.errors import DatasetError

__all__ = ["DataVersion", "dataset_version", "dvc_hash"]

_MD5 = re.compile(r"^\s*-?\s*md5:\s*['\"]?(?P<md5>[0-9a-f]{32}(?:\.dir)?)['\"]?\s*$")
_PATH = re.compile(r"^\s*-?\s*path:\s*['\"]?(?P<path>[^'\"#]+?)['\"]?\s*$")


@dataclass(frozen=True)
class DataVersion:
    """A dataset's content identity: ``kind`` and ``hash`` (``md5:...`` or ``sha256:...``)."""

    kind: Literal["metadata", "files", "dvc"]
    hash: str
    files: int = 0  # how many files the hash covers (0 for DVC)

    def __str__(self) -> str:
        return f"{self.kind}:{self.hash.partition(':')[2][:12]}"


def _outs_md5(text: str, wanted: str | None) -> str | None:
    """The md5 of the out whose ``path`` is ``wanted`` (``None``: the first out)."""
    md5: str | None = None
    path: str | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("- "):  # a new list item: forget the previous one
            md5 = path = None
        found_md5, found_path = _MD5.match(line), _PATH.match(line)
        if found_md5:
            md5 = found_md5["md5"]
        if found_path:
            path = found_path["path"].strip().rstrip("/")
        if md5 and path and (wanted is None or path == wanted):
            return md5
    return None


def dvc_hash(dataset_dir: Path | str) -> str | None:
    """DVC's md5 of ``dataset_dir`` (``<dir>.dvc`` or the nearest ``dvc.lock``), or ``None``."""
    directory = Path(dataset_dir).resolve()
    sidecar = directory.with_name(directory.name + ".dvc")
    if sidecar.is_file():
        md5 = _outs_md5(sidecar.read_text(encoding="utf-8", errors="replace"), directory.name)
        if md5:
            return md5
    for parent in directory.parents:
        lock = parent / "dvc.lock"
        if lock.is_file():
            wanted = directory.relative_to(parent).as_posix()
            md5 = _outs_md5(lock.read_text(encoding="utf-8", errors="replace"), wanted)
            if md5:
                return md5
        if (parent / ".dvc").is_dir() or (parent / ".git").exists():
            break
    return None


def _metadata_files(directory: Path) -> list[Path]:
    chosen = []
    for path in directory.iterdir():
        name = path.name
        if not path.is_file():
            continue
        if (
            name == "dataset.json"
            or name.endswith((".jsonl", ".dvc"))
            or (name.startswith("records") and name.endswith(".json"))
        ):
            chosen.append(path)
    return chosen


def _all_files(directory: Path) -> list[Path]:
    return [
        path
        for path in directory.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    ]


def dataset_version(dataset_dir: Path | str, hash_images: bool = False) -> DataVersion:
    """The version of the dataset in ``dataset_dir`` (see the module docstring).

    Raises:
        DatasetError: the directory does not exist, or has neither ``dataset.json`` nor
            records files (and is not DVC-tracked).
    """
    directory = Path(dataset_dir)
    md5 = dvc_hash(directory)
    if md5 is not None:
        return DataVersion("dvc", f"md5:{md5}")
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such dataset directory; check the dataset name")
    files = _all_files(directory) if hash_images else _metadata_files(directory)
    if not files:
        raise DatasetError(
            f"{directory}: no dataset.json or records file to hash; "
            "write the metadata with `mlbook data` or set [data] hash_images = true"
        )
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(directory).as_posix()):
        name = path.relative_to(directory).as_posix()
        digest.update(f"{name}\0{sha256_file(path)}\n".encode())
    return DataVersion(
        "files" if hash_images else "metadata", f"sha256:{digest.hexdigest()}", len(files)
    )
