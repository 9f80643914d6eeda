"""A dataset on disk: its description, its records, and the ways to read them.

``open_dataset(path)`` is what experiments call; ``Dataset.records(split=..., classes=...)``
filters by split and class subset; ``Dataset.samples(...)`` and ``Dataset.torch(...)``
are the loaders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mlbook.datasets.metadata import (
    DATASET_FILE,
    RECORDS_FILE,
    ClassInfo,
    DatasetInfo,
    Record,
    load_info,
    records_path,
)
from mlbook.datasets.problems import ErrorPolicy, path_problem
from mlbook.datasets.subsets import ClassEncoding
from mlbook.datasets.validate import check_info, read_records
from mlbook.errors import DatasetError

if TYPE_CHECKING:
    from mlbook.datasets.features import FeatureTables
    from mlbook.datasets.formats._common import ImageMode
    from mlbook.datasets.index import Query, ViewUse
    from mlbook.datasets.loaders import Sample
    from mlbook.datasets.torch import Inputs, Target, TorchDataset
    from mlbook.progress import Reporter

__all__ = ["ClassSubset", "Dataset", "load_dataset", "open_dataset"]

#: What ``classes=`` accepts: an encoding, a name -> id mapping, or a list of names.
ClassSubset = ClassEncoding | Iterable[str] | dict[str, int]


def _classes_from_records(records: Iterable[Record]) -> list[ClassInfo]:
    names: set[str] = set()
    for record in records:
        names.update(record.labels)
        names.update(record.counts)
        names.update(box.name for box in record.boxes)
    return [ClassInfo(id=index, name=name) for index, name in enumerate(sorted(names))]


class Dataset:
    """Records plus their description; ``root`` is where relative files resolve.

    Args:
        info: the description and class encoding (``dataset.json``).
        records: one per image.
        root: the dataset directory (``None`` for a dataset not on disk yet).
    """

    def __init__(self, info: DatasetInfo, records: list[Record], root: Path | None = None) -> None:
        self.info = info
        self._records = records
        self.root = root
        #: Files that live inside annotation files (LabelMe ``imageData``): relative
        #: path -> bytes; writers write them where a record names them.
        self.embedded: dict[str, bytes] = {}
        self._tables: FeatureTables | None = None
        #: set on the dataset of a saved view (:meth:`view`): the view and how it stands
        self.view_use: ViewUse | None = None

    @classmethod
    def from_records(
        cls, records: list[Record], name: str = "dataset", root: Path | None = None, **info: Any
    ) -> Dataset:
        """A dataset whose classes are the names found in the records (sorted, ids from 0)."""
        described = DatasetInfo(name=name, classes=_classes_from_records(records), **info)
        return cls(described, records, root)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __repr__(self) -> str:
        return f"Dataset({self.info.name!r}, {len(self)} records, {len(self.info.classes)} classes)"

    @property
    def name(self) -> str:
        """The dataset's name."""
        return self.info.name

    @property
    def classes(self) -> list[str]:
        """Class names in id order."""
        return self.info.class_names

    @property
    def encoding(self) -> ClassEncoding:
        """The dataset's fixed class encoding (ids from ``dataset.json``)."""
        return ClassEncoding({c.name: c.id for c in self.info.classes})

    @property
    def splits(self) -> list[str]:
        """Split names used by the records, sorted."""
        return sorted({r.split for r in self._records if r.split is not None})

    def subset(self, classes: ClassSubset, start: int = 0) -> ClassEncoding:
        """A contiguous encoding of some classes (see :meth:`ClassEncoding.subset`)."""
        if isinstance(classes, ClassEncoding):
            return classes
        if isinstance(classes, dict):
            return ClassEncoding(classes)
        names = [classes] if isinstance(classes, str) else list(classes)
        return self.encoding.subset(names, start=start)

    def records(
        self,
        split: str | Iterable[str] | None = None,
        classes: ClassSubset | None = None,
        keep_empty: bool = False,
    ) -> list[Record]:
        """The records of ``split`` (one name or several; ``None``: all).

        With ``classes``, labels, counts and boxes of other classes are removed, and
        records left with no annotation at all are dropped unless ``keep_empty``.

        Raises:
            DatasetError: an unknown split or class.
        """
        chosen = self._select_split(split)
        if classes is None:
            return chosen
        encoding = self.subset(classes)
        kept: list[Record] = []
        for record in chosen:
            labels = [name for name in record.labels if name in encoding]
            counts = {k: v for k, v in record.counts.items() if k in encoding}
            boxes = [box for box in record.boxes if box.name in encoding]
            if not (labels or counts or boxes) and not keep_empty:
                continue
            kept.append(msgspec.structs.replace(record, labels=labels, counts=counts, boxes=boxes))
        return kept

    def _select_split(self, split: str | Iterable[str] | None) -> list[Record]:
        if split is None:
            return list(self._records)
        wanted = {split} if isinstance(split, str) else set(split)
        known = set(self.splits)
        missing = wanted - known
        if missing:
            have = ", ".join(sorted(known)) or "none (assign them with `mlbook data split`)"
            raise DatasetError(
                f"dataset {self.name!r} has no split {', '.join(map(repr, sorted(missing)))}; "
                f"splits: {have}"
            )
        return [r for r in self._records if r.split in wanted]

    def path_of(self, relative: str) -> Path:
        """Resolve a record's ``file`` or ``mask`` against the dataset directory.

        Raises:
            DatasetError: the path is empty, absolute or leaves the directory.
        """
        problem = path_problem(relative)
        if problem is not None:
            raise DatasetError(f"dataset {self.name!r}: {problem}")
        base = self.root if self.root is not None else Path.cwd()
        return base / relative

    def features(self, record: Record) -> list[float]:
        """The numbers of ``record``: its ``features`` list, or the row of the table it
        names (each table is read once; ``.npy`` is memory-mapped).

        Raises:
            DatasetError: the record has no features, the table cannot be read (pyarrow
            missing for ``.parquet``), or the row is past its end.
        """
        if self._tables is None or self._tables.root != self.root:
            from mlbook.datasets.features import FeatureTables

            self._tables = FeatureTables(self.root)
        return self._tables.features(record)

    def samples(
        self,
        split: str | Iterable[str] | None = None,
        classes: ClassSubset | None = None,
        images: bool = False,
    ) -> Iterator[Sample]:
        """Iterate :class:`~mlbook.datasets.loaders.Sample`: labels as ids, the features of
        records that have them, and decoded images with ``images``."""
        from mlbook.datasets.loaders import iter_samples

        return iter_samples(self, split=split, classes=classes, images=images)

    def torch(
        self,
        split: str | Iterable[str] | None = None,
        classes: ClassSubset | None = None,
        *,
        target: Target = "label",
        start: int | None = None,
        channels: int | None = None,
        transform: Any = None,
        cache: bool = False,
        inputs: Inputs | None = None,
    ) -> TorchDataset:
        """A ``torch.utils.data.Dataset`` of ``(image, class id)``, ``(features, class
        id)`` for records of numbers, or, with ``target="detection"``, ``(image, target
        dict)`` (extra ``torch``).

        See :class:`~mlbook.datasets.torch.TorchDataset` for the arguments and how
        class ids are numbered.
        """
        from mlbook.datasets.torch import TorchDataset

        return TorchDataset(
            self,
            split=split,
            classes=classes,
            target=target,
            start=start,
            channels=channels,
            transform=transform,
            cache=cache,
            inputs=inputs,
        )

    def query(self, text: str | None = None, boxes: str | None = None) -> Query:
        """A query over this dataset's index (built or rebuilt when needed): text in the
        query language, or none and the builder methods (see
        :class:`~mlbook.datasets.index.Query`).

        Raises:
            DatasetError: the dataset is not on disk; QueryError: a bad query.
        """
        from mlbook.datasets.index import Query

        if self.root is None:
            raise DatasetError(f"dataset {self.name!r} has no directory; save it to query it")
        return Query(self.root, text, boxes, source=self)

    def view(self, name: str) -> Dataset:
        """The dataset of the saved view ``name`` (``views/<name>.json``): its query run on
        the records as they are; warns when ids are gone or added since it was saved.

        Raises:
            DatasetError: the dataset is not on disk; QueryError: no such view.
        """
        from mlbook.datasets.index import open_view

        if self.root is None:
            raise DatasetError(f"dataset {self.name!r} has no directory; it has no views")
        query, use = open_view(self.root, name, source=self)
        selected = query.dataset()
        selected.view_use = use
        return selected

    def save(self, root: Path | str | None = None, images: ImageMode = "link") -> Path:
        """Write ``dataset.json`` and ``records.jsonl`` (canonical form) into ``root``
        (default: where the dataset is), all or nothing.

        Saved into another directory, the records keep their relative paths and their
        image and mask files come along (hard links, or copies with ``images="copy"``
        or where the filesystem cannot link), so the dataset stays self-contained.

        Raises:
            DatasetError: no directory; BadRecordsError: a record :func:`open_dataset`
            would refuse (nothing is written).
        """
        from mlbook.datasets.convert import write_dataset

        target = Path(root) if root is not None else self.root
        if target is None:
            raise DatasetError("dataset has no directory; pass one to save()")
        return write_dataset(self, target, "mlbook", images=images)


def open_dataset(path: Path | str) -> Dataset:
    """Open the dataset directory ``path`` (``dataset.json`` + ``records.jsonl``).

    Strict: every problem :func:`~mlbook.datasets.validate_dataset` would report, except
    missing image files, is collected and refused at once. Without ``dataset.json`` the
    classes are the names found in the records.

    Raises:
        DatasetError: not a dataset directory, an unreadable file; BadRecordsError:
        every bad record (file, line, field, what).
    """
    return load_dataset(Path(path), ErrorPolicy())


def load_dataset(root: Path, policy: ErrorPolicy, reporter: Reporter | None = None) -> Dataset:
    """:func:`open_dataset` with an error policy: under ``"skip"`` the bad records are
    left out (the native reader for ``mlbook data convert --on-error skip``)."""
    if not root.is_dir():
        raise DatasetError(
            f"{root}: not a dataset directory; expected {DATASET_FILE} and {RECORDS_FILE} in it"
        )
    info = load_info(root)
    records_file = records_path(root)
    if not records_file.exists() and not records_file.is_symlink():
        if info is None:
            raise DatasetError(
                f"{root}: no {DATASET_FILE} or {RECORDS_FILE}; import one with "
                "`mlbook data convert SRC DST --from coco`"
            )
        raise DatasetError(
            f"{records_file}: no records file; write {RECORDS_FILE} "
            "(or convert with `mlbook data convert`)"
        )
    classes: set[str] | None = None
    if info is not None:
        for field, problem in check_info(info):
            policy.fail(root / DATASET_FILE, None, field, problem)
        classes = {c.name for c in info.classes} if info.classes else None
    records = read_records(records_file, policy, classes, reporter)
    policy.finish(root)
    if info is None:
        info = DatasetInfo(name=root.resolve().name, classes=_classes_from_records(records))
    return Dataset(info, records, root)
