"""Datasets: the mlbook metadata format, validation, converters, statistics and loaders.

``open_dataset(path)`` reads a dataset directory; :func:`convert` reads or writes the
other formats (COCO, Pascal VOC, YOLO, LabelMe, CSV); :func:`validate_dataset` reports
every problem in one pass. Readers collect every bad record into an :class:`ErrorPolicy`
that fails (listing them all) or skips them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlbook._lazy import lazy_getattr
from mlbook.datasets.dataset import ClassSubset, Dataset, open_dataset
from mlbook.datasets.metadata import Box, ClassInfo, DatasetInfo, Record
from mlbook.datasets.subsets import ClassEncoding

if TYPE_CHECKING:
    from mlbook.datasets.convert import convert, read_dataset, write_dataset
    from mlbook.datasets.problems import ErrorPolicy, Problem
    from mlbook.datasets.split import assign_splits
    from mlbook.datasets.stats import DatasetStats, compute_stats
    from mlbook.datasets.validate import ValidationReport, validate_dataset

__all__ = [
    "Box",
    "ClassEncoding",
    "ClassInfo",
    "ClassSubset",
    "Dataset",
    "DatasetInfo",
    "DatasetStats",
    "ErrorPolicy",
    "Problem",
    "Record",
    "ValidationReport",
    "assign_splits",
    "compute_stats",
    "convert",
    "open_dataset",
    "read_dataset",
    "validate_dataset",
    "write_dataset",
]

_LAZY: dict[str, str] = {
    "convert": "mlbook.datasets.convert",
    "read_dataset": "mlbook.datasets.convert",
    "write_dataset": "mlbook.datasets.convert",
    "assign_splits": "mlbook.datasets.split",
    "DatasetStats": "mlbook.datasets.stats",
    "compute_stats": "mlbook.datasets.stats",
    "ErrorPolicy": "mlbook.datasets.problems",
    "Problem": "mlbook.datasets.problems",
    "ValidationReport": "mlbook.datasets.validate",
    "validate_dataset": "mlbook.datasets.validate",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
