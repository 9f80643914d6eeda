"""The plain loader: an iterator of samples, with their features, and decoded images when
Pillow is installed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlbook.errors import DatasetError

if TYPE_CHECKING:
    from mlbook.datasets.dataset import ClassSubset, Dataset
    from mlbook.datasets.metadata import Record
    from mlbook.datasets.subsets import ClassEncoding

__all__ = ["Sample", "image_mode", "iter_samples", "load_image"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One record with its labels encoded.

    Attributes:
        record: the (subset-filtered) record.
        labels: the record's labels as ids of ``encoding``.
        boxes: ``(x1, y1, x2, y2)`` per box.
        box_labels: the id of each box's class.
        image: the decoded RGB image (a PIL image) when asked for, else ``None``.
        features: the record's numbers (its ``features``, or its table row), else ``None``.
    """

    record: Record
    labels: list[int]
    boxes: list[tuple[float, float, float, float]]
    box_labels: list[int]
    image: Any = None
    features: list[float] | None = None

    @property
    def label(self) -> int:
        """The one label's id (classification).

        Raises:
            DatasetError: the record has no label or several.
        """
        if len(self.labels) != 1:
            raise DatasetError(
                f"record {self.record.id!r} has {len(self.labels)} labels; `label` needs one"
            )
        return self.labels[0]


def load_image(dataset: Dataset, record: Record, mode: str = "RGB") -> Any:
    """Decode the record's image as a PIL image in ``mode`` (``"RGB"``, ``"L"``...).

    Raises:
        DatasetError: Pillow is missing or the file cannot be read.
    """
    Image = _pillow()
    path = dataset.path_of(_file_of(record))
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image of record {record.id!r}: {exc}") from exc


def image_mode(dataset: Dataset, record: Record) -> str:
    """The Pillow mode of the record's image (``"L"``, ``"RGB"``...), read from its header.

    Raises:
        DatasetError: Pillow is missing or the file cannot be read.
    """
    Image = _pillow()
    path = dataset.path_of(_file_of(record))
    try:
        with Image.open(path) as image:
            return str(image.mode)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image of record {record.id!r}: {exc}") from exc


def _file_of(record: Record) -> str:
    if record.file is None:
        raise DatasetError(
            f"record {record.id!r} has no image file (only features); use its features"
        )
    return record.file


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(
            "decoding images needs Pillow; install it with `pip install mlbook[images]`"
        ) from None
    return Image


def iter_samples(
    dataset: Dataset,
    split: str | Iterable[str] | None = None,
    classes: ClassSubset | None = None,
    images: bool = False,
    encoding: ClassEncoding | None = None,
) -> Iterator[Sample]:
    """Yield the samples of ``split``, labels in the subset's encoding (or the dataset's)."""
    if encoding is None:
        encoding = dataset.subset(classes) if classes is not None else dataset.encoding
    for record in dataset.records(split=split, classes=classes):
        yield Sample(
            record=record,
            labels=[encoding.encode(name) for name in record.labels],
            boxes=[(b.x1, b.y1, b.x2, b.y2) for b in record.boxes],
            box_labels=[encoding.encode(b.name) for b in record.boxes],
            image=load_image(dataset, record) if images and record.file is not None else None,
            features=dataset.features(record) if record.features is not None else None,
        )
