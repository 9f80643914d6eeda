"""The content hash of a dataset DVC does not track.

DVC-tracked datasets are read and hashed by :mod:`mlbook.provenance.datasets`
(DVC's own md5 of the working copy); this module hashes the others:

- ``kind="metadata"`` (the default, fast): sha256 over ``dataset.json``, the
  records files (``*.jsonl``, ``records*.json``) and any ``*.dvc`` files at the
  top of the dataset directory, not over the images.
- ``kind="files"`` (``hash_images=True``): sha256 over every file in the directory.

The hash covers names and contents, so renaming a file changes it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlbook._fs import sha256_file
from mlbook.errors import DatasetError

__all__ = ["DataVersion", "dataset_version"]


@dataclass(frozen=True)
class DataVersion:
    """A dataset's content identity: ``kind`` and ``hash`` (``sha256:...``)."""

    kind: Literal["metadata", "files"]
    hash: str
    files: int = 0  # how many files the hash covers

    def __str__(self) -> str:
        return f"{self.kind}:{self.hash.partition(':')[2][:12]}"


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
            records files.
    """
    directory = Path(dataset_dir)
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
