"""The mlbook format itself: ``dataset.json`` + ``records.jsonl`` in a directory."""

from __future__ import annotations

from pathlib import Path

from mlbook.datasets.dataset import Dataset, load_dataset
from mlbook.datasets.formats._common import Output
from mlbook.datasets.metadata import (
    DATASET_FILE,
    RECORDS_ARRAY_FILE,
    RECORDS_FILE,
    Record,
    TableRef,
    encode_info,
    encode_records,
)
from mlbook.datasets.problems import ErrorPolicy
from mlbook.datasets.validate import check_info, check_record
from mlbook.progress import NullReporter, Reporter

__all__ = ["FILE_SUFFIX", "NAME", "detect", "read", "write"]

NAME = "mlbook"
FILE_SUFFIX = None


def detect(path: Path) -> bool:
    """True for a directory holding ``dataset.json`` or a records file."""
    return path.is_dir() and any(
        (path / name).is_file() for name in (DATASET_FILE, RECORDS_FILE, RECORDS_ARRAY_FILE)
    )


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Open the dataset directory ``path``; bad records go to ``policy``."""
    return load_dataset(path, policy or ErrorPolicy(), reporter)


def _table_of(record: Record) -> str | None:
    features = record.features
    return features.table if isinstance(features, TableRef) else None


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write ``records.jsonl`` and ``dataset.json``, bringing the image, mask and feature
    table files along when the dataset lives elsewhere (same relative paths).

    Raises:
        BadRecordsError: a record that :func:`~mlbook.datasets.open_dataset` would
        refuse; nothing is written.
    """
    reporter = reporter or NullReporter()
    records = list(dataset)
    target = out.target / RECORDS_FILE
    policy = ErrorPolicy()
    for field, problem in check_info(dataset.info):
        policy.fail(out.target / DATASET_FILE, None, field, problem)
    classes = {c.name for c in dataset.info.classes} if dataset.info.classes else None
    seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        found = check_record(record, classes)
        first = seen.setdefault(record.id, number)
        if first != number:
            found.insert(0, ("id", f"duplicate id ({record.id!r}, first at record {first})"))
        policy.reject(target, None, found, number)
    policy.finish(out.target)
    with reporter.task("Writing records", total=len(records)) as task:
        for record in records:
            for relative in (record.file, record.mask, _table_of(record)):
                if relative is not None:
                    out.place(dataset.root, relative)
            task.advance()
    out.write(RECORDS_FILE, encode_records(records))
    out.write(DATASET_FILE, encode_info(dataset.info, records))
