"""The mlbook format itself: ``dataset.json`` + ``records.jsonl`` in a directory."""

from __future__ import annotations

from pathlib import Path

from mlbook.datasets.dataset import Dataset, open_dataset
from mlbook.datasets.metadata import DATASET_FILE, RECORDS_ARRAY_FILE, RECORDS_FILE
from mlbook.progress import Reporter

__all__ = ["NAME", "detect", "read", "write"]

NAME = "mlbook"


def detect(path: Path) -> bool:
    """True for a directory holding ``dataset.json`` or a records file."""
    return path.is_dir() and any(
        (path / name).is_file() for name in (DATASET_FILE, RECORDS_FILE, RECORDS_ARRAY_FILE)
    )


def read(path: Path, reporter: Reporter | None = None) -> Dataset:
    """Open the dataset directory ``path``."""
    return open_dataset(path)


def write(dataset: Dataset, path: Path, reporter: Reporter | None = None) -> Path:
    """Save into the directory ``path`` (file paths rebased onto it)."""
    return dataset.save(path)
